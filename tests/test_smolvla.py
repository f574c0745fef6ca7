"""The `smolvla` policy against lerobot 0.4.4's own SmolVLA and its processor pipeline,
built offline (a tiny SmolVLM backbone written to a local folder), its flow-matching
surrogate for Diffusion-DPO, checkpoints and strict loading of lerobot weights."""

import copy
import json
import os
import shutil

import pytest
import torch

import robalign.policies.smolvla  # noqa: F401  (registers `smolvla`)
from robalign.errors import RobalignError
from robalign.policies import CheckpointError, ObservationError, load_policy, make_policy
from robalign.policies.smolvla.modeling import IMAGE_KEY

S, A, IMG, K = 5, 3, 24, 4
TINY = dict(tiny_hidden_size=32, tiny_heads=2, tiny_kv_heads=1, tiny_vision_hidden_size=16, tiny_vision_heads=2,
            tiny_vision_image_size=16, tiny_patch_size=4, num_vlm_layers=2, chunk_size=K, n_action_steps=3,
            num_steps=4)
# stats.safetensors keeps min and max, from which the normaliser's centre comes back within an ulp
CLOSE = dict(rtol=1e-5, atol=1e-6)
INSTRUCTIONS = ["put the red cube in the bowl", "move the blue cube", "grab the green cube and place it in the bowl"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: nothing may be downloaded
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stats():
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, dim in (("state", S), ("action", A)):
        lo = -torch.rand(dim, generator=g) - 0.5
        out[key] = {"min": lo, "max": lo + 1 + torch.rand(dim, generator=g)}
    return out


def tiny(seed=0, **over):
    torch.manual_seed(seed)
    return make_policy("smolvla", stats(), {**TINY, **over}, state_dim=S, action_dim=A, image_size=IMG).eval()


def observations(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"instruction": INSTRUCTIONS[:b], "state": torch.rand(b, 1, S, generator=g) - 0.5,
            "image": torch.randint(0, 256, (b, 1, IMG, IMG, 3), generator=g, dtype=torch.uint8)}


def lerobot_batch(policy, obs, actions=None):
    """`obs` as a lerobot dataset would give it, run through lerobot's own SmolVLA
    preprocessor (newline, tokenizer loaded by name from the backbone folder, normalisation
    with our min-max statistics in lerobot's MIN_MAX mode)."""
    from lerobot.configs.types import NormalizationMode
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    config = copy.deepcopy(policy.smolvla.config)
    config.normalization_mapping = {"VISUAL": NormalizationMode.IDENTITY, "STATE": NormalizationMode.MIN_MAX,
                                    "ACTION": NormalizationMode.MIN_MAX}
    flat = policy.normalizer.stats()
    ds_stats = {name: {"min": flat[f"{key}.min"], "max": flat[f"{key}.max"]}
                for name, key in (("observation.state", "state"), ("action", "action"))}
    pre, post = make_smolvla_pre_post_processors(config, ds_stats)
    batch = {"observation.state": obs["state"][:, -1], "task": list(obs["instruction"]),
             IMAGE_KEY: obs["image"][:, -1].permute(0, 3, 1, 2).float() / 255}
    if actions is not None:
        batch["action"] = actions
    return pre(batch), post


def test_denoise_loss_is_lerobots_loss_per_sample():
    policy = tiny()
    obs = observations()
    g = torch.Generator().manual_seed(2)
    lo, hi = stats()["action"]["min"], stats()["action"]["max"]
    actions = lo + (hi - lo) * torch.rand(3, K, A, generator=g)
    noise, t = torch.randn(3, K, A, generator=g), torch.tensor([0.2, 0.5, 0.9])
    ours = policy.denoise_loss(obs, actions, noise, t)
    assert ours.shape == (3,) and len(set(ours.tolist())) == 3  # one loss per sample, not one shared value
    # replay through lerobot's preprocessor and its own forward with the same noise and times
    batch, _ = lerobot_batch(policy, obs, actions)
    theirs, _ = policy.smolvla.forward(batch, noise=noise, time=t, reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # deterministic for given noise and times; other noise or times give other losses
    torch.testing.assert_close(policy.denoise_loss(obs, actions, noise, t), ours, rtol=0, atol=0)
    assert not torch.allclose(policy.denoise_loss(obs, actions, noise, t.flip(0)), ours)
    # sample i's loss depends on sample i alone (batch-mates and their instruction lengths aside)
    other = {**obs, "instruction": [INSTRUCTIONS[0], "go", "go"], "state": obs["state"].clone()}
    other["state"][1:] += 0.3
    alone = policy.denoise_loss(other, actions, noise, t)
    torch.testing.assert_close(alone[0], ours[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(alone[1:], ours[1:])
    # differentiable: gradients reach the expert; the backbone stays frozen (train_expert_only)
    policy.denoise_loss(obs, actions, noise, t).sum().backward()
    assert policy.smolvla.model.action_out_proj.weight.grad.abs().sum() > 0
    assert policy.smolvla.model.state_proj.weight.grad.abs().sum() > 0
    embed = policy.smolvla.model.vlm_with_expert.vlm.model.text_model.embed_tokens.weight
    assert not embed.requires_grad and embed.grad is None


def test_padded_widths_and_padded_steps():
    """smolvla_base pads state and action to 32: the loss is over the A real dimensions, and
    steps past the episode's end are left out (lerobot's forward masks neither)."""
    policy = tiny(max_state_dim=8, max_action_dim=6)
    obs = observations()
    g = torch.Generator().manual_seed(4)
    actions, t = torch.rand(3, K, A, generator=g) - 0.5, torch.tensor([0.1, 0.6, 0.95])
    noise = torch.randn(3, K, 6, generator=g)  # the model's full width
    ours = policy.denoise_loss(obs, actions, noise, t)
    batch, _ = lerobot_batch(policy, obs, actions)
    state, clean = policy.smolvla.prepare_state(batch), policy.smolvla.prepare_action(batch)
    assert state.shape == (3, 8) and clean.shape == (3, K, 6)
    images, img_masks = policy.smolvla.prepare_images(batch)
    with torch.no_grad():
        err = policy.smolvla.model.forward(images, img_masks, batch["observation.language.tokens"],
                                           batch["observation.language.attention_mask"], state, clean, noise, t)
    torch.testing.assert_close(ours, err[:, :, :A].mean((1, 2)), rtol=1e-5, atol=1e-6)
    theirs, _ = policy.smolvla.forward(batch, noise=noise, time=t, reduction="none")
    assert not torch.allclose(ours, theirs)  # lerobot's mean includes the padded dimensions
    pad = torch.zeros(3, K, dtype=torch.bool)
    pad[:, 2:] = True
    torch.testing.assert_close(policy.denoise_loss(obs, actions, noise, t, pad), err[:, :2, :A].mean((1, 2)),
                               rtol=1e-5, atol=1e-6)
    # A-wide noise means zeros in the padded dimensions
    narrow = policy.denoise_loss(obs, actions, noise[..., :A], t)
    zero_padded = torch.cat([noise[..., :A], torch.zeros(3, K, 3)], -1)
    torch.testing.assert_close(narrow, policy.denoise_loss(obs, actions, zero_padded, t))
    assert not torch.allclose(narrow, ours)
    with pytest.raises(RobalignError, match="noise must be"):
        policy.denoise_loss(obs, actions, torch.randn(3, K, 5), t)
    with pytest.raises(RobalignError, match="timesteps must be"):
        policy.denoise_loss(obs, actions, noise, torch.tensor([0.1, 0.6, 1.5]))
    with pytest.raises(RobalignError, match="actions must be"):
        policy.denoise_loss(obs, actions[:, :2], noise, t)


def test_predict_action_chunk_is_lerobots_sampler_and_seeded():
    policy = tiny()
    obs = observations()
    chunk = policy.predict_action_chunk(obs, torch.Generator().manual_seed(5))
    assert chunk.shape == (3, 3, A)
    again = policy.predict_action_chunk(obs, torch.Generator().manual_seed(5))
    torch.testing.assert_close(again, chunk, rtol=0, atol=0)
    assert not torch.allclose(policy.predict_action_chunk(obs, torch.Generator().manual_seed(6)), chunk)
    # lerobot's preprocessor -> its predict_action_chunk with the same noise -> its postprocessor
    noise = torch.randn(3, K, A, generator=torch.Generator().manual_seed(5))
    batch, post = lerobot_batch(policy, obs)
    theirs = post(policy.smolvla.predict_action_chunk(batch, noise=noise))
    torch.testing.assert_close(chunk, theirs[:, :3], rtol=1e-4, atol=1e-5)
    # acting one step at a time through the contract's ChunkActor: its episode seed is the chunk's
    single = policy.predict_action_chunk({k: v[:1] for k, v in obs.items()}, torch.Generator().manual_seed(5))
    policy.reset(seed=5)
    step = {"instruction": INSTRUCTIONS[0], "state": obs["state"][0, 0].numpy(), "image": obs["image"][0, 0].numpy()}
    first = policy.select_action(step)
    assert first.shape == (A,)
    torch.testing.assert_close(torch.as_tensor(first), single[0, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.as_tensor(policy.select_action(step)), single[0, 1], rtol=1e-5, atol=1e-6)


def test_training_steps_lower_the_loss_and_leave_the_frozen_backbone():
    policy = tiny().train()
    obs = observations()
    actions = torch.rand(3, K, A) - 0.5
    batch = {**obs, "action": actions, "action_is_pad": torch.zeros(3, K, dtype=torch.bool)}
    g = torch.Generator().manual_seed(9)
    probe = (torch.randn(3, 8, K, A, generator=g), torch.rand(3, 8, generator=g))  # fixed noise and times

    def held_out_loss():
        with torch.no_grad():
            return sum(float(policy.denoise_loss(obs, actions, probe[0][:, i], probe[1][:, i]).mean())
                       for i in range(8))

    patches = policy.smolvla.model.vlm_with_expert.vlm.model.vision_model.embeddings.patch_embedding.weight
    vision = patches.detach().clone()
    before = held_out_loss()
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        loss = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.6 * before, (before, after)
    assert torch.equal(vision, patches)


def test_checkpoint_round_trip(tmp_path):
    policy = tiny()
    obs = observations()
    policy.save_pretrained(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    weights = {k: v for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in weights.items())
    assert loaded.name == "smolvla" and loaded.config == policy.config
    for seed in (0, 1):
        torch.testing.assert_close(loaded.predict_action_chunk(obs, torch.Generator().manual_seed(seed)),
                                   policy.predict_action_chunk(obs, torch.Generator().manual_seed(seed)), **CLOSE)
    actions, noise, t = torch.rand(3, K, A), torch.randn(3, K, A), torch.tensor([0.3, 0.5, 0.7])
    with torch.no_grad():
        mine = policy.denoise_loss(obs, actions, noise, t)
        torch.testing.assert_close(loaded.denoise_loss(obs, actions, noise, t), mine, **CLOSE)
        # a policy with other random weights differs: the equality above came from the checkpoint
        assert not torch.allclose(tiny(seed=1).denoise_loss(obs, actions, noise, t), mine)


def test_weights_path_loads_lerobot_weights_strictly(tmp_path):
    from safetensors.torch import load_file, save_file, save_model

    source = tiny(seed=0)
    obs = observations()
    save_model(source.smolvla, str(tmp_path / "smolvla.safetensors"))  # lerobot's own saver's format
    # a lerobot checkpoint dir: lerobot's save_pretrained (config.json + model.safetensors)
    source.smolvla.save_pretrained(tmp_path / "lerobot_ckpt")
    assert (tmp_path / "lerobot_ckpt" / "model.safetensors").is_file()
    # the backbone named by a local folder (vlm_dir) builds the same modules as the built-in one
    vlm = tmp_path / "vlm"
    shutil.copytree(source.vlm_path, vlm)
    expected = source.predict_action_chunk(obs, torch.Generator().manual_seed(3))
    for path, over in ((tmp_path / "smolvla.safetensors", {}), (tmp_path / "lerobot_ckpt", {"vlm_dir": str(vlm)})):
        other = tiny(seed=7, weights_path=str(path), **over)  # another seed: random weights would differ
        torch.testing.assert_close(other.predict_action_chunk(obs, torch.Generator().manual_seed(3)), expected,
                                   rtol=0, atol=0)
    assert not torch.allclose(tiny(seed=7).predict_action_chunk(obs, torch.Generator().manual_seed(3)), expected)
    # the saved checkpoint stands alone: it records where it started but does not need the file
    other.save_pretrained(tmp_path / "p")
    raw = json.loads((tmp_path / "p" / "config.json").read_text())["config"]
    assert raw["weights_path"] is None and raw["init_from"] == str(tmp_path / "lerobot_ckpt")
    shutil.rmtree(tmp_path / "lerobot_ckpt")
    torch.testing.assert_close(load_policy(tmp_path / "p").predict_action_chunk(obs, torch.Generator().manual_seed(3)),
                               expected, **CLOSE)
    # missing, unexpected and misshapen tensors are named
    weights = load_file(tmp_path / "smolvla.safetensors")
    gone = "model.action_out_proj.bias"
    save_file({k: v for k, v in weights.items() if k != gone}, tmp_path / "missing.safetensors")
    save_file({**weights, "model.extra_head.weight": torch.zeros(2)}, tmp_path / "extra.safetensors")
    save_file({**weights, gone: torch.zeros(A + 1)}, tmp_path / "shape.safetensors")
    for name, match in (("missing", f"1 missing.*{gone}"), ("extra", "1 unexpected.*model.extra_head.weight"),
                        ("shape", "action_out_proj.bias.*size mismatch|size mismatch.*action_out_proj.bias")):
        with pytest.raises(CheckpointError, match=match):
            tiny(weights_path=str(tmp_path / f"{name}.safetensors"))
    # weights of another shape of model (a wider expert) do not fit either
    with pytest.raises(CheckpointError, match="size mismatch"):
        tiny(weights_path=str(tmp_path / "smolvla.safetensors"), expert_width_multiplier=0.5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        tiny(weights_path=str(tmp_path / "empty"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable"):
        tiny(weights_path=str(tmp_path / "junk.safetensors"))


def test_backbone_with_tied_embeddings(tmp_path):
    """A backbone config that ties its output head to its input embedding: lerobot's saver
    writes one tensor of the pair, which loads strictly; our checkpoints hold both."""
    from safetensors import safe_open
    from safetensors.torch import save_model

    vlm = tmp_path / "tied"
    shutil.copytree(tiny().vlm_path, vlm)
    raw = json.loads((vlm / "config.json").read_text())
    raw["tie_word_embeddings"] = raw["text_config"]["tie_word_embeddings"] = True
    (vlm / "config.json").write_text(json.dumps(raw))
    torch.manual_seed(0)
    ours = tiny(vlm_dir=str(vlm)).smolvla.model.vlm_with_expert.vlm
    assert ours.lm_head.weight is not ours.model.text_model.embed_tokens.weight  # ours are untied copies...
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy as LeRobotSmolVLA

    tied = LeRobotSmolVLA(tiny(vlm_dir=str(vlm)).smolvla.config)  # ...lerobot's own model is tied
    vlm_module = tied.model.vlm_with_expert.vlm
    assert vlm_module.lm_head.weight is vlm_module.model.text_model.embed_tokens.weight
    save_model(tied, str(tmp_path / "tied.safetensors"))
    with safe_open(tmp_path / "tied.safetensors", "pt") as f:
        assert sum("lm_head" in k or "embed_tokens" in k for k in f.keys()) == 1  # one of the pair on disk
    policy = tiny(seed=3, vlm_dir=str(vlm), weights_path=str(tmp_path / "tied.safetensors"))
    obs = observations()
    mine = policy.smolvla.model.vlm_with_expert.vlm
    torch.testing.assert_close(mine.lm_head.weight, vlm_module.lm_head.weight, rtol=0, atol=0)
    assert mine.lm_head.weight.data_ptr() != mine.model.text_model.embed_tokens.weight.data_ptr()
    policy.save_pretrained(tmp_path / "p")
    torch.testing.assert_close(load_policy(tmp_path / "p").predict_action_chunk(obs, torch.Generator().manual_seed(0)),
                               policy.predict_action_chunk(obs, torch.Generator().manual_seed(0)), **CLOSE)


def test_observation_and_config_errors(tmp_path):
    policy = tiny()
    obs = observations()
    with pytest.raises(ObservationError, match="lacks 'image'"):
        policy.predict_action_chunk({k: v for k, v in obs.items() if k != "image"})
    with pytest.raises(ObservationError, match="lacks 'image'"):
        policy.denoise_loss({k: v for k, v in obs.items() if k != "image"}, torch.zeros(3, K, A),
                            torch.zeros(3, K, A), torch.full((3,), 0.5))
    with pytest.raises(ObservationError, match="'image' has shape"):
        policy.predict_action_chunk({**obs, "image": obs["image"][:, :, :20]})
    with pytest.raises(ObservationError, match="'instruction' must be a list"):
        policy.predict_action_chunk({**obs, "instruction": "put the red cube in the bowl"})
    with pytest.raises(RobalignError, match="n_obs_steps=2"):
        tiny(n_obs_steps=2)
    with pytest.raises(RobalignError, match="n_action_steps=5"):
        tiny(n_action_steps=5)
    with pytest.raises(RobalignError, match="max_action_dim=2"):
        tiny(max_action_dim=2)
    with pytest.raises(RobalignError, match="vlm_dir=.*nothing is downloaded"):
        tiny(vlm_dir="HuggingFaceTB/SmolVLM2-500M-Video-Instruct")
    with pytest.raises(RobalignError, match="weights_path=.*does not exist"):
        tiny(weights_path=str(tmp_path / "nope.safetensors"))
    with pytest.raises(RobalignError, match="unknown setting.*horizon"):
        tiny(horizon=8)
