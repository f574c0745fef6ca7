"""The Franka arm's published joint limits.

All numbers come from Franka's documentation, "Robot and interface specifications"
(https://frankaemika.github.io/docs/control_parameters.html): the "Limits for Panda" table
for ``FrankaLimits.panda()`` and the "Limits for Franka Research 3" table for
``FrankaLimits.fr3()``. Units: rad, rad/s, rad/s^2, rad/s^3; one value per joint, joint 1 first.

These are the hardware limits the controller enforces (it stops the arm with a reflex when a
command breaks them). Command well inside them: ``SafetyConfig`` adds a position margin and
scales velocity down. The FR3 docs also give position-dependent velocity limits near the joint
ends; they are not modelled here, the position margin and velocity scale keep clear of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from robalign.errors import RobalignError


def _joint_array(name: str, values) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    if arr.shape != (7,) or not np.all(np.isfinite(arr)):
        raise RobalignError(f"{name} must be 7 finite numbers (one per joint), got {values!r}")
    arr.setflags(write=False)  # frozen means frozen: no one edits a limit in place
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class FrankaLimits:
    """Joint-space limits of one Franka arm; each array is (7,) float64, read-only."""

    name: str
    q_min: np.ndarray  # lowest joint position, rad
    q_max: np.ndarray  # highest joint position, rad
    dq_max: np.ndarray  # highest joint speed |dq/dt|, rad/s
    ddq_max: np.ndarray  # highest joint acceleration |d2q/dt2|, rad/s^2
    dddq_max: np.ndarray  # highest joint jerk |d3q/dt3|, rad/s^3

    def __post_init__(self):
        for field in ("q_min", "q_max", "dq_max", "ddq_max", "dddq_max"):
            object.__setattr__(self, field, _joint_array(field, getattr(self, field)))
        if not np.all(self.q_min < self.q_max):
            raise RobalignError(f"{self.name}: q_min must be below q_max for every joint")
        for field in ("dq_max", "ddq_max", "dddq_max"):
            if not np.all(getattr(self, field) > 0):
                raise RobalignError(f"{self.name}: {field} must be positive for every joint")

    @classmethod
    def panda(cls) -> "FrankaLimits":
        """Franka Emika Panda ("Limits for Panda" in Franka's specifications)."""
        return cls(
            name="panda",
            q_min=[-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973],
            q_max=[2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973],
            dq_max=[2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100],
            ddq_max=[15, 7.5, 10, 12.5, 15, 20, 20],
            dddq_max=[7500, 3750, 5000, 6250, 7500, 10000, 10000],
        )

    @classmethod
    def fr3(cls) -> "FrankaLimits":
        """Franka Research 3 ("Limits for Franka Research 3" in Franka's specifications)."""
        return cls(
            name="fr3",
            q_min=[-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159],
            q_max=[2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159],
            dq_max=[2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26],
            ddq_max=[10, 10, 10, 10, 10, 10, 10],
            dddq_max=[5000, 5000, 5000, 5000, 5000, 5000, 5000],
        )
