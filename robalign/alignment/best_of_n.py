"""Best-of-N: the training-free baseline. At every chunk the policy samples N candidate
chunks; each is tried in the simulator from the current state (save the state, execute the
chunk, score the episode so far plus that lookahead, restore) and the best one runs.

Our scorers read whole trajectories (a visual reward reads their frames), so a candidate's
worth is only known from its outcome: that takes a simulator, not the real arm. Best-of-N
is therefore an upper reference for what a reward can pick out of the policy's own
samples, not a way to deploy. The policy's weights never change.

With `lookahead` L > 0 each candidate is followed by L more chunks the policy itself plans
from where the candidate left it (the same noise for every candidate), so a candidate is
judged by where it leads, not only by its own few steps: the cost is (1 + L) x N chunks
of simulation per executed chunk.

A lookahead that has not ended is a prefix of an episode. An OT reward (RAPL) spreads a
video's frames over the whole of each demo, so it would judge a prefix against demo frames
it has not reached; with `unfinished="prefix"` (the default) such a reward matches it
against the demos' first as many frames instead. On the 40 rollouts behind the README's
RAPL reward, the first 8 steps' reward ranks the episodes' final clearance at Spearman rho
0.76 that way, 0.15 against whole demos.

Glossary: N candidates per chunk, Ka executed actions per chunk, L follow-up chunks, A action size.
"""

from __future__ import annotations

import collections

import numpy as np
import torch

from robalign.errors import RobalignError
from robalign.policies.pretrained import ChunkActor
from robalign.rollout import EpisodeRecorder, episode_provenance, record_episode
from robalign.types import Trajectory


class BestOfNActor(ChunkActor):
    """Acts one episode in `env` (which it steps for lookaheads, and leaves as it found it).

    `scorer.score([trajectories])` ranks the N lookahead episodes (the steps so far plus
    one candidate chunk); ties go to the earliest candidate. `choices` records, per chunk,
    the candidates' scores and which one ran."""

    def __init__(self, policy, seed: int, env, scorer, n: int, provenance: dict, lookahead: int = 0,
                 unfinished: str = "prefix"):
        super().__init__(policy, seed)
        self.env, self.scorer, self.n, self.provenance = env, scorer, n, provenance
        self.lookahead, self.seed, self.prefix = lookahead, int(seed), unfinished == "prefix"
        self.so_far = EpisodeRecorder()  # the steps taken, as record_episode records them
        self.choices: list[dict] = []

    def act(self, obs):
        info = self.env.current_info()  # what record_episode records beside this obs
        self.obs = obs  # where the lookaheads start
        action = super().act(obs)
        self.so_far.add(obs, info, action)
        return action

    def plan(self, window):
        batch = {k: (v * self.n if isinstance(v, list) else v.expand(self.n, *v.shape[1:])) for k, v in window.items()}
        candidates = self.policy.predict_action_chunk(batch, generator=self.generator)  # (N, Ka, A)
        saved = self.env.save_state()
        follow_seed = int(np.random.SeedSequence([self.seed, len(self.choices)]).generate_state(1)[0])
        lookaheads, ended = [], []
        for chunk in candidates.cpu().numpy():
            trajectory, done = self._lookahead(self.obs, chunk, follow_seed)
            lookaheads.append(trajectory)
            ended.append(done)
            self.env.restore_state(saved)
        scores = np.asarray(self.scorer.score_lookaheads(lookaheads, ended, self.prefix), dtype=float)
        best = int(np.argmax(scores))
        self.choices.append({"step": len(self.so_far.actions), "scores": [round(float(s), 6) for s in scores],
                             "chosen": best})
        return candidates[best:best + 1]

    def _lookahead(self, obs: dict, chunk: np.ndarray, follow_seed: int) -> tuple[Trajectory, bool]:
        """The episode so far plus `chunk` executed from the current state, then `lookahead`
        chunks the policy plans itself (noise `follow_seed`), until the episode ends; and
        whether it ended."""
        rec = self.so_far.copy()
        follow = ChunkActor(self.policy, follow_seed)  # the policy's own continuation
        follow.history = collections.deque(self.history, maxlen=self.history.maxlen)  # obs already seen
        follow.queue = collections.deque(chunk[1:])
        action, info, ended = chunk[0], self.env.current_info(), False
        for _ in range(len(chunk) * (1 + self.lookahead)):
            action = np.asarray(action, dtype=np.float32)
            rec.add(obs, info, action)
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                ended = True
                break
            action = follow.act(obs)
        return rec.finish(info["is_success"], self.env.instruction, None, self.provenance), ended


def check_scorer(scorer) -> None:
    """Refuse a scorer that cannot rank lookaheads: one that reads the policy's likelihood."""
    if scorer.needs_likelihood:
        raise RobalignError("best-of-n ranks candidates by their simulated outcome; a scorer that reads the "
                            "policy's likelihood (grape with grape.likelihood != 0) cannot score them; set "
                            "grape.likelihood=0 or use scorer=reward or scorer=objective")


def best_of_n_episode(policy, env, scorer, seed: int, noise_seed: int, n: int, lookahead: int = 0,
                      unfinished: str = "prefix") -> tuple[Trajectory, list[dict]]:
    """One best-of-N episode of `env` from env seed `seed`; the policy's sampling noise is
    `noise_seed`. Returns the trajectory and its per-chunk choices."""
    actor_name = {"actor": f"best-of-{n}:{policy.name}"}
    actor = BestOfNActor(policy, noise_seed, env, scorer, n, episode_provenance(env, seed, actor_name), lookahead,
                         unfinished)
    with torch.no_grad():
        trajectory = record_episode(env, actor.act, seed, provenance=actor_name)
    return trajectory, actor.choices


def best_of_n_episodes(policy, env_name: str, seeds: list[int], noise_seeds: list[int], options: dict, scorer,
                       n: int, lookahead: int = 0, progress=None, unfinished: str = "prefix", workers: int = 1,
                       policy_dir: str | None = None) -> tuple[list[Trajectory], list[list[dict]]]:
    """One best-of-N episode per env seed; returns the trajectories and each one's per-chunk
    choices. With `workers` > 1 the episodes run in that many processes
    (robalign.episode_pool), each loading the policy from `policy_dir` (the same weights as
    `policy`) and its own copy of the scorer; an episode depends on its seeds alone, so
    the results are the same as one by one in this process."""
    import robalign.envs as envs
    from robalign.episode_pool import EpisodePool

    if n < 2:
        raise RobalignError(f"best-of-n needs n >= 2 candidates per chunk; got n={n}")
    if lookahead < 0:
        raise RobalignError(f"best-of-n's lookahead is a number of follow-up chunks >= 0; got {lookahead}")
    if unfinished not in ("prefix", "whole"):
        raise RobalignError(f"best-of-n's unfinished is how an unfinished lookahead is scored: prefix or whole; "
                            f"got {unfinished!r}")
    check_scorer(scorer)
    trajectories, choices = [], []

    def done(result):
        trajectories.append(result[0])
        choices.append(result[1])
        if progress is not None:
            progress.update(1)

    if workers > 1 and len(seeds) > 1:
        if policy_dir is None:
            raise RobalignError("best-of-n in worker processes loads the policy in each: give policy_dir")
        settings = {"scorer": scorer, "n": n, "lookahead": lookahead, "unfinished": unfinished}
        with EpisodePool(env_name, options, workers, str(policy_dir), episodes=len(seeds), best_of_n=settings) as pool:
            for result in pool.ordered(pool.best_of_n_job(s, z) for s, z in zip(seeds, noise_seeds, strict=True)):
                done(result)
        return trajectories, choices
    env = envs.make(env_name, **options)
    try:
        for seed, noise in zip(seeds, noise_seeds, strict=True):
            done(best_of_n_episode(policy, env, scorer, seed, noise, n, lookahead, unfinished))
    finally:
        env.close()
    return trajectories, choices
