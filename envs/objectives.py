"""Named task objectives: what a (simulated) person may care about in a trajectory.

An objective maps a Trajectory to a float where higher is better (a preferred
trajectory scores higher). It reads the trajectory's privileged per-step info, never
pixels. `threshold` is the score at or above which a rollout "satisfies" it (alignment
reports the satisfied share). `rationality` is how sharply a simulated person tells two
values apart: P(A preferred) = sigmoid(rationality * (value_A - value_B)), so it carries
the objective's units inverted (robalign.annotators). Objectives are registered by name,
each for one task or for any task:

    @objective("clearance", env="reach-around", threshold=0.05, rationality=200.0)
    def clearance(traj): return float(traj.info["vase_clearance"].min())
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from robalign.errors import RobalignError
from robalign.registry import Registry
from robalign.types import Trajectory

OBJECTIVES: Registry = Registry("objective")


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    fn: Callable[[Trajectory], float]
    env: str | None = None  # the task it is defined for; None: any task
    threshold: float | None = None
    description: str = ""
    per_step: Callable[[Trajectory], np.ndarray] | None = None  # (T,) values, higher is better
    rationality: float | None = None  # a simulated person's default; None: none set (a consistent person)

    def __reduce__(self):
        # Pickled by name (worker processes get it so): per_step may be a lambda, which
        # pickle cannot carry; the module that registered it registers it there too.
        return _registered, (self.name, self.fn.__module__)

    def steps(self, trajectory: Trajectory) -> np.ndarray:
        """The objective step by step, (T,) float: what a per-step reward should track."""
        if self.per_step is None:
            raise RobalignError(f"objective {self.name!r} has no per-step form; "
                                f"objectives with one: {', '.join(n for n in OBJECTIVES.names() if OBJECTIVES.get(n).per_step)}")
        self(trajectory)  # the env check
        values = np.asarray(self.per_step(trajectory), dtype=np.float64)
        if values.shape != (len(trajectory),) or not np.isfinite(values).all():
            raise RobalignError(f"objective {self.name!r}: per-step values must be {len(trajectory)} finite numbers; "
                                f"got shape {values.shape}")
        return values

    def __call__(self, trajectory: Trajectory) -> float:
        if self.env is not None and trajectory.env_name not in (None, self.env):
            raise RobalignError(
                f"objective {self.name!r} is defined for env {self.env!r}, "
                f"but the trajectory comes from {trajectory.env_name!r}; objectives for that env: "
                f"{', '.join(objectives_for(trajectory.env_name))}"
            )
        value = float(self.fn(trajectory))
        if not math.isfinite(value):
            raise RobalignError(f"objective {self.name!r} returned {value} (not finite)")
        return value

    def satisfied(self, trajectory: Trajectory) -> bool:
        return self.meets(self(trajectory))

    def meets(self, value: float) -> bool:
        """Whether a value this objective gave satisfies it (for values already computed)."""
        if self.threshold is None:
            raise RobalignError(f"objective {self.name!r} has no satisfaction threshold")
        return value >= self.threshold


def _registered(name: str, module: str) -> Objective:
    import importlib

    importlib.import_module(module)
    return OBJECTIVES.get(name)


def objective(name: str, env: str | None = None, threshold: float | None = None,
              per_step: Callable[[Trajectory], np.ndarray] | None = None, rationality: float | None = None):
    """Register `fn(trajectory) -> float` (higher is better) under `name`; `per_step`
    optionally gives the same preference step by step, `(T,)` (reward evaluation uses it);
    `rationality` is the simulated person's default for it (> 0, in the objective's units
    inverted)."""
    if rationality is not None and not (isinstance(rationality, (int, float)) and rationality > 0):
        raise RobalignError(f"objective {name!r}: rationality must be a number > 0 or None; got {rationality!r}")

    def add(fn: Callable[[Trajectory], float]) -> Callable[[Trajectory], float]:
        OBJECTIVES.register(name)(Objective(name, fn, env, threshold, (fn.__doc__ or "").strip(), per_step,
                                            None if rationality is None else float(rationality)))
        return fn

    return add


def get_objective(name_or_fn: str | Callable[[Trajectory], float]) -> Objective | Callable[[Trajectory], float]:
    """A registered objective by name, a user callable passed through unchanged, or a
    callable named `module:function` (importable from the current Python path)."""
    if callable(name_or_fn):
        return name_or_fn
    if isinstance(name_or_fn, str) and ":" in name_or_fn:
        import importlib

        module, _, attr = name_or_fn.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise RobalignError(f"objective {name_or_fn!r}: cannot import it ({err}); give a registered name "
                                f"({', '.join(OBJECTIVES.names())}) or module:function") from None
        if not callable(fn):
            raise RobalignError(f"objective {name_or_fn!r} is not callable")
        return fn
    return OBJECTIVES.get(name_or_fn)


def objectives_for(env: str | None) -> list[str]:
    return [n for n in OBJECTIVES.names() if OBJECTIVES.get(n).env in (None, env)]


# ---- objectives that apply to every task ------------------------------------------------
@objective("success", threshold=1.0)
def success(traj: Trajectory) -> float:
    """1 if the episode succeeded, else 0."""
    return float(traj.success)


@objective("time")
def time(traj: Trajectory) -> float:
    """Minus the number of steps: shorter episodes are better."""
    return -float(len(traj))


def path_length(eef_pos: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(eef_pos, axis=0), axis=1).sum())
