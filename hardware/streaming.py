"""From timed joint targets to one joint reference per control cycle, within the arm's limits.

A policy sends a few targets per second (a chunk of K timed targets every period); the arm's
controller wants a reference every cycle (1 ms on a Franka). Two pure pieces bridge them:

``TargetSchedule``  the queue of safe targets: ``goal(now)`` interpolates linearly between the
                    last target reached and the next one; targets whose time has passed are
                    dropped, so a late chunk never replays its past.
``Smoother``        turns the goal sequence into a reference with bounded velocity,
                    acceleration and jerk, whatever the goal does (a jump, a hold, a reversal):

    r_k  = r_{k-1} + clip(goal_k - r_{k-1}, +-V dt)      rate limit:  |dr/dt| <= V
    s_k  = mean(r_{k-n1+1} .. r_k)                         box filter 1
    out_k = mean(s_{k-n2+1} .. s_k)                        box filter 2

A box filter of n samples averages differences, so it never raises a bound on them, and the
difference of two bounded slopes n samples apart is bounded by 2x the slope over n:

    |velocity| <= V,   |acceleration| <= 2 V / (n1 dt),   |jerk| <= 4 V / (n1 n2 dt^2)

``Smoother.for_limits`` picks the smallest n1, n2 that meet the arm's published acceleration
and jerk limits (times a scale) for V = velocity_scale * dq_max. The price is lag: the
reference trails the goal by (n1 + n2 - 2) / 2 cycles (about 0.13 s on an FR3 at 1 kHz with
the default scales); docs/hardware.md says how to trade it. The same n1, n2 apply to every
joint so the smoothed path stays a smoothed copy of the commanded path, not a per-joint skew.

Glossary: q (7,) joint positions in rad; t, now seconds on the backend's clock; dt the control
period in seconds.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from robalign.errors import RobalignError
from robalign.hardware.limits import FrankaLimits
from robalign.hardware.safety import TimedTarget


class TargetSchedule:
    """Safe timed targets waiting to be reached, oldest first."""

    def __init__(self, q0: np.ndarray, t0: float):
        self._anchor = TimedTarget(float(t0), np.asarray(q0, np.float64))  # the last target reached
        self._queue: list[TimedTarget] = []

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, target: TimedTarget) -> None:
        """Queue one safe target; a target not newer than the last one queued replaces the newer ones."""
        times = [x.t for x in self._queue]
        del self._queue[bisect.bisect_left(times, target.t):]  # the newest plan wins
        self._queue.append(target)

    def clear(self, q: np.ndarray, now: float) -> None:
        """Forget every queued target and stay at q (hold)."""
        self._queue.clear()
        self._anchor = TimedTarget(float(now), np.asarray(q, np.float64))

    def goal(self, now: float) -> np.ndarray:
        """(7,) where the arm should be at `now`: between the last target reached and the next."""
        while self._queue and self._queue[0].t <= now:  # reached or past: drop it
            self._anchor = self._queue.pop(0)
        if not self._queue:
            return self._anchor.q
        nxt = self._queue[0]
        if nxt.t <= self._anchor.t:
            return nxt.q
        u = (now - self._anchor.t) / (nxt.t - self._anchor.t)
        u = min(max(u, 0.0), 1.0)
        return self._anchor.q + u * (nxt.q - self._anchor.q)


class Smoother:
    """Rate limiter plus two box filters: the reference sent to the arm each control cycle."""

    def __init__(self, q0: np.ndarray, dt: float, max_velocity: np.ndarray, n1: int, n2: int):
        if not (math.isfinite(dt) and dt > 0):
            raise RobalignError(f"Smoother dt must be a finite number of seconds > 0; got {dt!r}")
        if not (isinstance(n1, int) and isinstance(n2, int) and n1 >= 1 and n2 >= 1):
            raise RobalignError(f"Smoother box lengths n1, n2 must be ints >= 1; got {n1!r}, {n2!r}")
        self.dt, self.n1, self.n2 = float(dt), n1, n2
        self.max_step = np.asarray(max_velocity, np.float64) * self.dt  # rad per cycle
        self.reset(q0)

    @classmethod
    def for_limits(cls, q0: np.ndarray, dt: float, limits: FrankaLimits, velocity_scale: float = 0.5,
                   acceleration_scale: float = 1.0, jerk_scale: float = 1.0) -> "Smoother":
        """The shortest filters that keep velocity, acceleration and jerk within scale x the limits."""
        for name, value in (("velocity_scale", velocity_scale), ("acceleration_scale", acceleration_scale),
                            ("jerk_scale", jerk_scale)):
            if not 0 < value <= 1:
                raise RobalignError(f"{name} must be in (0, 1] (a fraction of the arm's limit); got {value!r}")
        v = velocity_scale * limits.dq_max
        n1 = max(1, math.ceil(float(np.max(2 * v / (acceleration_scale * limits.ddq_max * dt))) - 1e-9))
        n2 = max(1, math.ceil(float(np.max(4 * v / (n1 * dt**2 * jerk_scale * limits.dddq_max))) - 1e-9))
        return cls(q0, dt, v, n1, n2)

    @property
    def lag(self) -> float:
        """Seconds the reference trails a steadily moving goal."""
        return (self.n1 + self.n2 - 2) / 2 * self.dt

    def reset(self, q: np.ndarray) -> None:
        """Rest at q: every buffer full of q, so the next outputs start from q with zero velocity."""
        self.raw = np.array(q, np.float64)
        self._box1, self._box2 = _Box(self.raw, self.n1), _Box(self.raw, self.n2)

    def step(self, goal: np.ndarray) -> np.ndarray:
        """(7,) the next reference, one cycle after the last."""
        self.raw = self.raw + np.clip(np.asarray(goal, np.float64) - self.raw, -self.max_step, self.max_step)
        return self._box2.push(self._box1.push(self.raw))


class _Box:
    """Mean of the last n vectors pushed (starting full of x0)."""

    def __init__(self, x0: np.ndarray, n: int):
        self.buf, self.n, self.i, self.pushes = np.tile(x0, (n, 1)), n, 0, 0
        self.sum = self.buf.sum(0)

    def push(self, x: np.ndarray) -> np.ndarray:
        self.sum = self.sum + x - self.buf[self.i]
        self.buf[self.i] = x
        self.i = (self.i + 1) % self.n
        self.pushes += 1
        if self.pushes % 4096 == 0:  # a running sum drifts by rounding; recompute it now and then
            self.sum = self.buf.sum(0)
        return self.sum / self.n
