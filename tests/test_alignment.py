"""Alignment: the preference losses (tpo, diffusion-dpo), dppo, drift, scorers, pairing, and
`robalign align` end to end on a tiny diffusion policy (resume after SIGKILL, a failing
objective that stops the run and keeps its rounds, bad settings)."""

import copy
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from robalign.alignment import AlignConfig, AlignmentError, MethodConfig, make_aligner, make_scorer
from robalign.alignment.drift import kl_per_step
from robalign.alignment.rollouts import Chunk, Rollout, preference_pairs
from robalign.alignment.scorers import GrapeScorer, ObjectiveScorer, ScoringError
from robalign.cli import VERBS, compose
from robalign.errors import RobalignError, UnknownNameError
from robalign.policies import make_policy
from robalign.policies.data import DemoWindows
from robalign.types import Trajectory

S, E, A = 16, 10, 7
TINY_DIFFUSION = dict(down_dims=(16, 32), horizon=8, n_action_steps=4, num_train_timesteps=20, num_inference_steps=5,
                      diffusion_step_embed_dim=16)


def main(argv):
    return VERBS[argv[0]](compose(argv[0], argv[1:]))


def stats(a=A):
    return {k: {"min": -torch.ones(d), "max": torch.ones(d)} for k, d in (("state", S), ("environment_state", E),
                                                                       ("action", a))}


def diffusion(seed=0):
    torch.manual_seed(seed)
    return make_policy("diffusion", stats(), TINY_DIFFUSION, state_dim=S, env_state_dim=E, action_dim=A).eval()


def vla(seed=0):
    torch.manual_seed(seed)
    config = {"d_model": 32, "n_heads": 2, "n_layers": 2, "dropout": 0.0, "horizon": 2, "n_action_steps": 2,
              "n_bins": 16}
    return make_policy("vla", stats(a=2), config, state_dim=S, env_state_dim=E, action_dim=2).eval()


def sampled_rollout(policy, state, seed, chunks=3, stochastic=False, instruction="put the red cube in the bowl"):
    """A rollout of `chunks` chunks sampled by `policy` itself on random observation windows."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for j in range(chunks):
        obs = {"state": torch.randn(1, policy.n_obs_steps, S, generator=g),
               "environment_state": torch.randn(1, policy.n_obs_steps, E, generator=g)}
        if "instruction" in policy.text_inputs():
            obs["instruction"] = [instruction]
        with torch.no_grad():
            s = policy.sample_chunk(obs, g, stochastic=stochastic)
        out.append(Chunk({k: (v[0] if isinstance(v, list) else v[0]) for k, v in obs.items()}, s.sample[0],
                         j * policy.n_action_steps, None if s.chain is None else s.chain[0],
                         None if s.log_probs is None else s.log_probs[0]))
    T = chunks * policy.n_action_steps
    traj = Trajectory(state=np.zeros((T, S), np.float32), action=np.zeros((T, A), np.float32), instruction="x",
                      success=True, provenance={"seed": seed})
    return Rollout(traj, out, state)


def ratio_gap(aligner, policy, reference, w, lo, seed=0):
    """(log-ratio of the chosen) - (log-ratio of the rejected), summed over chunks, shared draws."""
    chunks = w.chunks + lo.chunks
    slots = list(range(len(w.chunks))) + list(range(len(lo.chunks)))
    with torch.no_grad():
        r = aligner.chunk_log_ratios(policy, reference, chunks, slots, torch.Generator().manual_seed(seed))
    return float(r[:len(w.chunks)].sum() - r[len(w.chunks):].sum())


# ---- pairing and scorers -------------------------------------------------------------------
def test_pairs_are_top_m_against_bottom_m_per_state():
    traj = Trajectory(state=np.zeros((2, 1), np.float32), action=np.zeros((2, 1), np.float32), instruction="",
                      success=True)
    rollouts = [Rollout(traj, [], state, score) for state, score in
                [(0, 1.0), (0, 5.0), (0, 3.0), (0, 2.0), (1, 4.0), (1, 4.0), (1, 0.5)]]
    pairs = [(w.state, w.score, lo.score) for w, lo in preference_pairs(rollouts, m=2)]
    assert sorted(pairs) == [(0, 3.0, 1.0), (0, 3.0, 2.0), (0, 5.0, 1.0), (0, 5.0, 2.0), (1, 4.0, 0.5)]
    # state 1 has 3 rollouts: m is capped at 1; ties and small gaps are skipped with a margin
    assert [(w.score, lo.score) for w, lo in preference_pairs(rollouts, m=1, margin=1.5)] == [(5.0, 1.0), (4.0, 0.5)]
    # pairs=successful: failures are neither chosen nor rejected (state 0's 5.0 and 1.0 failed)
    failed = dataclasses.replace(traj, success=False)
    rollouts[0].trajectory = rollouts[1].trajectory = failed
    assert sorted((w.score, lo.score) for w, lo in preference_pairs(rollouts, m=2, successful=True)) == [
        (3.0, 2.0), (4.0, 0.5)]


def raising_objective(traj):
    raise ValueError("sensor table missing")


def nan_objective(traj):
    return float("nan")


def test_scorers_name_what_failed_and_weigh_grape_terms():
    traj = Trajectory(state=np.zeros((4, 1), np.float32), action=np.zeros((4, 1), np.float32), instruction="",
                      success=True, info={"vase_clearance": np.array([0.3, 0.1, 0.2, 0.4])},
                      provenance={"env": "reach-around", "seed": 17})
    with pytest.raises(ScoringError, match=r"raised ValueError: sensor table missing on the episode with seed 17"):
        ObjectiveScorer(f"{__name__}:raising_objective").score([traj])
    with pytest.raises(ScoringError, match=r"returned nan .*seed 17.*finite"):
        ObjectiveScorer(f"{__name__}:nan_objective").score([traj])
    clearance = ObjectiveScorer("clearance")
    assert clearance.score([traj])[0] == pytest.approx(0.1)
    steps = clearance.step_rewards(traj)
    assert steps.sum() == pytest.approx(0.1) and np.argmax(steps) == 3  # ranks steps as the per-step form does
    grape = GrapeScorer(success=2.0, objectives={"clearance": 10.0}, likelihood=0.5)
    assert grape.score([traj], log_likelihoods=[-8.0])[0] == pytest.approx(2.0 + 1.0 + 0.5 * -8.0 / 4)
    with pytest.raises(RobalignError, match="likelihood"):
        grape.score([traj])
    with pytest.raises(RobalignError, match="reward=PATH"):
        make_scorer("reward")
    with pytest.raises(RobalignError, match="unknown scorer 'rlhf'.*reward, objective, grape"):
        make_scorer("rlhf")
    with pytest.raises(RobalignError, match="unknown grape setting"):
        make_scorer("grape", grape={"sucess": 1.0})


def tiny_rapl(path) -> Trajectory:
    """An untrained RAPL reward saved at `path` whose one demo is the random 16-frame video returned."""
    from robalign.rewards.models import RewardConfig, fit_to_backbone, make_reward

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = make_reward(fit_to_backbone(RewardConfig(method="rapl", frame_stride=2)))
    demo = Trajectory(state=np.zeros((16, 1), np.float32), action=np.zeros((16, 1), np.float32), instruction="",
                      success=True, frames=rng.integers(0, 255, (16, 96, 96, 3), dtype=np.uint8),
                      provenance={"seed": 3})
    model.demos = [model.frame_features(demo)]
    model.save_pretrained(path)
    return demo


def test_reward_scorer_matches_unfinished_lookaheads_against_demo_prefixes(tmp_path):
    """best-of-n's lookaheads: an OT reward scores one that has not ended against the demos'
    prefixes (prefix=True), one that has ended, or any with prefix=False, as a whole episode."""
    from robalign.alignment.scorers import RewardScorer

    demo = tiny_rapl(tmp_path / "rapl")
    scorer = RewardScorer(str(tmp_path / "rapl"))
    start = dataclasses.replace(demo, state=demo.state[:6], action=demo.action[:6], frames=demo.frames[:6])
    prefix, whole = scorer.model.reward(start, prefix=True).sum(), scorer.model.reward(start).sum()
    assert prefix > whole  # the demo's own start, against the demo's start / against all of it
    assert scorer.score_lookaheads([start, start], ended=[False, True]) == pytest.approx([prefix, whole])
    assert scorer.score_lookaheads([start, start], ended=[False, True], prefix=False) == pytest.approx([whole, whole])
    # best-of-n's worker processes get the scorer pickled: as its path, loaded again there
    import pickle

    copy_ = pickle.loads(pickle.dumps(scorer))
    assert copy_.model is not scorer.model and copy_.score_lookaheads([start], [False]) == pytest.approx([prefix])


def test_grape_weighs_a_learnt_reward_beside_success(tmp_path):
    """scorer=grape reward=PATH: w_success * success + w_reward * the reward, the reward's own
    prefix scoring for unfinished lookaheads, its per-step rewards for dppo."""
    from robalign.alignment.scorers import RewardScorer

    demo = tiny_rapl(tmp_path / "rapl")
    path = str(tmp_path / "rapl")
    reward = RewardScorer(path)
    grape = make_scorer("grape", reward=path, grape={"success": 2.0, "reward": 0.25})
    failed = dataclasses.replace(demo, success=False, frames=demo.frames[::-1].copy())
    alone = reward.score([demo, failed])
    assert grape.needs_frames and grape.image_size == 96
    assert grape.score([demo, failed]) == pytest.approx([2.0 + 0.25 * alone[0], 0.25 * alone[1]])
    start = dataclasses.replace(demo, success=False, state=demo.state[:6], action=demo.action[:6],
                                frames=demo.frames[:6])
    ahead = reward.score_lookaheads([start, demo], ended=[False, True])
    assert grape.score_lookaheads([start, demo], ended=[False, True]) == pytest.approx(
        [0.25 * ahead[0], 2.0 + 0.25 * ahead[1]])
    steps = grape.step_rewards(demo)
    assert steps.sum() == pytest.approx(grape.score([demo])[0])
    assert steps[:-1] == pytest.approx(0.25 * reward.step_rewards(demo)[:-1])  # shaped as the reward is
    assert repr(path) in grape.describe()  # a resumed run must weigh the same reward
    import pickle

    assert pickle.loads(pickle.dumps(grape)).score([demo]) == pytest.approx(grape.score([demo]))
    with pytest.raises(RobalignError, match=r"grape.reward=0.5 weighs a learnt reward.*reward=PATH"):
        make_scorer("grape", grape={"reward": 0.5})
    with pytest.raises(RobalignError, match=r"weighs it 0; set grape.reward"):
        make_scorer("grape", reward=path)
    with pytest.raises(RobalignError, match=r"grape weight reward='a lot' must be a finite number"):
        make_scorer("grape", reward=path, grape={"reward": "a lot"})
    # without a reward the score reads as before grape could weigh one (old runs resume)
    assert make_scorer("grape").describe() == 'grape score {"likelihood": 0.0, "success": 1.0} []'


# ---- the preference losses -----------------------------------------------------------------
def test_diffusion_dpo_starts_at_log2_and_prefers_the_chosen_after_updates():
    policy, reference = diffusion(), diffusion()
    aligner = make_aligner(MethodConfig("diffusion-dpo", lr=1e-3, updates=30, batch=2, beta=50.0))
    pairs = [(sampled_rollout(policy, 0, 1), sampled_rollout(policy, 0, 2)),
             (sampled_rollout(policy, 1, 3), sampled_rollout(policy, 1, 4))]
    # identical weights and shared draws: every log-ratio is exactly 0
    assert ratio_gap(aligner, policy, reference, *pairs[0]) == 0.0
    stats_ = aligner.update(policy, reference, [], pairs, None, torch.Generator().manual_seed(0))
    assert stats_["loss_first"] == pytest.approx(math.log(2), abs=1e-6)
    assert stats_["loss_last"] < 0.5 * math.log(2)
    for w, lo in pairs:  # on fresh draws too, not only the ones trained on
        assert ratio_gap(aligner, policy, reference, w, lo, seed=123) > 0
    torch.testing.assert_close(reference.state_dict(), diffusion().state_dict())


def test_diffusion_dpo_shares_noise_between_chosen_and_rejected():
    """With the same sample as chosen and rejected the shared draws make the gap 0 (to float
    rounding: the two sit at different batch rows), even after the policy moved away from
    the reference."""
    policy, reference = diffusion(), diffusion()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    aligner = make_aligner(MethodConfig("diffusion-dpo"))
    r = sampled_rollout(reference, 0, 5)
    assert abs(ratio_gap(aligner, policy, reference, r, copy.deepcopy(r))) < 1e-6
    assert abs(ratio_gap(aligner, policy, reference, r, sampled_rollout(reference, 0, 6))) > 1e-3


def test_tpo_log_ratios_are_exact_and_training_prefers_the_chosen():
    policy, reference = vla(), vla()
    aligner = make_aligner(MethodConfig("tpo", lr=3e-3, updates=30, batch=2, beta=1.0))
    w, lo = sampled_rollout(reference, 0, 1, instruction="put the red cube in the bowl"), \
        sampled_rollout(reference, 0, 2, instruction="put the blue cube in the bowl")
    # the recorded token log-probs of the sampled chunks equal log_prob of the same chunks
    for c in w.chunks:
        obs = {k: ([v] if isinstance(v, str) else v[None]) for k, v in c.obs.items()}
        torch.testing.assert_close(reference.log_prob(obs, c.sample[None])[0], c.log_probs.sum(), atol=1e-4, rtol=0)
    assert ratio_gap(aligner, policy, reference, w, lo) == 0.0
    stats_ = aligner.update(policy, reference, [], [(w, lo)], None, torch.Generator().manual_seed(0))
    assert stats_["loss_first"] == pytest.approx(math.log(2), abs=1e-6) and stats_["loss_last"] < 0.1
    gap = ratio_gap(aligner, policy, reference, w, lo)
    assert gap > 2.0
    obs = [{k: ([v] if isinstance(v, str) else v[None]) for k, v in c.obs.items()} for c in w.chunks]
    with torch.no_grad():
        direct = sum(float(policy.log_prob(o, c.sample[None])[0] - reference.log_prob(o, c.sample[None])[0])
                     for o, c in zip(obs, w.chunks))
        ours = float(aligner.chunk_log_ratios(policy, reference, w.chunks, [0] * len(w.chunks), None).sum())
    assert ours == pytest.approx(direct, abs=1e-4)

    # reduce=mean: each side's log-ratio is its mean over its own chunks (the loser cut shorter
    # here, so a sum, or a mean over the wrong count, gives another logit); one step at lr ~0
    # reports the logit before it moves anything
    short = dataclasses.replace(lo, chunks=lo.chunks[:max(1, len(lo.chunks) // 2)])
    with torch.no_grad():
        means = [float(aligner.chunk_log_ratios(policy, reference, r.chunks, [0] * len(r.chunks), None).mean())
                 for r in (w, short)]
    for reduce, expected in (("mean", means[0] - means[1]), ("sum", ratio_gap(aligner, policy, reference, w, short))):
        one_step = make_aligner(MethodConfig("tpo", lr=1e-12, updates=1, batch=1, beta=1.0, reduce=reduce))
        logit = one_step.update(policy, reference, [], [(w, short)], None, torch.Generator())["logit_margin"]
        assert logit == pytest.approx(expected, abs=1e-3), reduce
    assert len(short.chunks) < len(w.chunks)


def test_expert_iteration_imitates_only_the_kept_episodes():
    """The chosen side of each state's pairs is imitated with the policy's training loss;
    the rejected episodes never reach it."""
    policy = diffusion()
    before = copy.deepcopy(policy.state_dict())
    aligner = make_aligner(MethodConfig(name="expert-iteration", lr=1e-3, updates=4, batch=2))
    g = np.random.default_rng(0)

    def episode(state, level, score):
        T = 12
        traj = Trajectory(state=g.normal(size=(T, S)).astype(np.float32), action=np.full((T, A), level, np.float32),
                          instruction="x", success=True, env_state=g.normal(size=(T, E)).astype(np.float32))
        return Rollout(traj, [], state, score=score)

    rollouts = [episode(0, 0.5, 1.0), episode(0, -0.5, 0.0), episode(1, 0.5, 2.0), episode(1, -0.5, -1.0),
                episode(2, 0.5, 3.0), episode(2, 0.5, 3.0)]  # state 2 ties: nothing to prefer, nothing kept
    seen = []
    loss = policy.compute_loss
    policy.compute_loss = lambda batch: (seen.append(batch["action"]), loss(batch))[1]  # a spy on what it imitates
    stats = aligner.update(policy, None, rollouts, preference_pairs(rollouts, 1), None, torch.Generator().manual_seed(0))
    assert stats["kept"] == 2 and stats["windows"] == 24 and stats["kept_score_mean"] == 1.5
    assert len(seen) == 4 and all(b.shape == (16, 8, A) and torch.all(b == 0.5) for b in seen)
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert aligner.update(policy, None, rollouts, [], None, None) == {"kept": 0, "loss": None, "dropped_failed": 0,
                                                                       "dropped_below_top": 0}
    # top_share: the best kept episodes across states; state 0's (score 1.0) is below state 1's
    top = make_aligner(MethodConfig(name="expert-iteration", lr=1e-3, updates=1, batch=2, top_share=0.5))
    stats = top.update(policy, None, rollouts, preference_pairs(rollouts, 1), None, torch.Generator().manual_seed(0))
    assert stats["kept"] == 1 and stats["dropped_below_top"] == 1 and stats["kept_score_mean"] == 2.0
    assert [t.action[0, 0] for t in top.kept] == [0.5] and top.kept[0] is rollouts[2].trajectory
    with pytest.raises(RobalignError, match="method.top_share=0"):
        MethodConfig(name="expert-iteration", top_share=0)
    # successful_only: a kept episode that failed the task is not imitated
    rollouts[2].trajectory.success = False  # state 1's chosen episode
    filtered = make_aligner(MethodConfig(name="expert-iteration", lr=1e-3, updates=2, batch=2, successful_only=True))
    stats = filtered.update(policy, None, rollouts, preference_pairs(rollouts, 1), None, torch.Generator().manual_seed(0))
    assert stats["kept"] == 1 and stats["dropped_failed"] == 1 and stats["kept_score_mean"] == 1.0
    with pytest.raises(RobalignError, match="method.successful_only='yes'"):
        MethodConfig(name="expert-iteration", successful_only="yes")
    # aggregate: each update imitates every earlier update's kept episodes beside its own
    growing = make_aligner(MethodConfig(name="expert-iteration", lr=1e-3, updates=1, batch=2, aggregate=True))
    sizes = [growing.update(policy, None, rollouts, preference_pairs(rollouts, 1), None, torch.Generator())
             for _ in range(3)]
    assert [(x["kept"], x["imitated"], x["windows"]) for x in sizes] == [(2, 2, 24), (2, 4, 48), (2, 6, 72)]


def test_kept_timestep_floor_imitates_the_kept_episodes_only_at_high_noise():
    """With method.kept_timestep_floor the kept episodes' loss draws diffusion timesteps from
    the floor up, and the demos' anchor keeps every timestep; a policy without the knob is refused."""
    policy = diffusion()
    T = policy.config.num_train_timesteps
    g = np.random.default_rng(0)
    batch = {"state": torch.as_tensor(g.normal(size=(6, 2, S)), dtype=torch.float32),
             "environment_state": torch.as_tensor(g.normal(size=(6, 2, E)), dtype=torch.float32),
             "action": torch.as_tensor(g.uniform(-1, 1, size=(6, 8, A)), dtype=torch.float32)}
    drawn = []
    denoise = policy.denoise_loss
    policy.denoise_loss = lambda obs, actions, noise, t, pad=None: (drawn.append(t), denoise(obs, actions, noise, t, pad))[1]
    torch.manual_seed(0)
    for _ in range(20):
        policy.compute_loss(batch, timestep_floor=0.6)
    floored = torch.cat(drawn)
    assert floored.min() >= round(0.6 * T) and floored.max() == T - 1  # [60%, 100%) of the schedule, both ends reached
    drawn.clear()
    for _ in range(20):
        policy.compute_loss(batch)
    assert torch.cat(drawn).min() < round(0.6 * T)  # no floor: low timesteps too

    aligner = make_aligner(MethodConfig(name="expert-iteration", lr=1e-3, updates=3, batch=2, anchor_weight=1.0,
                                        kept_timestep_floor=0.6))
    aligner.check(policy)
    drawn.clear()
    windows = DemoWindows.from_trajectories(
        [Trajectory(state=g.normal(size=(12, S)).astype(np.float32), action=np.full((12, A), 0.5, np.float32),
                    instruction="x", success=True, env_state=g.normal(size=(12, E)).astype(np.float32))],
        ("state", "environment_state"), 2, 8)
    aligner.imitate(policy, windows, lambda p: p.compute_loss(batch), torch.Generator().manual_seed(0))
    kept, anchor = torch.cat(drawn[0::2]), torch.cat(drawn[1::2])  # each update: the kept loss, then the anchor
    assert len(drawn) == 6 and kept.min() >= round(0.6 * T) and anchor.min() < round(0.6 * T)
    with pytest.raises(RobalignError, match="kept_timestep_floor=0.3 limits a diffusion policy's.*vla"):
        make_aligner(MethodConfig(name="expert-iteration", kept_timestep_floor=0.3)).check(vla())
    with pytest.raises(RobalignError, match="method.kept_timestep_floor=1"):
        MethodConfig(name="expert-iteration", kept_timestep_floor=1)


def test_chunk_windows_start_where_a_chunk_was_sampled_and_score_only_its_executed_steps():
    """method.kept_windows=chunk: one window per chunk start (every n_action_steps from each
    episode's first step), the loss on the steps up to the chunk's last executed one."""
    policy = diffusion()  # n_obs_steps 2, horizon 8, n_action_steps 4
    g = np.random.default_rng(0)

    def episode(T):  # each action holds its own step index, so a target shows where it was cut
        return Trajectory(state=g.normal(size=(T, S)).astype(np.float32),
                          action=np.repeat(np.arange(T, dtype=np.float32)[:, None], A, 1), instruction="x",
                          success=True, env_state=g.normal(size=(T, E)).astype(np.float32))

    chunked = make_aligner(MethodConfig(name="expert-iteration", kept_windows="chunk"))
    windows = chunked.windows(policy, [episode(12), episode(6)])
    assert len(windows) == 3 + 2  # steps 0, 4, 8 and 0, 4
    batch = windows.batch(torch.arange(5))
    first = batch["action"][:, 1, 0]  # the chunk's first executed action: its own step
    assert first.tolist() == [0, 4, 8, 0, 4]
    assert batch["action_is_pad"][:, 5:].all() and not batch["action_is_pad"][:3, 1:5].any()  # 1 + 4 executed
    assert batch["action_is_pad"][4, 1:3].logical_not().all() and batch["action_is_pad"][4, 3:].all()  # ends at 5
    every = make_aligner(MethodConfig(name="expert-iteration")).windows(policy, [episode(12), episode(6)])
    assert len(every) == 18
    with pytest.raises(RobalignError, match="method.kept_windows='chunks'.*kept_windows: all or chunk"):
        MethodConfig(name="expert-iteration", kept_windows="chunks")


def test_kept_episodes_round_trip_bit_for_bit(tmp_path):
    """What a round imitated is saved with it; a resumed aggregate run imitates the same arrays."""
    from robalign.alignment.loop import load_episodes, save_episodes

    g = np.random.default_rng(1)
    episodes = [Trajectory(state=g.normal(size=(T, S)).astype(np.float32), action=g.normal(size=(T, A)).astype(np.float32),
                           instruction=f"task {T}", success=T % 2 == 0, mode="left" if T == 5 else None,
                           env_state=g.normal(size=(T, E)).astype(np.float32),
                           frames=g.integers(0, 255, size=(T, 8, 8, 3), dtype=np.uint8)) for T in (5, 6)]
    for frames in (True, False):
        save_episodes(episodes, tmp_path / "kept.safetensors", frames=frames)
        back = load_episodes(tmp_path / "kept.safetensors")
        for a, b in zip(episodes, back, strict=True):
            for key in ("state", "action", "env_state"):
                assert np.array_equal(getattr(a, key), getattr(b, key)) and getattr(b, key).dtype == np.float32
            assert (a.instruction, a.success, a.mode) == (b.instruction, b.success, b.mode)
            assert np.array_equal(b.frames, a.frames) if frames else b.frames is None
    save_episodes([], tmp_path / "none.safetensors", frames=False)
    assert load_episodes(tmp_path / "none.safetensors") == []


def test_methods_refuse_policies_they_cannot_align():
    with pytest.raises(RobalignError, match="tpo needs exact action log-probabilities.*diffusion-dpo"):
        make_aligner(MethodConfig("tpo")).check(diffusion())
    with pytest.raises(RobalignError, match="diffusion-dpo needs a denoising policy.*tpo"):
        make_aligner(MethodConfig("diffusion-dpo")).check(vla())
    with pytest.raises(RobalignError, match="dppo needs a diffusion policy"):
        make_aligner(MethodConfig("dppo")).check(vla())
    with pytest.raises(RobalignError, match="ft_denoising_steps=9 exceeds the policy's 5"):
        make_aligner(MethodConfig("dppo", ft_denoising_steps=9)).check(diffusion())
    with pytest.raises(UnknownNameError, match="best-ofn.*diffusion-dpo, dppo, expert-iteration, tpo"):
        make_aligner(MethodConfig("best-ofn"))
    with pytest.raises(RobalignError, match=r"method.beta=0"):
        MethodConfig("tpo", beta=0)


# ---- dppo ----------------------------------------------------------------------------------
def test_dppo_advantages_use_the_group_baseline():
    aligner = make_aligner(MethodConfig("dppo", gamma=0.5))
    policy = diffusion()
    a, b = sampled_rollout(policy, 0, 1, chunks=2, stochastic=True), sampled_rollout(policy, 0, 2, chunks=2,
                                                                                     stochastic=True)
    a.step_rewards = np.array([0, 0, 0, 0, 0, 0, 0, 4.0])  # chunks cover steps 0-3 and 4-7
    b.step_rewards = np.zeros(8)
    adv = aligner.advantages([a, b])
    # returns: a = [0 + 0.5 * 4, 4] = [2, 4], b = [0, 0]; baselines [1, 2]; std of (1, 2, -1, -2)
    scale = np.std([1, 2, -1, -2])
    np.testing.assert_allclose(adv[0], np.array([1, 2]) / scale, rtol=1e-6)
    np.testing.assert_allclose(adv[1], np.array([-1, -2]) / scale, rtol=1e-6)


def test_dppo_raises_the_probability_of_high_advantage_chains():
    policy, reference = diffusion(), diffusion()
    aligner = make_aligner(MethodConfig("dppo", lr=1e-3, updates=20, batch=1, kl_coef=0.0, clip_ratio=0.2))
    good = [sampled_rollout(reference, i, 10 + i, chunks=2, stochastic=True) for i in range(2)]
    bad = [sampled_rollout(reference, i, 20 + i, chunks=2, stochastic=True) for i in range(2)]
    for r in good:
        r.step_rewards = np.ones(8)
    for r in bad:
        r.step_rewards = np.zeros(8)
    steps = slice(2, 5)

    def logp(p, rollouts):
        chunks = [c for r in rollouts for c in r.chunks]
        from robalign.alignment.rollouts import stack_obs

        with torch.no_grad():
            return float(p.chain_log_prob(stack_obs(chunks, "cpu"), torch.stack([c.chain for c in chunks]),
                                          steps=steps).mean())
    before_good, before_bad = logp(policy, good), logp(policy, bad)
    stats_ = aligner.update(policy, reference, good + bad, [], None, torch.Generator().manual_seed(0))
    assert logp(policy, good) - before_good > logp(policy, bad) - before_bad
    assert stats_["chunks"] == 8 and stats_["clip_fraction"] > 0


# ---- drift ---------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [diffusion, vla], ids=["diffusion", "vla"])
def test_kl_is_zero_against_itself_and_grows_with_a_perturbation(build):
    reference = build()
    held_out = [c for i in range(2) for c in sampled_rollout(reference, i, i).chunks]
    assert kl_per_step(build(), reference, held_out) == pytest.approx(0.0, abs=1e-6)
    small, large = build(), build()
    with torch.no_grad():
        for ps, pl in zip(small.parameters(), large.parameters()):
            noise = torch.randn_like(ps)
            ps.add_(0.02 * noise)
            pl.add_(0.2 * noise)
    kl_small, kl_large = kl_per_step(small, reference, held_out), kl_per_step(large, reference, held_out)
    assert 0 < kl_small < kl_large


# ---- `robalign align` end to end -----------------------------------------------------------
TINY_ARGS = ["policy.config.down_dims=[16,32]", "policy.config.horizon=8", "policy.config.n_action_steps=4",
             "policy.config.num_train_timesteps=20", "policy.config.num_inference_steps=5",
             "policy.config.diffusion_step_embed_dim=16"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    main(["demos", "env=reach-around", "n=3", "preview=0", f"output_dir={root / 'demos'}", "progress=false"])
    main(["pretrain", f"dataset={root / 'demos'}", f"output_dir={root / 'pt'}", "steps=30", "train.batch_size=16",
          "threads=1", "progress=false", *TINY_ARGS])
    return root


def align_args(root, out, *extra):
    return ["align", f"policy={root / 'pt' / 'policy'}", "scorer=objective", "objective=clearance", "rounds=2",
            "states=2", "rollouts=2", "max_steps=12", "eval_episodes=2", "launcher=serial", "method.updates=3",
            "method.batch=2", f"output_dir={out}", "progress=false", *extra]


@pytest.mark.slow
def test_align_end_to_end(pretrained, tmp_path):
    out = tmp_path / "run"
    result = main(align_args(pretrained, out, f"demos={pretrained / 'demos'}"))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["before"] == result["before"] and saved["after"] == result["after"]
    for side in ("before", "after"):
        for key in ("success_rate", "objective_mean", "satisfied_share", "drift"):
            assert key in saved[side], (side, key)
    assert len(saved["rounds"]) == 2 and saved["rounds"][0]["episodes"] == 4
    first = saved["rounds"][0]
    assert len(first["episode_scores"]) == 4 and max(first["episode_scores"]) == first["score_max"]
    assert first["episode_scores"] == first["episode_objective_values"]  # the scorer is the objective itself
    assert len(first["episode_success"]) == 4 and np.mean(first["episode_success"]) == first["success_rate"]
    assert set(first["episode_modes"]) <= {"left", "right", "over"}  # reach-around's modes, one per episode
    assert len(first["episode_modes"]) == 4
    assert saved["rounds"][0]["update"]["loss_first"] == pytest.approx(math.log(2), abs=0.2)
    assert saved["drift"]["kl_per_step"] > 0 and saved["drift"]["demo_nll"] is not None
    assert saved["before"]["drift"]["kl_per_step"] == 0.0
    from robalign.policies import load_policy

    aligned, pretrained_policy = load_policy(out / "policy"), load_policy(pretrained / "pt" / "policy")
    assert any(not torch.equal(a, b) for a, b in zip(aligned.state_dict().values(),
                                                     pretrained_policy.state_dict().values()))
    assert (out / "alignment.png").stat().st_size > 1000 and (out / "rounds" / "001" / "round.json").is_file()


@pytest.mark.slow
def test_pairs_successful_pairs_no_failed_rollout(pretrained, tmp_path):
    # 12 steps never reach the goal: every rollout fails, so no pair forms and nothing moves
    out = tmp_path / "run"
    result = main(align_args(pretrained, out, "rounds=1", "pairs=successful"))
    assert result["rounds"][0]["success_rate"] == 0.0 and result["rounds"][0]["update"]["pairs"] == 0
    assert json.loads((out / "align.json").read_text())["align"]["pairs"] == "successful"
    from robalign.policies import load_policy

    aligned, pretrained_policy = load_policy(out / "policy"), load_policy(pretrained / "pt" / "policy")
    assert all(torch.equal(a, b) for a, b in zip(aligned.state_dict().values(),
                                                 pretrained_policy.state_dict().values()))


@pytest.mark.slow
def test_dppo_with_the_grape_score_runs_through_the_same_loop(pretrained, tmp_path):
    out = tmp_path / "dppo"
    result = main(align_args(pretrained, out, "method=dppo", "rounds=1", "scorer=grape", "grape.success=1.0",
                             "grape.objectives={clearance: 10.0}", "grape.likelihood=0.01"))
    update = result["rounds"][0]["update"]
    assert update["chunks"] == sum(math.ceil(12 / 4) for _ in range(4))  # 4 episodes of 12 steps, chunks of 4
    assert update["kl_ref"] >= 0 and 0 <= update["clip_fraction"] <= 1
    assert result["scorer"] == "grape score" and result["objective"] == "objective 'clearance'"


@pytest.mark.slow
def test_killed_alignment_resumes_from_its_last_round(pretrained, tmp_path):
    from safetensors.torch import load_file

    whole = tmp_path / "whole"
    main(align_args(pretrained, whole, "rounds=2"))
    killed = tmp_path / "killed"
    args = align_args(pretrained, killed, "rounds=2")
    proc = subprocess.Popen([sys.executable, "-m", "robalign", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while not (killed / "rounds" / "000" / "round.json").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    main(args + ["resume=true"])
    a, b = load_file(whole / "policy" / "model.safetensors"), load_file(killed / "policy" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((whole / "metrics.json").read_text())["after"] == \
        json.loads((killed / "metrics.json").read_text())["after"]
    with pytest.raises(AlignmentError, match="settings differ.*seed"):
        main(args + ["resume=true", "seed=1"])


@pytest.mark.slow
def test_policy_config_changes_the_policy_the_loop_rolls_out_and_saves(pretrained, tmp_path):
    out = tmp_path / "steps2"
    result = main(align_args(pretrained, out, "rounds=1", "policy_config.n_action_steps=2"))
    assert result["policy_overrides"] == {"n_action_steps": 2}
    assert json.loads((out / "align.json").read_text())["policy_overrides"] == {"n_action_steps": 2}
    assert json.loads((out / "policy" / "config.json").read_text())["config"]["n_action_steps"] == 2
    with pytest.raises(RobalignError, match="unknown setting.*n_action_step.*valid:.*n_action_steps"):
        main(align_args(pretrained, tmp_path / "typo", "policy_config.n_action_step=2"))
    with pytest.raises(RobalignError, match="policy_config \\(n_action_steps\\) is not passed to best-of-n"):
        main(["align", "method=best-of-n", f"policy={pretrained / 'pt' / 'policy'}", "scorer=objective",
              "objective=clearance", "policy_config.n_action_steps=2", f"output_dir={tmp_path / 'bon'}"])
    with pytest.raises(RobalignError, match="explore_chunks=2 .*needs a token policy \\(vla\\).*not diffusion with "
                                            "diffusion-dpo; set explore_chunks=0"):
        main(align_args(pretrained, tmp_path / "explore", "method=diffusion-dpo", "explore_chunks=2"))
    assert not (tmp_path / "typo").exists() and not (tmp_path / "bon").exists()
    assert not (tmp_path / "explore").exists()


FAIL_FROM_SEED = 50002  # round 1's first training state (rounds of 2 states from 50000)


def clearance_failing_in_round_one(traj):
    seed = traj.provenance.get("seed")
    if FAIL_FROM_SEED <= seed < 60000:
        return float("nan")
    return float(np.min(traj.info["vase_clearance"]))


@pytest.mark.slow
def test_objective_returning_nan_stops_the_run_and_keeps_round_zero(pretrained, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(AlignmentError, match=r"returned nan.*seed 5000[23].*Round 1 stopped.*rounds 0-0 are saved.*"
                                             r"resume=true"):
        main(align_args(pretrained, out, f"objective={__name__}:clearance_failing_in_round_one", "threshold=0.05"))
    assert (out / "rounds" / "000" / "policy" / "model.safetensors").is_file()
    assert not (out / "rounds" / "001").exists() and not (out / "metrics.json").exists()


def test_a_run_saved_before_newer_settings_existed_resumes_with_their_defaults(tmp_path):
    from robalign.alignment.loop import _check_resume

    def settings(**method):
        return {"env": "pick-place-lang", "method": dataclasses.asdict(MethodConfig(name="tpo", **method)),
                "align": {k: v for k, v in dataclasses.asdict(AlignConfig()).items() if k != "rounds"}}

    old = settings()
    for key, field in (("method", "reduce"), ("align", "pairs"), ("align", "layout")):
        del old[key][field]  # as an align.json written before these settings came
    (tmp_path / "align.json").write_text(json.dumps(old))
    _check_resume(tmp_path, settings())
    with pytest.raises(AlignmentError, match="settings differ.*'reduce': 'sum'.*'reduce': 'mean'"):
        _check_resume(tmp_path, settings(reduce="mean"))


def test_align_refuses_bad_settings(tmp_path):
    with pytest.raises(RobalignError, match="unknown alignment method .dpo.; valid choices: best-of-n, diffusion-dpo, dppo, expert-iteration, tpo"):
        main(["align", "method=dpo", "policy=x"])
    with pytest.raises(RobalignError, match="policy=PATH is required"):
        main(["align", "scorer=objective", "objective=clearance"])
    with pytest.raises(RobalignError, match="does not exist"):
        main(["align", f"policy={tmp_path / 'nothing'}", "scorer=objective", "objective=clearance",
              f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(RobalignError, match="rollouts >= 2"):
        main(["align", "policy=x", "scorer=objective", "objective=clearance", "rollouts=1"])
    with pytest.raises(RobalignError, match="method.unfinished='partial'.*unfinished: prefix or whole"):
        main(["align", "method=best-of-n", "method.unfinished=partial", "policy=x", "scorer=objective",
              "objective=clearance"])
    with pytest.raises(RobalignError, match="unknown pairs setting 'winners'; valid choices: all, successful"):
        main(["align", "policy=x", "scorer=objective", "objective=clearance", "pairs=winners"])
    with pytest.raises(RobalignError, match="explore_temperature=0.0; allowed: > 0"):
        main(["align", "policy=x", "scorer=objective", "objective=clearance", "explore_temperature=0.0"])
    with pytest.raises(RobalignError, match="explore_chunks >= 0"):
        main(["align", "policy=x", "scorer=objective", "objective=clearance", "explore_chunks=-1"])
    with pytest.raises(RobalignError, match="unknown setting 'round'"):
        main(["align", "round=3"])
    with pytest.raises(RobalignError, match="unknown reach-around layout 'dense'; valid choices: default"):
        main(["align", f"policy={tmp_path / 'nothing'}", "env=reach-around", "env.layout=dense", "scorer=objective",
              "objective=clearance", f"output_dir={tmp_path / 'out'}"])  # before the policy loads
    with pytest.raises(RobalignError, match="best-of-n ranks candidates.*grape.likelihood=0"):
        main(["align", "method=best-of-n", f"policy={tmp_path / 'nothing'}", "scorer=grape", "grape.likelihood=0.01",
              f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(RobalignError, match="method.anchor_keep=0.0.*0 < anchor_keep <= 1"):
        main(["align", "policy=x", "scorer=objective", "objective=clearance", "method.anchor_keep=0.0"])
    with pytest.raises(RobalignError, match="anchor_keep=0.5 filters the demos' anchor: it needs demos=PATH"):
        main(["align", f"policy={tmp_path / 'nothing'}", "scorer=objective", "objective=clearance",
              "method.anchor_keep=0.5", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(RobalignError, match="unknown setting 'method.top_share' for `robalign align`"):  # tpo's
        main(["align", "method=tpo", f"policy={tmp_path / 'nothing'}", "scorer=objective", "objective=clearance",
              "method.top_share=0.5", f"output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


# ---- the reward-filtered demo anchor -------------------------------------------------------
def test_window_rewards_average_the_steps_each_windows_actions_lead_to():
    """A window at frame t (To=2 observations, Hz=4 actions t-1 .. t+2) leads to steps t .. t+2,
    cut at its episode's end: episodes never lend each other steps."""
    from robalign.alignment.anchor import window_rewards
    from robalign.policies.data import DemoWindows

    def episode(T):
        return Trajectory(state=np.zeros((T, S), np.float32), action=np.zeros((T, A), np.float32), instruction="x",
                          success=True)

    windows = DemoWindows.from_trajectories([episode(5), episode(3)], ("state",), n_obs_steps=2, horizon=4)
    steps = torch.tensor([0.0, 1, 2, 3, 4, 10, 20, 30], dtype=torch.float64)
    expected = [1, 2, 3, 3.5, 4, 20, 25, 30]  # (0+1+2)/3 ... (3+4)/2, 4; the second episode apart
    assert window_rewards(windows, steps).tolist() == pytest.approx(expected)


@pytest.mark.slow
def test_reward_filtered_anchor_draws_only_the_windows_the_reward_ranks_highest(pretrained, tmp_path):
    """method.anchor_keep: the anchor's windows are the top share by the learnt reward's
    per-step rewards; a demo that is one of the reward's references is scored against the
    others, not against itself; only the kept windows are drawn."""
    from robalign.alignment.anchor import DemoAnchor, reward_filtered, window_rewards
    from robalign.alignment.loop import _demo_windows
    from robalign.alignment.scorers import RewardScorer
    from robalign.policies import load_policy
    from robalign.rewards.data import demos_from_dataset
    from robalign.rewards.models import RewardConfig, fit_to_backbone, make_reward

    demos = pretrained / "demos"
    episodes = list(demos_from_dataset(demos).values())
    assert len(episodes) == 3
    torch.manual_seed(0)
    model = make_reward(fit_to_backbone(RewardConfig(method="rapl", frame_stride=1)))
    references = [model.frame_features(t) for t in episodes[:2]]  # demos 0 and 1; demo 2 is not one
    model.demos = references
    model.save_pretrained(tmp_path / "rapl")
    scorer = RewardScorer(str(tmp_path / "rapl"))
    policy = load_policy(pretrained / "pt" / "policy")
    windows = _demo_windows(policy, demos)
    anchor = reward_filtered(windows, demos, scorer, keep=0.5)
    assert anchor.figures["scored_without_itself"] == 2

    def rewards(t, refs):
        scorer.model.demos = refs
        return torch.as_tensor(scorer.step_rewards(t))

    own = [rewards(episodes[0], references[1:]), rewards(episodes[1], references[:1]), rewards(episodes[2], references)]
    assert rewards(episodes[0], references).sum() > own[0].sum()  # against itself it would score higher
    per_window = window_rewards(windows, torch.cat(own))
    kept = torch.zeros(len(windows), dtype=torch.bool)
    kept[anchor.index] = True
    assert anchor.figures["kept_windows"] == int(kept.sum()) and abs(kept.float().mean() - 0.5) <= 1 / len(windows)
    assert per_window[kept].min() >= per_window[~kept].max()
    assert set(anchor.figures["kept_share_by_mode"]) == set(windows.episode_modes)
    scorer.model.demos = references[:1]  # the only reference is an anchor demo: nothing to rank it against
    with pytest.raises(RobalignError, match="only OT reference is a demo of the anchor"):
        reward_filtered(windows, demos, scorer, keep=0.5)
    # the anchor's loss is the policy's training loss on the drawn windows, and only those
    one = DemoAnchor(windows, torch.tensor([int(anchor.index[0])]))
    torch.manual_seed(1)
    drawn = one(policy, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    direct = policy.compute_loss(windows.batch(torch.full((64,), int(anchor.index[0])), policy.device))
    assert float(drawn.detach()) == pytest.approx(float(direct.detach()))
    # through the loop: the figures land in metrics.json; a scorer with no per-step reward is refused
    result = main(align_args(pretrained, tmp_path / "run", "scorer=reward", f"reward={tmp_path / 'rapl'}",
                             "objective=clearance", f"demos={demos}", "method.anchor_weight=1",
                             "method.anchor_keep=0.5", "rounds=1"))
    assert result["anchor"] == anchor.figures
    with pytest.raises(RobalignError, match="anchor_keep=0.5 ranks the demo steps by a learnt reward"):
        main(align_args(pretrained, tmp_path / "objective", f"demos={demos}", "method.anchor_weight=1",
                        "method.anchor_keep=0.5"))
    assert not (tmp_path / "objective").exists()


@pytest.mark.slow
def test_pipeline_runs_the_whole_loop_and_reports_before_and_after(tmp_path):
    out = tmp_path / "pipe"
    argv = ["pipeline", f"output_dir={out}", "demos=3", "pretrain_steps=5", "rollouts=4", "queries=2", "rounds=1",
            "states=1", "rollouts_per_state=2", "eval_episodes=1", "videos=1", "max_steps=24", "progress=false"]
    summary = main(argv)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary and saved["objective"] == "objective 'clearance'" and saved["method"] == "diffusion-dpo"
    stages = saved["stage_seconds"]
    assert list(stages) == ["demos", "pretrain", "rollouts", "prefs queries", "prefs simulate", "reward", "align"]
    assert all(v >= 0 for v in stages.values()) and stages["demos"] > 0 and stages["align"] > 0
    for side in ("before", "after"):
        assert set(saved[side]) == {"success_rate", "objective_mean", "satisfied_share", "drift"}
    assert saved["after"]["drift"]["kl_per_step"] > 0
    page = (out / "report.html").read_text()
    assert "videos/before-seed100000.mp4" in page and "videos/after-seed100000.mp4" in page
    assert (out / "videos" / "after-seed100000.mp4").stat().st_size > 1000
    assert json.loads((out / "reward" / "reward_config.json").read_text())["method"] == "rapl"
    # a second run finds every stage done and only rewrites the report
    mtime = (out / "align" / "metrics.json").stat().st_mtime
    assert main(argv) == summary and (out / "align" / "metrics.json").stat().st_mtime == mtime


def test_pipeline_refuses_an_objective_of_another_task(tmp_path):
    with pytest.raises(RobalignError, match="objective 'handle-grasp' is for mug-grasp, not reach-around"):
        main(["pipeline", "objective=handle-grasp", f"output_dir={tmp_path / 'p'}"])
    assert not (tmp_path / "p").exists()


def test_tpo_scores_only_the_steps_that_ran():
    """A chunk cut short by the episode's end counts only its executed steps."""
    policy = vla()
    r = sampled_rollout(policy, 0, 1, chunks=1)
    aligner = make_aligner(MethodConfig("tpo"))
    with torch.no_grad():
        full = float(aligner._executed_log_prob(policy, r.chunks)[0])
        r.chunks[0].executed = 1
        first = float(aligner._executed_log_prob(policy, r.chunks)[0])
    assert full == pytest.approx(float(r.chunks[0].log_probs.sum()), abs=1e-4)
    assert first == pytest.approx(float(r.chunks[0].log_probs[:1].sum()), abs=1e-4) and first != full


def test_explore_chunks_samples_only_the_first_chunks_at_their_temperature():
    """A greedy policy's rollout actor with explore (2, 5.0): its first two chunks are sampled
    at 5.0 (not the greedy chunk), every later one is exactly greedy; the recorded log-probs
    stay the policy's own (temperature 1), which is what tpo re-scores."""
    from robalign.alignment.rollouts import RecordingActor

    policy = vla()
    policy.config.temperature = 0.0
    window = sampled_rollout(policy, 0, 1, chunks=1).chunks[0].obs
    window = {k: ([v] if isinstance(v, str) else v[None]) for k, v in window.items()}
    greedy = policy.sample_chunk(window).sample[0]
    actor = RecordingActor(policy, seed=0, explore=(2, 5.0))
    for _ in range(5):
        actor.plan(window)
    same = [torch.equal(c.sample, greedy) for c in actor.chunks]
    assert same == [False, False, True, True, True]
    logp = policy.token_log_probs(window, actor.chunks[0].sample[None])  # (1, K, A) under temperature 1
    assert torch.allclose(actor.chunks[0].log_probs, logp[0], atol=1e-5)
    plain = RecordingActor(policy, seed=0)
    plain.plan(window)
    assert torch.equal(plain.chunks[0].sample, greedy)


def test_windows_start_at_random_or_at_the_first_chunk():
    chunks = list(range(10))  # stand-ins: _window only slices the list
    g = torch.Generator().manual_seed(0)
    first = make_aligner(MethodConfig("tpo", window=3, window_at="start"))
    assert all(first._window(chunks, g) == [0, 1, 2] for _ in range(5))
    anywhere = make_aligner(MethodConfig("tpo", window=3))
    starts = {anywhere._window(chunks, g)[0] for _ in range(50)}
    assert len(starts) > 3 and max(starts) <= 7
    assert make_aligner(MethodConfig("tpo", window=0, window_at="start"))._window(chunks, g) == chunks
    with pytest.raises(RobalignError, match="method.window_at='end'.*window_at: random or start"):
        MethodConfig("tpo", window_at="end")


def test_training_states_never_reach_the_held_out_seeds():
    from robalign.alignment import AlignConfig

    with pytest.raises(RobalignError, match="would reach the held-out seeds"):
        AlignConfig(seed=50)
    with pytest.raises(RobalignError, match="rounds x states <= 1000"):
        AlignConfig(rounds=200, states=8)
    with pytest.raises(RobalignError, match="seed, eval_seed, explore_chunks >= 0"):
        AlignConfig(seed=-1)
    cfg = AlignConfig(rounds=4, states=8, seed=3)
    seeds = {cfg.train_seed(r, i) for r in range(4) for i in range(8)}
    assert len(seeds) == 32 and max(seeds) < cfg.eval_seed and min(seeds) >= 50000


# ---- best-of-n -----------------------------------------------------------------------------
def mean_eef_height(traj):
    """A scorer that tells any two different chunks apart."""
    return float(np.mean(traj.state[:, 2]))


@pytest.mark.slow
def test_best_of_n_runs_the_candidate_whose_lookahead_scored_best(pretrained):
    """Each chunk's lookahead is what then happens: the executed episode, cut where the
    chosen chunk ends, scores exactly what the chosen lookahead scored (the simulator is
    restored after every try), and that is the best of the candidates."""
    from robalign.alignment.best_of_n import best_of_n_episodes
    from robalign.policies import load_policy

    policy = load_policy(pretrained / "pt" / "policy")
    scorer = ObjectiveScorer(mean_eef_height)
    options = {"distractors": False, "camera": False, "max_steps": 20}
    (traj,), (choices,) = best_of_n_episodes(policy, "reach-around", [7], [7], options, scorer, n=4)
    assert len(traj) == 20 and [c["step"] for c in choices] == [0, 4, 8, 12, 16]
    for c in choices:
        end = c["step"] + policy.n_action_steps
        assert c["scores"][c["chosen"]] == max(c["scores"]) and len(set(c["scores"])) == 4
        assert float(np.mean(traj.state[:end, 2])) == pytest.approx(c["scores"][c["chosen"]], abs=2e-6)
    assert any(c["chosen"] != 0 for c in choices)
    with pytest.raises(RobalignError, match="n >= 2"):
        best_of_n_episodes(policy, "reach-around", [7], [7], options, scorer, n=1)


@pytest.mark.slow
def test_best_of_n_lookahead_follows_each_candidate_with_the_policys_own_chunks(pretrained):
    """lookahead=1: every candidate is scored on the steps so far + its chunk + one chunk the
    policy plans after it (cut at the episode's end); the episode still runs the candidates."""
    from robalign.alignment.best_of_n import best_of_n_episodes
    from robalign.policies import load_policy

    class Lengths(ObjectiveScorer):
        def __init__(self):
            super().__init__(mean_eef_height)
            self.lengths, self.ended = [], []

        def score(self, trajectories, log_likelihoods=None):
            self.lengths.append([len(t) for t in trajectories])
            return super().score(trajectories)

        def score_lookaheads(self, trajectories, ended, prefix=True):
            self.ended.append(list(ended))
            return super().score_lookaheads(trajectories, ended, prefix)

    policy = load_policy(pretrained / "pt" / "policy")
    scorer, ka = Lengths(), policy.n_action_steps
    options = {"distractors": False, "camera": False, "max_steps": 18}
    (traj,), (choices,) = best_of_n_episodes(policy, "reach-around", [7], [7], options, scorer, n=3, lookahead=1)
    assert len(traj) == 18
    assert scorer.lengths == [[min(c["step"] + 2 * ka, 18)] * 3 for c in choices]
    assert scorer.ended == [[c["step"] + 2 * ka >= 18] * 3 for c in choices]  # cut at the episode's end: ended
    assert [True] in [e[:1] for e in scorer.ended] and [False] in [e[:1] for e in scorer.ended]
    with pytest.raises(RobalignError, match="lookahead"):
        best_of_n_episodes(policy, "reach-around", [7], [7], options, scorer, n=2, lookahead=-1)
    with pytest.raises(RobalignError, match="unfinished.*prefix or whole; got 'partial'"):
        best_of_n_episodes(policy, "reach-around", [7], [7], options, scorer, n=2, unfinished="partial")


@pytest.mark.slow
def test_best_of_n_in_two_processes_gives_what_one_gives(pretrained):
    """Episodes depend on their seeds alone: 2 worker processes (each loading the policy and
    getting the scorer, here a registered objective with a per-step lambda, pickled by name)
    record the same episodes and choices as this process one by one."""
    from robalign.alignment.best_of_n import best_of_n_episodes
    from robalign.policies import load_policy

    policy = load_policy(pretrained / "pt" / "policy")
    options = {"distractors": False, "camera": False, "max_steps": 12}
    args = (policy, "reach-around", [7, 8, 9], [70, 80, 90], options, ObjectiveScorer("clearance"), 3)
    serial, serial_choices = best_of_n_episodes(*args, lookahead=1)
    pooled, pooled_choices = best_of_n_episodes(*args, lookahead=1, workers=2, policy_dir=pretrained / "pt" / "policy")
    assert pooled_choices == serial_choices and any(c["chosen"] for e in serial_choices for c in e)
    for a, b in zip(serial, pooled, strict=True):
        assert np.array_equal(a.action, b.action) and np.array_equal(a.state, b.state)
        assert a.provenance == b.provenance
    with pytest.raises(RobalignError, match="policy_dir"):
        best_of_n_episodes(*args, workers=2)


@pytest.mark.slow
def test_best_of_n_goes_through_the_same_loop_without_rounds(pretrained, tmp_path):
    def args(out, *extra):  # best-of-n has no updates or batches to set
        return [a for a in align_args(pretrained, out, "method=best-of-n", *extra) if not a.startswith("method.u")
                and not a.startswith("method.b") and not a.startswith("objective=clearance")]

    out = tmp_path / "bon"
    result = main(args(out, "method.n=3", f"objective={__name__}:mean_eef_height", "threshold=1.0"))
    assert result["rounds"] == [] and not (out / "rounds").exists()
    assert result["best_of_n"]["n"] == 3 and result["best_of_n"]["chunks"] == 2 * 3  # 2 episodes of 12 steps
    assert result["best_of_n"]["chosen_minus_mean_score"] > 0
    # the chosen chunks raise the objective the lookahead ranks by; the weights stay the pretrained ones
    assert result["after"]["objective_mean"] > result["before"]["objective_mean"]
    assert result["drift"]["kl_per_step"] == 0.0
    with pytest.raises(RobalignError, match="method.n=1"):
        main(args(tmp_path / "bad", "method.n=1", "objective=clearance"))


@pytest.mark.slow
def test_expert_iteration_distils_best_of_n_through_the_loop_in_any_launcher(pretrained, tmp_path):
    """Each round acts best-of-n, keeps the top episode of each state and imitates it; the
    round's workers load the last saved round's weights, so processes and one by one agree."""
    def args(out, *extra):
        return align_args(pretrained, out, "method=expert-iteration", "method.n=2", "method.lookahead=1",
                          f"objective={__name__}:mean_eef_height", "threshold=1.0", *extra)

    serial = main(args(tmp_path / "serial"))
    for record in serial["rounds"]:
        assert record["best_of_n"]["n"] == 2 and record["best_of_n"]["chunks"] == 4 * 3  # 4 episodes of 12 steps
        assert record["update"]["kept"] == 2 and record["update"]["windows"] == 2 * 12  # the top 1 of 2, per state
    assert serial["drift"]["kl_per_step"] > 0
    pooled = main(args(tmp_path / "pooled", "launcher=vector", "num_envs=2"))
    assert [r["objective_mean"] for r in pooled["rounds"]] == [r["objective_mean"] for r in serial["rounds"]]
    assert pooled["after"] == serial["after"]
    modes = [r["episode_modes"] for r in serial["rounds"]]  # read from the info the workers send back
    assert [r["episode_modes"] for r in pooled["rounds"]] == modes
    assert {m for ms in modes for m in ms} <= {"left", "right", "over"}
    with pytest.raises(RobalignError, match="anchor.*give demos=PATH, or set method.anchor_weight=0"):
        main(args(tmp_path / "anchored", "method.anchor_weight=1"))
    assert not (tmp_path / "anchored").exists()
    # aggregate: round 1 imitates round 0's kept episodes too; they are saved with the round,
    # so a run stopped after round 0 and resumed ends where the uninterrupted one does
    whole = main(args(tmp_path / "whole", "method.aggregate=true"))
    assert [r["update"]["imitated"] for r in whole["rounds"]] == [2, 4]
    assert [r["update"]["windows"] for r in whole["rounds"]] == [2 * 12, 4 * 12]
    assert whole["rounds"][0] == {**serial["rounds"][0], "seconds": whole["rounds"][0]["seconds"]}
    main(args(tmp_path / "stopped", "method.aggregate=true", "rounds=1"))
    resumed = main(args(tmp_path / "stopped", "method.aggregate=true", "resume=true"))
    assert resumed["after"] == whole["after"] and resumed["drift"] == whole["drift"]
    (tmp_path / "stopped" / "rounds" / "001").rename(tmp_path / "gone")  # lose round 1, and round 0's episodes
    (tmp_path / "stopped" / "rounds" / "000" / "kept.safetensors").unlink()
    with pytest.raises(RobalignError, match="kept.safetensors is missing: method.aggregate"):
        main(args(tmp_path / "stopped", "method.aggregate=true", "resume=true"))
