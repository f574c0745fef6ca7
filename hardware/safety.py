"""The safety filter every joint command passes before it reaches the arm.

One filter, used on both sides of the wire: the workstation runs it before sending (so the
policy sees what will really happen), the robot PC runs it again before commanding (so a bad
packet, a bug or another sender cannot hurt anyone).

Glossary of shapes:
    q       (7,) joint positions in rad, joint 1 first; float32 or float64 in, float64 out
    t       float, seconds on the sender's clock; must grow strictly from command to command
    ee_xyz  (3,) end-effector position in metres in the robot base frame (x forward, z up)
    fk      callable q (7,) -> ee_xyz (3,): forward kinematics, optional

``SafetyFilter.check(command, last_safe)`` is pure: from a command and the last target that was
applied it either rejects the command (a typed ``SafetyViolation``: hold ``last_safe``) or
clamps it, in this order, recording a ``SafetyEvent`` for each clamp:

0. a joint further than ``reject_beyond`` outside its range is rejected (``OutOfRange``);
1. joint limits minus ``joint_margin``;
2. per-command change: ``|q - last.q| <= max_step_change``;
3. velocity: ``|q - last.q| <= velocity_scale * dq_max * (t - last.t)``;
4. workspace: if the end effector would leave the box, the command is not applied at all and
   ``last_safe`` is held.

``SafetyMonitor`` is the small stateful loop around it: it remembers the last safe target,
counts consecutive violations and latches FAULT after ``max_violations`` of them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from robalign.errors import RobalignError
from robalign.hardware.limits import FrankaLimits

# SafetyEvent.kind values
JOINT_LIMIT, STEP, VELOCITY, WORKSPACE = "joint_limit", "step", "velocity", "workspace"
# SafetyMonitor.state values
OK, FAULT = "OK", "FAULT"

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class SafetyViolation(RobalignError):
    """A command the filter refuses outright; the last safe target is held instead."""


class BadShape(SafetyViolation):
    """q is not (7,) (or ee_xyz is not (3,))."""


class BadDtype(SafetyViolation):
    """Not a TimedTarget, a time that is not a real number, or an array that is not float32/float64."""


class NonFinite(SafetyViolation):
    """NaN or inf in the time or an array."""


class OutOfRange(SafetyViolation):
    """A joint target more than reject_beyond rad outside the arm's joint range: a bug, not an overshoot."""


class NonMonotonicTime(SafetyViolation):
    """A command not strictly newer than the last safe target."""


class SafetyFault(RobalignError):
    """The monitor is in FAULT: too many consecutive violations; only ``recover()`` clears it.

    Not a ``SafetyViolation``: code that catches per-command rejections must not swallow it.
    """


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """How far inside the arm's limits commands must stay."""

    # rad kept clear of every joint's q_min and q_max
    joint_margin: float = 0.05
    # rad, the most any joint may move from one command to the next
    max_step_change: float = 0.05
    # fraction of dq_max allowed: |q - last.q| <= velocity_scale * dq_max * (t - last.t)
    velocity_scale: float = 0.5
    # metres, lowest allowed end-effector x, y, z in the robot base frame
    workspace_min: tuple[float, float, float] = (0.2, -0.5, 0.02)
    # metres, highest allowed end-effector x, y, z in the robot base frame
    workspace_max: tuple[float, float, float] = (0.8, 0.5, 0.8)
    # rad: a joint target further than this outside [q_min, q_max] is rejected (OutOfRange), not
    # clamped: 1e9 rad is a bug upstream, and clamping it would drive the joint to its limit
    # (math.inf: clamp everything)
    reject_beyond: float = 0.5
    # consecutive clamped or rejected commands before the monitor enters FAULT
    max_violations: int = 10
    # s, nominal command period (for the watchdog and interpolation; the velocity clamp
    # uses the real time between commands)
    dt: float = 0.1

    def __post_init__(self):
        def bad(what: str):
            raise RobalignError(f"SafetyConfig: {what}; got {self}")

        if not (math.isfinite(self.joint_margin) and self.joint_margin >= 0):
            bad("joint_margin must be a finite number of rad >= 0")
        if not (math.isfinite(self.max_step_change) and self.max_step_change > 0):
            bad("max_step_change must be a finite number of rad > 0")
        if not (self.reject_beyond >= 0):  # NaN fails too
            bad("reject_beyond must be a number of rad >= 0 (math.inf to clamp everything)")
        if not 0 < self.velocity_scale <= 1:
            bad("velocity_scale must be in (0, 1] (a fraction of dq_max)")
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo) & np.isfinite(hi) & (lo < hi)):
            bad("workspace_min and workspace_max must be finite (x, y, z) in metres with min < max on each axis")
        if isinstance(self.max_violations, bool) or not isinstance(self.max_violations, int) or self.max_violations < 1:
            bad("max_violations must be an int >= 1")
        if not (math.isfinite(self.dt) and self.dt > 0):
            bad("dt must be a finite number of seconds > 0")


@dataclasses.dataclass(frozen=True, eq=False)
class TimedTarget:
    """A joint target for time t; ee_xyz optionally says where the sender expects the end effector.

    Built from whatever arrived, so nothing is checked here: ``SafetyFilter.check`` checks it.
    The targets the filter returns hold read-only float64 arrays.
    """

    t: float
    q: np.ndarray
    ee_xyz: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class SafetyEvent:
    """One clamp. index: the joint (0-6) for joint_limit/step/velocity, the axis (0=x, 1=y, 2=z)
    for workspace. requested and applied are that joint's rad or that axis' metres; for workspace
    the whole command was held, so applied is the held target's coordinate (NaN if not known)."""

    kind: str
    index: int
    requested: float
    applied: float
    t: float


@dataclasses.dataclass(frozen=True)
class SafetyResult:
    """What to do with one command.

    target: the safe TimedTarget to apply: the (clamped) command, or ``last_safe`` when the
        command was rejected or left the workspace. None only when there was no last safe
        target to hold: send nothing, the arm stays where it is.
    events: the clamps applied, in order.
    rejected: the violation when the command was refused, else None.
    """

    target: TimedTarget | None
    events: tuple[SafetyEvent, ...]
    rejected: SafetyViolation | None

    @property
    def ok(self) -> bool:
        """True when the command passed untouched."""
        return self.rejected is None and not self.events


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=np.float64)  # always a copy
    arr.setflags(write=False)
    return arr


def _checked_array(name: str, value, shape: tuple[int, ...], meaning: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise BadShape(f"{name} must be an array of shape {shape} ({meaning}); got {value!r} ({err})") from None
    if arr.shape != shape:
        raise BadShape(f"{name} must have shape {shape} ({meaning}); got shape {arr.shape}")
    if arr.dtype not in _FLOATS:
        raise BadDtype(f"{name} must be float32 or float64; got dtype {arr.dtype} (ints, bools, complex, "
                       "strings and objects are refused)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise NonFinite(f"{name} must be finite; entries {bad.tolist()} are {arr[bad].tolist()}")
    return _frozen(arr)


def _checked_time(t) -> float:
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
        raise BadDtype(f"t must be a real number of seconds (int or float); got {type(t).__name__} {t!r}")
    try:
        t = float(t)
    except OverflowError:
        t = math.inf
    if not math.isfinite(t):
        raise NonFinite(f"t must be a finite number of seconds; got {t!r}")
    return t


def validate(command) -> TimedTarget:
    """The command as a clean TimedTarget (float t, read-only float64 arrays), or a SafetyViolation."""
    if not isinstance(command, TimedTarget):
        raise BadDtype(f"a command must be a TimedTarget(t, q, ee_xyz=None); got {type(command).__name__}")
    t = _checked_time(command.t)
    q = _checked_array("q", command.q, (7,), "one position per joint, rad")
    ee = None if command.ee_xyz is None else _checked_array("ee_xyz", command.ee_xyz, (3,), "x, y, z in metres")
    return TimedTarget(t, q, ee)


class SafetyFilter:
    """Checks and clamps joint commands against the arm's limits; holds no state between calls."""

    def __init__(self, limits: FrankaLimits, config: SafetyConfig | None = None,
                 fk: Callable[[np.ndarray], np.ndarray] | None = None):
        self.limits = limits
        self.config = config = SafetyConfig() if config is None else config
        self.fk = fk
        self.q_lo = _frozen(limits.q_min + config.joint_margin)  # lowest joint target allowed
        self.q_hi = _frozen(limits.q_max - config.joint_margin)  # highest joint target allowed
        if not np.all(self.q_lo < self.q_hi):
            raise RobalignError(f"joint_margin {config.joint_margin} rad leaves no room between "
                                f"{limits.name}'s q_min and q_max; use a smaller margin")
        self.ws_lo = _frozen(config.workspace_min)
        self.ws_hi = _frozen(config.workspace_max)

    def check(self, command: TimedTarget, last_safe: TimedTarget | None = None) -> SafetyResult:
        """The safe target for `command`, given the last target applied (None before the first).

        Without `last_safe` only joint limits and the workspace can be enforced: seed it with the
        arm's measured position so the first command cannot jump.
        """
        try:
            cmd = validate(command)
            if last_safe is not None and not cmd.t > last_safe.t:
                raise NonMonotonicTime(f"t must be strictly greater than the last safe target's "
                                       f"t={last_safe.t!r}; got t={cmd.t!r}")
            far = np.flatnonzero((cmd.q < self.limits.q_min - self.config.reject_beyond)
                                 | (cmd.q > self.limits.q_max + self.config.reject_beyond))
            if far.size:
                raise OutOfRange(f"joints {far.tolist()} at {cmd.q[far].tolist()} rad are more than "
                                 f"{self.config.reject_beyond} rad outside {self.limits.name}'s range "
                                 f"[{self.limits.q_min[far].tolist()}, {self.limits.q_max[far].tolist()}]")
        except SafetyViolation as err:
            return SafetyResult(last_safe, (), err)

        t, events = cmd.t, []
        q = self._clamp(JOINT_LIMIT, cmd.q, self.q_lo, self.q_hi, t, events)
        if last_safe is not None:
            step = self.config.max_step_change
            q = self._clamp(STEP, q, last_safe.q - step, last_safe.q + step, t, events)
            reach = self.config.velocity_scale * self.limits.dq_max * (t - last_safe.t)
            q = self._clamp(VELOCITY, q, last_safe.q - reach, last_safe.q + reach, t, events)
        q = _frozen(q)

        ee = self._fk(q) if self.fk is not None else cmd.ee_xyz
        if ee is not None:
            outside = ~((self.ws_lo <= ee) & (ee <= self.ws_hi))  # NaN counts as outside
            if outside.any():
                held = self._held_ee(last_safe)
                events += [SafetyEvent(WORKSPACE, int(i), float(ee[i]), float(held[i]), t)
                           for i in np.flatnonzero(outside)]
                return SafetyResult(last_safe, tuple(events), None)
        return SafetyResult(TimedTarget(t, q, ee), tuple(events), None)

    @staticmethod
    def _clamp(kind: str, q: np.ndarray, lo: np.ndarray, hi: np.ndarray, t: float,
               events: list[SafetyEvent]) -> np.ndarray:
        clamped = np.clip(q, lo, hi)
        events += [SafetyEvent(kind, int(j), float(q[j]), float(clamped[j]), t)
                   for j in np.flatnonzero(clamped != q)]
        return clamped

    def _fk(self, q: np.ndarray) -> np.ndarray:
        ee = np.asarray(self.fk(q), dtype=np.float64)
        if ee.shape != (3,):
            raise RobalignError(f"fk must return the end effector's (x, y, z) as shape (3,); got shape {ee.shape}")
        return _frozen(ee)

    def _held_ee(self, last_safe: TimedTarget | None) -> np.ndarray:
        if last_safe is None:
            return np.full(3, np.nan)
        if self.fk is not None:
            return self._fk(last_safe.q)
        return np.full(3, np.nan) if last_safe.ee_xyz is None else np.asarray(last_safe.ee_xyz, float)


class SafetyMonitor:
    """The filter plus the memory a control loop needs: last safe target, violation count, FAULT.

    `start` (optional) seeds the last safe target, normally the arm's measured joint position.
    """

    def __init__(self, safety_filter: SafetyFilter, start: TimedTarget | None = None):
        self.filter = safety_filter
        self.last_safe: TimedTarget | None = None if start is None else validate(start)
        self.violations = 0  # consecutive clamped or rejected commands
        self.last_result: SafetyResult | None = None
        self._state = OK

    @property
    def state(self) -> str:
        """"OK", or "FAULT" once max_violations consecutive commands were clamped or rejected."""
        return self._state

    def submit(self, command: TimedTarget) -> TimedTarget | None:
        """The target to apply for `command`: it, clamped, or the last safe target held.

        None only before any target was accepted (nothing to hold: send nothing).
        Raises SafetyFault while in FAULT.
        """
        if self._state == FAULT:
            raise SafetyFault(f"safety monitor is in FAULT after {self.violations} consecutive violations "
                              "(clamped or rejected commands); commands are refused until recover()")
        result = self.filter.check(command, self.last_safe)
        self.last_result = result
        self.violations = 0 if result.ok else self.violations + 1
        if result.target is not None:
            self.last_safe = result.target
        if self.violations >= self.filter.config.max_violations:
            self._state = FAULT
        return self.last_safe

    def replan_from(self, anchor: TimedTarget) -> None:
        """A new plan starts: check its first target against `anchor` (where the arm is commanded
        to be just before it) instead of the superseded plan's last target. Not a reset: the
        violation count and FAULT stay."""
        self.last_safe = validate(anchor)

    def recover(self, start: TimedTarget | None = None) -> None:
        """Leave FAULT (a person's decision); `start` re-seeds the last safe target, e.g. the measured q."""
        self._state, self.violations = OK, 0
        if start is not None:
            self.last_safe = validate(start)
