"""The diffusion policy against lerobot's own model, the Policy contract, checkpoints, data windows."""

import pickle

import numpy as np
import pytest
import torch

from robalign.errors import RobalignError, UnknownNameError
from robalign.policies import CheckpointError, ObservationError, load_policy, make_policy

TINY = dict(down_dims=(16, 32), horizon=8, n_action_steps=4, num_train_timesteps=20, num_inference_steps=5,
            diffusion_step_embed_dim=16)
S, E, A = 16, 10, 7


def stats():
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, dim in (("state", S), ("environment_state", E), ("action", A)):
        lo = -torch.rand(dim, generator=g) - 0.5
        out[key] = {"min": lo, "max": lo + 1 + torch.rand(dim, generator=g)}
    return out


@pytest.fixture
def policy():
    torch.manual_seed(0)
    return make_policy("diffusion", stats(), TINY, state_dim=S, env_state_dim=E, action_dim=A).eval()


def observations(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"state": torch.randn(b, 2, S, generator=g), "environment_state": torch.randn(b, 2, E, generator=g)}


def test_sampling_matches_lerobots_ddim_sampler(policy):
    obs = observations()
    chunk = policy.predict_action_chunk(obs, torch.Generator().manual_seed(5))
    noise = torch.randn(3, 8, A, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        clean = policy.model.conditional_sample(3, global_cond=policy.conditioning(obs), noise=noise)
    expected = policy.normalizer.unnormalize("action", clean[:, 1:5])
    assert chunk.shape == (3, 4, A)
    torch.testing.assert_close(chunk, expected, rtol=0, atol=1e-6)


def test_traced_sampling_equals_eager_and_follows_weight_updates(policy):
    import copy

    eager = copy.deepcopy(policy)
    eager.config.trace_inference = False

    def both(b):
        obs = observations(b=b, seed=b)
        with torch.no_grad():
            return (policy.sample_chain(obs, torch.Generator().manual_seed(2)).chain,
                    eager.sample_chain(obs, torch.Generator().manual_seed(2)).chain)

    for b in (1, 3):  # traced at batch 1, run at batch 3 too
        torch.testing.assert_close(*both(b), rtol=0, atol=1e-5)
    assert policy._trace.module is not None and eager._trace.module is None
    # an optimiser step changes the parameters in place; the trace must see it
    with torch.no_grad():
        for p in policy.model.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    eager.load_state_dict(policy.state_dict())
    torch.testing.assert_close(*both(1), rtol=0, atol=1e-5)
    # a copy (the EMA, a frozen reference) traces its own parameters, not the original's
    twin = copy.deepcopy(policy)
    with torch.no_grad():
        for p in twin.model.unet.parameters():
            p.zero_()
    torch.testing.assert_close(*both(1), rtol=0, atol=1e-5)
    assert not any("trace" in k for k in policy.state_dict())


def test_denoise_loss_is_lerobots_loss_per_sample(policy):
    obs = observations(b=4)
    actions = torch.randn(4, 8, A)
    torch.manual_seed(11)
    eps = torch.randn(actions.shape)
    t = torch.randint(0, 20, (4,)).long()
    ours = policy.denoise_loss(obs, actions, eps, t)
    assert ours.shape == (4,)
    # lerobot draws its own noise and timesteps in this order; replay the same draws
    batch = {"observation.state": policy.normalizer.normalize("state", obs["state"]),
             "observation.environment_state": policy.normalizer.normalize("environment_state", obs["environment_state"]),
             "action": policy.normalizer.normalize("action", actions, clip=False),
             "action_is_pad": torch.zeros(4, 8, dtype=torch.bool)}
    torch.manual_seed(11)
    theirs = policy.model.compute_loss(batch)
    torch.testing.assert_close(ours.mean(), theirs, rtol=1e-5, atol=1e-6)
    # shared noise and timesteps: sample i's loss depends on sample i alone
    other = {k: v.clone() for k, v in obs.items()}
    other["state"][1:] += 3.0
    alone = policy.denoise_loss(other, actions, eps, t)
    torch.testing.assert_close(alone[0], ours[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(alone[1:], ours[1:])
    # steps past the episode's end (padding) are left out of the mean
    pad = torch.zeros(4, 8, dtype=torch.bool)
    pad[:, 6:] = True
    with torch.no_grad():
        noisy = policy.model.noise_scheduler.add_noise(batch["action"], eps, t)
        per_step = ((policy.model.unet(noisy, t, global_cond=policy.conditioning(obs)) - eps) ** 2).mean(-1)
    torch.testing.assert_close(policy.denoise_loss(obs, actions, eps, t, pad), per_step[:, :6].mean(-1))


def test_denoising_chain_log_probs(policy):
    obs = observations(b=2)
    chain = policy.sample_chain(obs, torch.Generator().manual_seed(3), eta=1.0, min_std=0.1)
    assert chain.chain.shape == (2, 6, 8, A) and chain.log_probs.shape == (2, 5) and chain.actions.shape == (2, 4, A)
    again = policy.chain_log_prob(obs, chain.chain, eta=1.0, min_std=0.1)
    torch.testing.assert_close(again, chain.log_probs, rtol=1e-5, atol=1e-4)
    # each step is Gaussian with the scheduler's std, floored at min_std
    with torch.no_grad():
        cond = policy.conditioning(obs)
        mean, std = policy._ddim_step(chain.chain[:, 2], 2, cond, 1.0, 0.1)
    manual = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(chain.chain[:, 3]).flatten(1).sum(1)
    torch.testing.assert_close(again[:, 2], manual, rtol=1e-5, atol=1e-3)
    assert std >= 0.1
    # deterministic DDIM (eta=0) steps still get a finite density through the floor
    assert torch.isfinite(policy.chain_log_prob(obs, chain.chain, eta=0.0, min_std=0.05)).all()
    # the log-prob is differentiable in the weights (DPPO's ratio needs that)
    policy.chain_log_prob(obs, chain.chain, steps=slice(-2, None)).sum().backward()
    assert policy.model.unet.final_conv[0].block[0].weight.grad.abs().sum() > 0


def test_observation_errors_name_the_key_and_shape(policy):
    obs = observations()
    with pytest.raises(ObservationError, match="lacks 'environment_state'.*environment_state \\(B, 2, 10\\)"):
        policy.predict_action_chunk({"state": obs["state"]})
    with pytest.raises(ObservationError, match="'state' has shape \\(3, 2, 15\\); expected \\(B, 2, 16\\)"):
        policy.predict_action_chunk({**obs, "state": torch.zeros(3, 2, 15)})
    with pytest.raises(ObservationError, match="expected \\(B, 2, 10\\) with B=3"):
        policy.predict_action_chunk({**obs, "environment_state": torch.zeros(4, 2, E)})
    with pytest.raises(ObservationError, match="lacks 'state'"):
        policy.select_action({"environment_state": np.zeros(E, np.float32)})
    with pytest.raises(UnknownNameError, match="unknown policy 'difusion'; valid choices: diffusion"):
        make_policy("difusion", stats())
    with pytest.raises(RobalignError, match="unknown setting\\(s\\) horizn"):
        make_policy("diffusion", stats(), {"horizn": 8}, state_dim=S, env_state_dim=E)
    with pytest.raises(RobalignError, match="horizon=10 \\(a multiple of 2 \\*\\* len\\(down_dims\\) = 4\\)"):
        make_policy("diffusion", stats(), {**TINY, "horizon": 10}, state_dim=S, env_state_dim=E)


def test_select_action_repeats_the_first_observation_and_replans_every_k_steps(policy):
    policy.reset(seed=4)
    step = {"state": np.ones(S, np.float32), "environment_state": np.zeros(E, np.float32)}
    first = [policy.select_action(step) for _ in range(4)]
    window = {"state": torch.ones(1, 2, S), "environment_state": torch.zeros(1, 2, E)}
    expected = policy.predict_action_chunk(window, torch.Generator().manual_seed(4))[0]
    np.testing.assert_allclose(np.stack(first), expected.detach().numpy(), atol=1e-6)
    assert policy.select_action(step).shape == (A,)  # the 5th action comes from a new chunk


def test_checkpoint_round_trip_and_refusals(policy, tmp_path, monkeypatch):
    path = policy.save_pretrained(tmp_path / "p")
    assert sorted(f.name for f in path.iterdir()) == ["config.json", "model.safetensors", "stats.safetensors"]

    def no_pickle(*a, **k):
        raise AssertionError("a checkpoint was read through pickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = load_policy(path)
    obs = observations()
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    # bit for bit, normaliser included: a reloaded policy (say, in a worker process) acts as this one
    assert torch.equal(loaded.predict_action_chunk(obs, g()), policy.predict_action_chunk(obs, g()))
    saved_again = loaded.save_pretrained(tmp_path / "again")
    assert (saved_again / "stats.safetensors").read_bytes() == (path / "stats.safetensors").read_bytes()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in policy.state_dict().items())
    monkeypatch.undo()

    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nothing")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="partial: model.safetensors, stats.safetensors missing"):
        load_policy(tmp_path / "partial")
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match the sha256"):
        load_policy(path)
    (path / "model.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="changed or truncated"):
        load_policy(path)


def test_weights_for_another_config_are_refused(policy, tmp_path):
    import json

    path = policy.save_pretrained(tmp_path / "p")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["down_dims"] = [16, 64]
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit a diffusion policy"):
        load_policy(path)
    meta["config"]["bogus"] = 1
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RobalignError, match="unknown setting\\(s\\) bogus"):
        load_policy(path)
