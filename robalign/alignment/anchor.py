"""The imitation anchor: the loss beside an update that keeps the policy near what it was taught.

With demos= it is the demos' own training loss; without, the chosen rollouts' chunk NLL.

A demo anchor keeps everything the demos do, including what the person does not want: on
reach-around more than half of the demos pass within 5 cm of the vase. With
`method.anchor_keep` < 1 the anchor draws only from the demo windows whose actions lead to
the steps the run's learnt reward scores highest, a filtered behaviour cloning of the
demos: RAPL's per-frame optimal-transport costs say which stretch of a demo departs from
what the person preferred, so as to drop a close pass and keep the start and the way to
the goal, which every demo shares. A demo that is one of the reward's own OT references
is scored against the others (leave-one-out). Measured on reach-around (README, Figures ->
Alignment): no gain at keep 0.5, a loss at 0.3; even an oracle's filter (only the demos that
keep clear) moved an anchored round by one episode in 40.

Glossary: F frames over all demo episodes (one window per frame), To observation steps,
Hz action steps a window predicts.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from robalign.errors import RobalignError

ANCHOR_BATCH = 64  # demo windows (or chosen chunks) per anchor evaluation


class DemoAnchor:
    """The demos' training loss over a subset of their windows (all of them by default)."""

    def __init__(self, windows, index: torch.Tensor | None = None, figures: dict | None = None):
        self.windows = windows
        self.index = torch.arange(len(windows)) if index is None else index  # (K,) the windows drawn from
        self.figures = figures or {"kept_share": 1.0}

    def __call__(self, policy, generator: torch.Generator) -> torch.Tensor:
        pick = self.index[torch.randint(len(self.index), (ANCHOR_BATCH,), generator=generator)]
        return policy.compute_loss(self.windows.batch(pick, policy.device))


def make_anchor(aligner, demo_anchor: DemoAnchor | None, chosen: list, generator: torch.Generator):
    """The anchor as a function of the policy: the demos' loss, or the chosen rollouts' chunk NLL."""
    if demo_anchor is not None:
        return lambda policy: demo_anchor(policy, generator)
    chunks = [c for r in chosen for c in r.chunks]

    def on_chosen(policy):
        pick = torch.randint(len(chunks), (min(ANCHOR_BATCH, len(chunks)),), generator=generator).tolist()
        return aligner.chunk_nll(policy, [chunks[i] for i in pick])
    return on_chosen


def window_rewards(windows, step_rewards: torch.Tensor) -> torch.Tensor:
    """(F,) per-step rewards of the demo frames -> (F,) each window's mean reward over the
    steps its actions lead to: frames t .. t - To + Hz, cut at its episode's end."""
    span = max(1, windows.horizon - windows.n_obs_steps + 1)
    frames = torch.arange(len(windows))[:, None] + torch.arange(span)
    end = windows.episode_end[:, None]
    valid = frames <= end
    values = step_rewards[frames.clamp(max=end)]
    return (values * valid).sum(1) / valid.sum(1)


def reward_filtered(windows, demos: str | Path, scorer, keep: float, progress: bool = False) -> DemoAnchor:
    """A DemoAnchor over the `keep` share of demo windows the scorer's reward ranks highest."""
    from tqdm.auto import tqdm

    from robalign.rewards.data import demos_from_dataset

    from .scorers import RewardScorer

    if not isinstance(scorer, RewardScorer):
        raise RobalignError(f"method.anchor_keep={keep} ranks the demo steps by a learnt reward's per-step "
                            f"rewards; the scorer is {scorer.describe()}: use scorer=reward reward=PATH, or set "
                            f"method.anchor_keep=1")
    episodes = list(demos_from_dataset(demos, max_episodes=windows.num_episodes).values())
    lengths = [int(n) for n in torch.unique_consecutive(windows.episode_start, return_counts=True)[1]]
    if [len(t) for t in episodes] != lengths:
        raise RobalignError(f"demos={str(demos)!r}: its video has episodes of {[len(t) for t in episodes][:5]}... "
                            f"frames but its table {lengths[:5]}...; re-record the demos")
    rewards, left_out = [], 0
    for t in tqdm(episodes, desc="score demo steps", unit="episode", disable=not progress, leave=False):
        # the backbone runs once per demo: the leave-one-out check and the scoring share its features
        feats = scorer.model.frame_features(t) if scorer.model.visual else None
        with _without_itself(scorer.model, feats) as found:
            rewards.append(torch.as_tensor(scorer.step_rewards(t, features=feats), dtype=torch.float64))
            left_out += found
    per_window = window_rewards(windows, torch.cat(rewards))
    threshold = float(torch.quantile(per_window, 1.0 - keep))
    kept = (per_window >= threshold).numpy()
    modes = np.asarray(windows.modes)
    figures = {"kept_share": float(kept.mean()), "kept_windows": int(kept.sum()), "windows": len(windows),
               "threshold": threshold, "scored_without_itself": left_out,
               "kept_share_by_mode": {str(m): float(kept[modes == m].mean()) for m in sorted(set(modes))}}
    return DemoAnchor(windows, torch.from_numpy(np.flatnonzero(kept)), figures)


@contextlib.contextmanager
def _without_itself(model, feats: torch.Tensor | None):
    """An OT reward whose references include this demo (trained with demos=) would match it
    against itself at no cost, and every such demo would rank first: while scoring it (its
    frame features `feats`), the reward's references leave it out (leave-one-out). Yields 1
    when it was left out, else 0."""
    references = getattr(model, "demos", None)
    if not references or feats is None:
        yield 0
        return
    others = [d for d in references if not (d.shape == feats.shape and torch.allclose(d, feats, atol=1e-5))]
    if len(others) == len(references):
        yield 0
        return
    if not others:
        raise RobalignError("the reward's only OT reference is a demo of the anchor: it cannot rank that demo "
                            "against anything else; train the reward with more references (demos_top=K or demos=)")
    model.demos = others
    try:
        yield 1
    finally:
        model.demos = references
