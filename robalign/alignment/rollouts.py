"""Rollouts for alignment: episodes that remember every chunk the policy sampled.

The loop rolls K episodes out from each of S initial states. Each episode is a Trajectory
(what scorers and metrics read) plus its chunks: the observation window the policy saw,
the chunk it sampled (`ChunkSample.sample`) and, for DPPO, the denoising chain. The losses
re-score exactly those samples under the current and the reference weights.

Glossary: S initial states per round, K rollouts per state, C chunks in one episode,
To observation steps, Hz sampled chunk length, A action size, N denoising steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from robalign.policies.pretrained import ChunkActor
from robalign.types import Trajectory


@dataclasses.dataclass
class Chunk:
    """One planning step: obs {key: (To, ...) tensor, or a string for text}, sample (Hz, A),
    start (the episode step it began at), chain (N+1, Hz, A) and log_probs when recorded,
    executed: how many of its actions ran (fewer than K when the episode ended; None: K)."""

    obs: dict
    sample: torch.Tensor
    start: int
    chain: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None
    executed: int | None = None


@dataclasses.dataclass
class Rollout:
    trajectory: Trajectory
    chunks: list[Chunk]
    state: int  # index of its initial state within the round
    score: float = float("nan")
    step_rewards: np.ndarray | None = None  # (T,) per-step rewards (dppo)


# `explore` as (chunks, temperature): no chunk sampled at a changed temperature. The default
# wherever rollouts are collected; the rounds pass AlignConfig's explore_* instead.
NO_EXPLORE: tuple[int, float] = (0, 1.0)


class RecordingActor(ChunkActor):
    """A ChunkActor that keeps each chunk it samples (see `Chunk`); `explore` (n, temperature)
    samples its first n chunks at that temperature (policies with `samples_at_temperature`)."""

    def __init__(self, policy, seed: int, sampling: dict | None = None, explore: tuple[int, float] = NO_EXPLORE):
        super().__init__(policy, seed)
        self.sampling, self.chunks, self.steps = dict(sampling or {}), [], 0
        self.explore_chunks, self.explore_temperature = explore

    def act(self, obs):
        action = super().act(obs)
        self.steps += 1
        return action

    def plan(self, window):
        early = {"temperature": self.explore_temperature} if len(self.chunks) < self.explore_chunks else {}
        out = self.policy.sample_chunk(window, generator=self.generator, **self.sampling, **early)
        obs = {k: (v[0] if isinstance(v, list) else v[0].cpu()) for k, v in window.items()}
        self.chunks.append(Chunk(obs, out.sample[0].cpu(), self.steps,
                                 None if out.chain is None else out.chain[0].cpu(),
                                 None if out.log_probs is None else out.log_probs[0].cpu()))
        return out.executed


def noise_seed(*parts: int) -> int:
    """A policy-noise seed for (seed, round, state, k): distinct streams, same on resume."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def collect(policy, env_name: str, env_seeds: list[int], noise_seeds: list[int], states: list[int], options: dict,
            launcher: str = "vector", num_envs: int = 2, sampling: dict | None = None, progress=None,
            explore: tuple[int, float] = NO_EXPLORE) -> list[Rollout]:
    """One episode per (env seed, noise seed) with a RecordingActor each; `states` labels
    each episode's initial state; `sampling` goes to `policy.sample_chunk` (e.g. stochastic=True);
    `explore` to the actors."""
    from robalign.policies.evaluation import run_serial, run_vector

    actors: dict[int, RecordingActor] = {}

    def make_actor(i: int, seed: int) -> RecordingActor:
        actors[i] = RecordingActor(policy, noise_seeds[i], sampling, explore)
        return actors[i]

    if launcher == "serial" or num_envs == 1:
        trajectories = run_serial(policy, env_name, env_seeds, options, progress, make_actor=make_actor)
    else:
        trajectories = run_vector(policy, env_name, env_seeds, options, num_envs, progress, make_actor=make_actor)
    out = []
    for i, t in enumerate(trajectories):
        chunks = actors[i].chunks
        for c, nxt in zip(chunks, [c.start for c in chunks[1:]] + [len(t)]):
            c.executed = nxt - c.start
        out.append(Rollout(t, chunks, states[i]))
    return out


def preference_pairs(rollouts: list[Rollout], m: int, margin: float = 0.0,
                     successful: bool = False) -> list[tuple[Rollout, Rollout]]:
    """(chosen, rejected) pairs: per initial state, each of the top m rollouts against each
    of the bottom m (GRAPE), skipping pairs whose scores differ by `margin` or less.
    `successful`: rank and pair only the rollouts that reached the task's success."""
    by_state: dict[int, list[Rollout]] = {}
    for r in rollouts:
        if r.trajectory.success or not successful:
            by_state.setdefault(r.state, []).append(r)
    pairs = []
    for group in by_state.values():
        ranked = sorted(group, key=lambda r: -r.score)
        k = min(m, len(ranked) // 2)
        for w in ranked[:k]:
            for lo in ranked[len(ranked) - k:]:
                if w.score - lo.score > margin:
                    pairs.append((w, lo))
    return pairs


def stack_obs(chunks: list[Chunk], device) -> dict:
    """A batch observation {key: (B, To, ...)} (text: a list of B strings) from chunks."""
    out = {}
    for key, value in chunks[0].obs.items():
        if isinstance(value, str):
            out[key] = [c.obs[key] for c in chunks]
        else:
            out[key] = torch.stack([c.obs[key] for c in chunks]).to(device)
    return out
