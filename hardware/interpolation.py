"""Smooth joint moves that respect the arm's velocity, acceleration and jerk limits.

A quintic (minimum-jerk) profile starts and ends at rest with zero acceleration:

    q(t) = q0 + (q1 - q0) * s(t / T),   s(u) = 10 u^3 - 15 u^4 + 6 u^5,   0 <= u <= 1

Its peaks, per joint with d = |q1 - q0|, are

    velocity      max s'   = 15/8     -> 1.875 d / T
    acceleration  max s''  = 10/sqrt3 -> 5.7735 d / T^2
    jerk          max s''' = 60       -> 60 d / T^3

so the shortest duration that keeps every joint within dq_max, ddq_max and dddq_max is the
largest of 1.875 d / dq_max, sqrt(5.7735 d / ddq_max) and cbrt(60 d / dddq_max). A requested
duration shorter than that is stretched. Sampled finite differences never exceed these
continuous peaks (a k-th difference over dt^k is an average of the k-th derivative).

Positions are not clamped: send the endpoints through the SafetyFilter first. s is monotonic
on [0, 1], so the path stays between q0 and q1.
"""

from __future__ import annotations

import math

import numpy as np

from robalign.errors import RobalignError
from robalign.hardware.limits import FrankaLimits

_PEAK_VEL, _PEAK_ACC, _PEAK_JERK = 15 / 8, 10 / math.sqrt(3), 60.0
_MAX_STEPS = 10_000_000  # 2.8 h at 1 kHz, 560 MB of float64: anything longer is a mistake


def min_duration(q0: np.ndarray, q1: np.ndarray, limits: FrankaLimits) -> float:
    """Shortest quintic move from q0 to q1 (s) within the limits' velocity, acceleration and jerk."""
    d = np.abs(np.asarray(q1, np.float64) - np.asarray(q0, np.float64))
    need = np.maximum.reduce([_PEAK_VEL * d / limits.dq_max, np.sqrt(_PEAK_ACC * d / limits.ddq_max),
                              np.cbrt(_PEAK_JERK * d / limits.dddq_max)])
    return float(need.max()) * (1 + 1e-9)  # a hair longer, so rounding cannot reach a limit


def _joint_vector(name: str, q) -> np.ndarray:
    arr = np.asarray(q)
    if arr.shape != (7,) or arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
        raise RobalignError(f"{name} must be 7 finite floats (joint positions, rad); got {q!r}")
    return arr.astype(np.float64)


def interpolate(q0: np.ndarray, q1: np.ndarray, duration: float, limits: FrankaLimits,
                dt: float = 0.001) -> np.ndarray:
    """(N, 7) float64 joint positions every dt seconds from q0 (row 0) to q1 (row N-1), exactly.

    Lasts max(duration, min_duration(q0, q1, limits)) rounded up to whole dt steps, so
    N = steps + 1 (N = 1 when q0 == q1 and duration is 0). dt defaults to the Franka's 1 kHz loop.
    """
    q0, q1 = _joint_vector("q0", q0), _joint_vector("q1", q1)
    if not (math.isfinite(duration) and duration >= 0):
        raise RobalignError(f"duration must be a finite number of seconds >= 0; got {duration!r}")
    if not (math.isfinite(dt) and dt > 0):
        raise RobalignError(f"dt must be a finite number of seconds > 0; got {dt!r}")
    total = max(float(duration), min_duration(q0, q1, limits))
    steps = math.ceil(total / dt)  # rounding up only lengthens, which only lowers every peak
    if steps > _MAX_STEPS:
        raise RobalignError(f"a {total:.6g} s move at dt={dt} s would need {steps} samples; "
                            f"at most {_MAX_STEPS} are allowed (shorten duration or raise dt)")
    if steps == 0:
        return q0[None].copy()
    u = np.arange(steps + 1) / steps
    s = u**3 * (10 + u * (-15 + 6 * u))
    out = q0 + s[:, None] * (q1 - q0)
    out[0], out[-1] = q0, q1  # exact endpoints, whatever the rounding
    return out
