"""What alignment optimises: a score per rollout (and per step, for DPPO).

    reward     a learnt reward (`robalign reward` directory): rapl, rlhf, imagenet-ot, oracle
    objective  a simulated person's objective: a registered name or `module:function`
    grape      GRAPE's weighted sum: success, objectives, a learnt reward, and the policy's
               own likelihood (GRAPE's costs come from a model, not the person: a learnt
               reward beside the simulator's success is its recipe without the oracle)

Every scorer checks what it returns: an objective or reward that raises, or gives NaN or
inf, becomes a `ScoringError` that names the scorer and the episode, so the alignment loop
can stop with what it had done kept.

Glossary: T steps of one trajectory; n trajectories scored together.
"""

from __future__ import annotations

import json
import math
from typing import Callable, Sequence

import numpy as np

from robalign.errors import RobalignError
from robalign.types import Trajectory


class ScoringError(RobalignError):
    """An objective or reward that raised, or returned a value that is not finite."""


class Scorer:
    """Scores trajectories; higher is better."""

    name: str = "scorer"
    needs_frames = False  # rollouts must render the agentview camera
    image_size = 96  # the camera side the scorer wants, when it needs frames
    needs_likelihood = False  # score() reads each trajectory's policy log-likelihood

    def score(self, trajectories: Sequence[Trajectory], log_likelihoods: Sequence[float] | None = None) -> np.ndarray:
        """(n,) scores."""
        raise NotImplementedError

    def score_lookaheads(self, trajectories: Sequence[Trajectory], ended: Sequence[bool],
                         prefix: bool = True) -> np.ndarray:
        """(n,) scores of best-of-n's lookaheads: episodes cut short, whole only where `ended`.
        The default scores them as they stand; a reward that compares whole videos with the
        demos (OT) matches an unfinished one against the demos' prefixes when `prefix`."""
        return self.score(trajectories)

    def describe(self) -> str:
        """Everything that sets the scores (a resumed run must score as the first part did)."""
        return self.name

    def step_rewards(self, trajectory: Trajectory, score: float | None = None) -> np.ndarray:
        """(T,) per-step rewards summing to the trajectory's score (the default puts the
        whole score, `score` when already computed, on the last step)."""
        out = np.zeros(len(trajectory))
        out[-1] = self.score([trajectory])[0] if score is None else score
        return out


def _checked(name: str, fn: Callable, trajectory: Trajectory):
    """fn(trajectory) with its exceptions and non-finite results turned into ScoringError."""
    where = f"on the episode with seed {trajectory.provenance.get('seed')}"
    try:
        value = fn(trajectory)
    except Exception as err:  # a user objective may raise anything; we re-raise it with context
        raise ScoringError(f"{name} raised {type(err).__name__}: {err} {where}") from err
    values = np.asarray(value, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ScoringError(f"{name} returned {value!r} {where}: scores must be finite numbers")
    return values


class ObjectiveScorer(Scorer):
    """A simulated person's objective (privileged state; no frames needed)."""

    def __init__(self, objective: str | Callable[[Trajectory], float]):
        from robalign.envs.objectives import get_objective

        self.objective = get_objective(objective)
        self.name = f"objective {getattr(self.objective, 'name', objective)!r}"

    def score(self, trajectories, log_likelihoods=None):
        return np.array([float(_checked(self.name, self.objective, t)) for t in trajectories])

    def step_rewards(self, trajectory, score=None):
        if getattr(self.objective, "per_step", None) is None:
            return super().step_rewards(trajectory, score)
        steps = _checked(self.name, self.objective.steps, trajectory)
        total = self.score([trajectory])[0]
        # rank the steps as the per-step form does, shifted so they sum to the objective
        return steps - steps.mean() + total / len(trajectory)


class RewardScorer(Scorer):
    """A learnt reward; visual rewards score the rollouts' agentview frames."""

    def __init__(self, path: str):
        from robalign.envs.scene import robot_meshes
        from robalign.rewards import load_reward

        self.path, self.model = path, load_reward(path)
        self.name = f"{self.model.cfg.method} reward {path!r}"
        self.needs_frames = self.model.visual
        self.image_size = self.model.cfg.image_size
        self.look = self.model.cfg.robot_meshes if self.needs_frames else None
        if self.look is not None and self.look != robot_meshes():
            raise RobalignError(f"the reward at {path!r} learnt from frames that draw the robot with "
                                f"ROBALIGN_ROBOT_MESHES={self.look}, but this process draws it with "
                                f"{robot_meshes()}; set ROBALIGN_ROBOT_MESHES={self.look} (a reward scores "
                                f"only pictures like those it learnt from)")

    def __reduce__(self):  # to a worker process: its checkpoint path (it loads the weights there)
        return RewardScorer, (self.path,)

    def step_rewards(self, trajectory, score=None, prefix: bool = False, features=None):
        """`features`: the trajectory's frame features when already computed (model.frame_features)."""
        drawn = trajectory.provenance.get("robot_meshes")
        if self.look is not None and drawn is not None and drawn != self.look:
            raise ScoringError(f"{self.name} learnt from frames with ROBALIGN_ROBOT_MESHES={self.look}; the "
                               f"episode with seed {trajectory.provenance.get('seed')} was drawn with {drawn}")
        return _checked(self.name, lambda t: self.model.reward(t, features=features, prefix=prefix), trajectory)

    def score(self, trajectories, log_likelihoods=None):
        return np.array([float(self.step_rewards(t).sum()) for t in trajectories])

    def score_lookaheads(self, trajectories, ended, prefix=True):
        return np.array([float(self.step_rewards(t, prefix=prefix and not e).sum())
                         for t, e in zip(trajectories, ended, strict=True)])


class GrapeScorer(Scorer):
    """GRAPE's trajectory cost as a score: w_success * success + sum_i w_i * objective_i
    + w_reward * (a learnt reward) + w_likelihood * (the policy's log-likelihood per step).

    Success comes from the simulator, not from the person, so weighing it beside a reward
    learnt from preferences spends no extra answers. With w_success larger than w_reward
    times the reward's spread, success ranks first and the reward orders what is left."""

    def __init__(self, success: float = 1.0, objectives: dict[str, float] | None = None, likelihood: float = 0.0,
                 reward: float = 0.0, reward_path: str | None = None):
        if objectives is not None and not isinstance(objectives, dict):
            raise RobalignError(f"grape objectives must map objective names to weights, e.g. {{clearance: 10.0}}; "
                                f"got {objectives!r}")
        for key, value in (("success", success), ("likelihood", likelihood), ("reward", reward),
                           *(objectives or {}).items()):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise RobalignError(f"grape weight {key}={value!r} must be a finite number")
        if reward and not reward_path:
            raise RobalignError(f"grape.reward={reward} weighs a learnt reward, but none was given: pass "
                                f"reward=PATH (a directory written by `robalign reward`)")
        if reward_path and not reward:
            raise RobalignError(f"scorer=grape was given reward={reward_path!r} but weighs it 0; set grape.reward "
                                f"to its weight (e.g. 0.2), or drop reward=")
        self.weights = {"success": float(success), "likelihood": float(likelihood), "reward": float(reward)}
        self.objectives = {name: (ObjectiveScorer(name), float(w)) for name, w in (objectives or {}).items()}
        self.reward = RewardScorer(reward_path) if reward_path else None
        if self.reward is not None:
            self.needs_frames, self.image_size = self.reward.needs_frames, self.reward.image_size
        self.needs_likelihood = likelihood != 0
        self.name = "grape score"

    def _terms(self, trajectories, reward_scores: np.ndarray | None) -> np.ndarray:
        """(n,) every weighted term but the likelihood; `reward_scores` the learnt reward's."""
        out = self.weights["success"] * np.array([float(t.success) for t in trajectories])
        for scorer, weight in self.objectives.values():
            out = out + weight * scorer.score(trajectories)
        if self.reward is not None:
            out = out + self.weights["reward"] * reward_scores
        return out

    def score(self, trajectories, log_likelihoods=None):
        rewards = self.reward.score(trajectories) if self.reward is not None else None
        out = self._terms(trajectories, rewards)
        if self.needs_likelihood:
            if log_likelihoods is None:
                raise RobalignError("the grape score weighs the policy likelihood, but none was given")
            per_step = np.asarray(log_likelihoods, dtype=np.float64) / np.array([len(t) for t in trajectories])
            out = out + self.weights["likelihood"] * per_step
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out))[0])
            raise ScoringError(f"the grape score is {out[bad]} on the episode with seed "
                               f"{trajectories[bad].provenance.get('seed')} (its policy log-likelihood: "
                               f"{None if log_likelihoods is None else log_likelihoods[bad]})")
        return out

    def score_lookaheads(self, trajectories, ended, prefix=True):
        # the learnt reward scores an unfinished lookahead as its own scorer would (OT: against
        # the demos' prefixes); success counts only where the episode has already ended in it
        if self.needs_likelihood:
            return super().score_lookaheads(trajectories, ended, prefix)  # refused by best-of-n before this
        rewards = self.reward.score_lookaheads(trajectories, ended, prefix) if self.reward is not None else None
        return self._terms(trajectories, rewards)

    def step_rewards(self, trajectory, score=None):
        if self.reward is None or self.needs_likelihood:
            return super().step_rewards(trajectory, score)
        # the learnt reward's own per-step rewards, the rest of the score on the last step
        out = self.weights["reward"] * self.reward.step_rewards(trajectory)
        out[-1] += self._terms([trajectory], np.zeros(1))[0]
        return out

    def describe(self):
        # without a reward the words are those of runs made before grape weighed one (resumable)
        weights = {k: w for k, w in self.weights.items() if k != "reward" or self.reward is not None}
        reward = f" reward {self.reward.path!r}" if self.reward is not None else ""
        return (f"grape score {json.dumps(weights, sort_keys=True)} "
                f"{sorted((n, w) for n, (_, w) in self.objectives.items())}{reward}")


def make_scorer(kind: str, reward: str | None = None, objective: str | Callable | None = None,
                grape: dict | None = None) -> Scorer:
    """The scorer `kind` (reward | objective | grape) from its settings."""
    if kind == "reward":
        if not reward:
            raise RobalignError("scorer=reward needs reward=PATH: a directory written by `robalign reward`")
        return RewardScorer(reward)
    if kind == "objective":
        if not objective:
            raise RobalignError("scorer=objective needs objective=NAME (see `robalign envs`) or module:function")
        return ObjectiveScorer(objective)
    if kind == "grape":
        grape = dict(grape or {})
        unknown = sorted(set(grape) - {"success", "objectives", "likelihood", "reward"})
        if unknown:
            raise RobalignError(f"unknown grape setting(s) {', '.join(unknown)}; valid: success, objectives, "
                                f"reward, likelihood")
        return GrapeScorer(**grape, reward_path=reward)
    raise RobalignError(f"unknown scorer {kind!r}; valid choices: reward, objective, grape")
