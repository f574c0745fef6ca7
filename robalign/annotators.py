"""Simulated people: Boltzmann-rational (Bradley-Terry) answers from an objective.

A simulated annotator scores each trajectory with an objective (higher is better) and
prefers A over B with probability sigmoid(rationality * (score_A - score_B)). Scores
within `tie_margin` of each other are a tie. Triplets are ranked by Plackett-Luce: the
best is drawn with softmax(rationality * scores), then the best of the rest.
`rationality=inf` answers deterministically (a perfectly consistent person).

Rationality has the objective's units inverted: for `clearance` (metres) a rationality of
200 means a 1 cm difference is chosen correctly with probability sigmoid(2) = 0.88.
`rationality=None` takes the one the objective registered (`default_rationality`).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import numpy as np

from robalign.errors import RobalignError
from robalign.types import Trajectory

Choice = Literal["A", "B", "tie"]


def default_rationality(objective: str | Callable[[Trajectory], float]) -> float:
    """The rationality `objective` registered (clearance 200 per metre, handle-grasp 10 per
    share), or inf (a consistent person) for one that registered none or a plain callable:
    its units are unknown, so no finite scale would mean the same thing."""
    from robalign.envs.objectives import get_objective

    registered = getattr(get_objective(objective), "rationality", None)
    return math.inf if registered is None else float(registered)


class SimulatedAnnotator:
    """Answers preference queries as a noisy-rational person who cares about `objective`.

    Args:
        objective: a registered objective name (see robalign.envs.objectives) or any
            callable `trajectory -> float`, higher is better.
        rationality: inverse temperature beta > 0 (inf: always picks the better one);
            None: the objective's registered one (inf where it registers none).
        tie_margin: score differences at or below this are answered "tie" (>= 0).
        seed: seed of the annotator's own randomness.
    """

    def __init__(
        self,
        objective: str | Callable[[Trajectory], float],
        rationality: float | None = math.inf,
        tie_margin: float = 0.0,
        seed: int | None = None,
    ):
        from robalign.envs.objectives import get_objective

        if rationality is None:
            rationality = default_rationality(objective)
        if not isinstance(rationality, (int, float)) or math.isnan(rationality) or rationality <= 0:
            raise RobalignError(f"rationality must be a number > 0 (inf allowed); got {rationality!r}")
        if not isinstance(tie_margin, (int, float)) or not math.isfinite(tie_margin) or tie_margin < 0:
            raise RobalignError(f"tie_margin must be a finite number >= 0; got {tie_margin!r}")
        self.objective = get_objective(objective)
        self.rationality, self.tie_margin = float(rationality), float(tie_margin)
        self._rng = np.random.default_rng(seed)

    def score(self, trajectory: Trajectory) -> float:
        value = float(self.objective(trajectory))
        if not math.isfinite(value):
            raise RobalignError(f"objective returned {value} for a trajectory; it must be finite")
        return value

    def prob_prefers_a(self, a: Trajectory, b: Trajectory) -> float:
        """P(A preferred over B) under Bradley-Terry, ignoring ties."""
        diff = self.score(a) - self.score(b)
        if math.isinf(self.rationality):
            return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
        return 1.0 / (1.0 + math.exp(-self.rationality * diff))

    def compare(self, a: Trajectory, b: Trajectory) -> Choice:
        """Which of two trajectories this person prefers: "A", "B" or "tie"."""
        if abs(self.score(a) - self.score(b)) <= self.tie_margin:
            return "tie"
        return "A" if self._rng.random() < self.prob_prefers_a(a, b) else "B"

    def rank(self, trajectories: Sequence[Trajectory]) -> list[int]:
        """Indices of `trajectories` from most to least preferred (Plackett-Luce draw)."""
        if len(trajectories) < 2:
            raise RobalignError(f"ranking needs at least 2 trajectories; got {len(trajectories)}")
        scores = np.array([self.score(t) for t in trajectories])
        remaining, order = list(range(len(scores))), []
        while remaining:
            s = scores[remaining]
            if math.isinf(self.rationality):
                best = remaining[int(np.argmax(s))]
            else:
                logits = self.rationality * (s - s.max())
                p = np.exp(logits) / np.exp(logits).sum()
                best = remaining[int(self._rng.choice(len(remaining), p=p))]
            order.append(best)
            remaining.remove(best)
        return order
