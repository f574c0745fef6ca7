"""Robot backends: one interface for the simulated Panda, franky, pylibfranka and a remote arm.

    with make_backend("sim", virtual_clock=True) as robot:
        state = robot.connect()
        robot.submit([TimedTarget(state.t + 0.1 * (k + 1), q_k) for k, q_k in enumerate(chunk)])
        robot.advance(1.0)            # virtual clock only; a real arm runs in real time

States (``robot.state``):

    IDLE       connected, no motion running; submit() starts one
    STREAMING  tracking the submitted targets
    HOLDING    holding still: hold() was called, or the watchdog saw no fresh command for
               hold_after_periods x period; a new command resumes, a long silence stops
    FAULT      a backend error (e.g. a reflex) or the safety monitor's FAULT; commands are
               refused until recover(), which only a person calls

Every target passes one ``SafetyMonitor`` in ``submit`` before anything can reach the arm: a
NaN, inf, wrong shape or dtype, or non-monotonic time raises its typed ``SafetyViolation`` and
the arm keeps its last safe target; clamps are recorded as events. ``LocalBackend`` is the
control core shared by the backends that drive an arm themselves (sim, franky, libfranka):
each control cycle its ``_tick(now)`` checks the watchdog and turns the schedule of safe
targets into one smoothed reference (``streaming.Smoother``); subclasses only move that
reference to their arm. Every stop and fault saves the episode (``episodes/NNN``: the
controller log as safetensors + meta.json; a fault's is flagged).

Glossary: q, dq (7,) joint positions (rad) and velocities (rad/s); t seconds on the backend's
clock (``robot.clock()``: monotonic time, or simulated time on a virtual clock).
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import importlib
import json
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from safetensors.numpy import save_file

from robalign.data.outputs import atomic_output_dir
from robalign.errors import RobalignError, UnknownNameError
from robalign.hardware.limits import FrankaLimits
from robalign.hardware.safety import (SafetyConfig, SafetyFault, SafetyFilter, SafetyMonitor, SafetyViolation,
                                      TimedTarget, _checked_time)
from robalign.hardware.streaming import Smoother, TargetSchedule
from robalign.hardware.watchdog import HOLD, STOP, Watchdog
from robalign.registry import Registry

IDLE, STREAMING, HOLDING, FAULT = "IDLE", "STREAMING", "HOLDING", "FAULT"


class BackendError(RobalignError):
    """A call the backend cannot honour in its current state (not connected, in FAULT, ...)."""


class BackendFault(BackendError):
    """The backend is in FAULT; only recover() leaves it."""


@dataclasses.dataclass(frozen=True)
class RobotState:
    """What the arm reports. q, dq: (7,) measured; q_ref: (7,) the reference now commanded."""

    t: float
    q: np.ndarray
    dq: np.ndarray
    q_ref: np.ndarray
    mode: str  # IDLE | STREAMING | HOLDING | FAULT
    fault: str | None = None  # why, while in FAULT


@dataclasses.dataclass(frozen=True)
class BackendConfig:
    """Settings every backend shares (configs/robot/*.yaml hold the per-backend ones)."""

    # which arm's published limits bound every command: "panda" or "fr3"
    arm: str = "panda"
    # s, the policy's command period: the watchdog holds after hold_after_periods of them
    period: float = 0.1
    # periods without a fresh command before the arm holds
    hold_after_periods: float = 3.0
    # s in HOLD (without a fresh command) before the arm stops
    hold_timeout: float = 1.0
    # fractions of the arm's acceleration and jerk limits the smoothed reference may use
    # (its velocity is bounded by safety.velocity_scale x dq_max)
    acceleration_scale: float = 1.0
    jerk_scale: float = 1.0
    # the filter's margins, step and velocity bounds, workspace box and violation count
    safety: SafetyConfig = dataclasses.field(default_factory=SafetyConfig)
    # check the workspace box on every target through the Panda's forward kinematics (the FR3
    # shares its kinematic parameters); false: only targets that carry ee_xyz are checked
    workspace_fk: bool = True
    # where stopped and faulted episodes are saved (None: not saved)
    episode_dir: str | None = None

    @classmethod
    def build(cls, defaults: dict | None = None, **settings) -> "BackendConfig":
        """A config from key=value settings (safety's as a dict); an unknown key is an error naming the allowed ones."""
        settings = {**(defaults or {}), **settings}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise RobalignError(f"unknown robot setting(s) {unknown}; allowed: {sorted(fields)} and the backend's "
                                "own (see configs/robot/)")
        if isinstance(settings.get("safety"), dict):
            safety_fields = {f.name for f in dataclasses.fields(SafetyConfig)}
            bad = sorted(set(settings["safety"]) - safety_fields)
            if bad:
                raise RobalignError(f"unknown safety setting(s) {bad}; allowed: {sorted(safety_fields)}")
            settings["safety"] = SafetyConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in settings["safety"].items()})
        cfg = cls(**settings)
        cfg.limits()  # an unknown arm fails here, not on connect
        return cfg

    def limits(self) -> FrankaLimits:
        if self.arm not in ("panda", "fr3"):
            raise UnknownNameError("arm", self.arm, ["panda", "fr3"])
        return FrankaLimits.panda() if self.arm == "panda" else FrankaLimits.fr3()


class RobotBackend(abc.ABC):
    """The interface every backend honours; a context manager that stops and closes on exit."""

    name: str = "?"

    @property
    @abc.abstractmethod
    def state(self) -> str: ...

    @abc.abstractmethod
    def clock(self) -> float:
        """Seconds on this backend's clock (targets' t are on it)."""

    @abc.abstractmethod
    def connect(self) -> RobotState: ...

    @abc.abstractmethod
    def read_state(self) -> RobotState: ...

    @abc.abstractmethod
    def submit(self, targets: TimedTarget | Iterable[TimedTarget]) -> list[TimedTarget]:
        """Filter and schedule targets; returns the safe targets scheduled (clamped where needed).

        Times must grow within a submit and lie in the future. A chunk whose first target is not
        after the queued ones replaces them from its first time on (the newest plan wins).

        Raises the first target's SafetyViolation (the arm keeps its last safe target; targets
        before it stay scheduled), SafetyFault when the monitor latches FAULT, BackendFault in FAULT.
        """

    @abc.abstractmethod
    def hold(self) -> None: ...

    @abc.abstractmethod
    def stop(self, reason: str) -> None: ...

    @abc.abstractmethod
    def recover(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def wait(self, seconds: float) -> None:
        """Let `seconds` of backend time pass (sleeps in real time; a virtual clock advances)."""
        time.sleep(seconds)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _time_of(item) -> float | None:
    """The item's t as the filter reads it, or None when the filter will reject it."""
    if not isinstance(item, TimedTarget):
        return None
    try:
        return _checked_time(item.t)
    except SafetyViolation:
        return None


def tcp_position() -> Callable[[np.ndarray], np.ndarray]:
    """q (7,) -> (3,) the grip site's position in the base frame (m), for the workspace box."""
    from robalign.hardware.runtime import PandaKinematics
    kinematics = PandaKinematics()
    return lambda q: kinematics.tcp(q)[0]


def as_targets(targets) -> list:
    """A single TimedTarget or an iterable of them, as a list (items are checked by the filter)."""
    if isinstance(targets, TimedTarget):
        return [targets]
    if isinstance(targets, (str, bytes, np.ndarray)) or not isinstance(targets, Iterable):
        return [targets]  # the filter rejects it with a typed violation
    return list(targets)


class LocalBackend(RobotBackend):
    """The control core for a backend that drives an arm itself; subclasses move the reference.

    Subclass hooks (called with the lock held unless said otherwise):
        _open()                 connect to the arm; return (q, dq) measured
        _measure()              (q, dq) now
        _start_motion(q)        begin the streaming controller, tracking q
        _stop_motion()          end it; the arm stands still
        _recover()              clear the arm's error state
        _close()                disconnect
    and they call ``self._tick(now)`` once per control cycle for the reference to send.
    ``control_errors``: the client library's exception types that mean the arm reported an
    error (a reflex, a lost connection): they put the backend in FAULT, nothing broader does.
    """

    control_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, config: BackendConfig | None = None, control_dt: float = 0.001,
                 clock: Callable[[], float] | None = None):
        self.config = cfg = BackendConfig() if config is None else config
        self.limits = cfg.limits()
        self.filter = SafetyFilter(self.limits, cfg.safety, fk=tcp_position() if cfg.workspace_fk else None)
        self.control_dt = control_dt
        self._clock = time.monotonic if clock is None else clock
        self._lock = threading.RLock()
        self._state = IDLE
        self._connected = False
        self._fault: str | None = None
        self.events: list[dict] = []  # clamps, holds, stops, faults: what happened, when
        self._log: dict[str, list] = {"t": [], "q_ref": [], "q": [], "dq": []}
        self._episodes = 0
        self._events_saved = 0  # events before this index went into an earlier episode
        self.monitor: SafetyMonitor | None = None
        self.schedule: TargetSchedule | None = None
        self.smoother: Smoother | None = None
        self.watchdog = Watchdog(cfg.period, cfg.hold_after_periods, cfg.hold_timeout, clock=self.clock)
        self._q_ref = np.zeros(7)
        self._q = self._dq = np.zeros(7)
        # s from submit() to the first control cycle whose reference used the submitted targets
        # (time.monotonic(), whatever the backend's clock), for benchmarks/hardware_latency.py
        self.apply_latency: collections.deque = collections.deque(maxlen=100_000)
        self._unapplied: list[float] = []

    # ------------------------------------------------------------------ interface

    @property
    def state(self) -> str:
        return self._state

    def clock(self) -> float:
        return self._clock()

    def connect(self) -> RobotState:
        with self._lock:
            if not self._connected:
                q, dq = self._open()
                self._connected = True
                self._reseed(q, dq)
            return self.read_state()

    def read_state(self) -> RobotState:
        with self._lock:
            self._require_connected()
            if self._state == IDLE:
                self._q, self._dq = self._measure()
            return RobotState(self.clock(), np.array(self._q), np.array(self._dq), np.array(self._q_ref),
                              self._state, self._fault)

    def submit(self, targets) -> list[TimedTarget]:
        items = as_targets(targets)
        submitted = time.monotonic()
        with self._lock:
            self._require_connected()
            if self._state == FAULT:
                raise BackendFault(f"{self.name}: in FAULT ({self._fault}); call recover() first")
            self._replan(items)
            accepted = []
            for item in items:
                before = self.monitor.last_safe
                try:
                    safe = self.monitor.submit(item)
                except SafetyFault as err:
                    self._enter_fault(f"safety monitor: {err}")
                    raise
                result = self.monitor.last_result
                for ev in result.events:
                    self._event("clamp", kind=ev.kind, index=ev.index, requested=ev.requested, applied=ev.applied,
                                t=ev.t)
                if self.monitor.state == "FAULT":
                    self._enter_fault(f"safety monitor: {self.monitor.violations} consecutive violations")
                    raise SafetyFault(f"{self.name}: {self.monitor.violations} consecutive clamped or rejected "
                                      "commands; the arm stopped and is in FAULT until recover()")
                if result.rejected is not None:
                    self._event("rejected", error=type(result.rejected).__name__, message=str(result.rejected))
                    raise result.rejected
                if safe is not before:  # applied (maybe clamped); a workspace hold keeps the old target
                    self.schedule.add(safe)
                    accepted.append(safe)
            if accepted:
                self._unapplied.append(submitted)
                self.watchdog.feed()
                if self._state in (IDLE, HOLDING):
                    if self._state == IDLE:
                        self._start_motion(np.array(self._q_ref))
                    self._state = STREAMING
            return accepted

    def _replan(self, items: list) -> None:
        """Re-anchor the filter at where the arm is commanded to be now, when the last safe target
        is in the past (a target for a time already gone is then rejected, and a long pause cannot
        widen the velocity bound) or when a new chunk starts before the queued targets end (it
        replaces them: the newest plan wins)."""
        last = self.monitor.last_safe
        if last is None:
            return
        now, t = self.clock(), _time_of(items[0]) if items else None
        if last.t < now or (t is not None and now < t <= last.t):
            self.monitor.replan_from(TimedTarget(now, self.schedule.goal(now)))

    def hold(self) -> None:
        with self._lock:
            self._require_connected()
            if self._state == STREAMING:
                self._hold("hold() called")

    def stop(self, reason: str) -> None:
        with self._lock:
            if self._state in (STREAMING, HOLDING):
                self._stop(reason)

    def _stop(self, reason: str) -> None:
        """End the motion, save the episode, start afresh from the reference the arm holds (lock held)."""
        self._stop_motion()
        self._state = IDLE
        self._event("stop", reason=reason)
        self.save_episode(flagged=False, reason=reason)
        # not a fresh measurement: a client may still be ending its motion; the arm is commanded here
        self._reset_core(self._q_ref)

    def recover(self) -> None:
        with self._lock:
            self._require_connected()
            if self._state != FAULT:
                return
            self._recover()
            self._event("recover", fault=self._fault)
            self._state, self._fault = IDLE, None
            self._reseed(*self._measure())

    def close(self) -> None:
        with self._lock:
            if not self._connected:
                return
            if self._state in (STREAMING, HOLDING):
                self.stop("closed")
            self._connected = False
        # Outside the lock: _close joins the control thread, which may be waiting for the lock
        # to finish its cycle (a reflex that arrived as we stopped saves its episode there).
        # Joined under the lock it timed out after 5 s and died with the process mid-save,
        # leaving a half-written episode directory.
        self._close()

    def tracking_error(self) -> dict:
        """Joint tracking error (rad) over the controller log since the last episode saved."""
        with self._lock:  # the control thread appends to the log
            return _tracking(np.asarray(self._log["q"]), np.asarray(self._log["q_ref"]))

    # ------------------------------------------------------------------ control core

    def _tick(self, now: float) -> np.ndarray:
        """(7,) the reference for the control cycle at `now` (call with the lock held)."""
        if self._state in (STREAMING, HOLDING):
            wd = self.watchdog.poll()
            if wd == STOP:
                silent = self.watchdog.hold_after + self.watchdog.stop_after
                self._stop(f"watchdog: no command for {silent:.3f} s")
                return self._q_ref
            if wd == HOLD and self._state == STREAMING:
                self._hold(f"watchdog: no command for {self.watchdog.hold_after:.3f} s")
        if self._state == STREAMING:
            self._q_ref = self.smoother.step(self.schedule.goal(now))
            if self._unapplied:
                applied = time.monotonic()
                self.apply_latency.extend(applied - t for t in self._unapplied)
                self._unapplied.clear()
        elif self._state == HOLDING:
            self._q_ref = self.smoother.step(self.smoother.raw)
        return self._q_ref

    def _record(self, t: float, q: np.ndarray, dq: np.ndarray, q_ref: np.ndarray) -> None:
        """Log one control cycle: the measured state after the reference q_ref was sent (lock held)."""
        self._q, self._dq = q, dq
        log = self._log
        log["t"].append(t)
        log["q_ref"].append(np.array(q_ref))
        log["q"].append(np.array(q))
        log["dq"].append(np.array(dq))

    def _enter_fault(self, reason: str) -> None:
        """FAULT: stop the motion, save the episode flagged, keep the controller log (lock held)."""
        if self._state == FAULT:
            return
        stop_error = None
        try:
            self._stop_motion()
        except self.control_errors as err:  # e.g. the arm already stopped itself in a reflex
            stop_error = f"{type(err).__name__}: {err}"
        self._state, self._fault = FAULT, reason
        self._event("fault", reason=reason, stop_error=stop_error)
        self.save_episode(flagged=True, reason=reason)

    def _hold(self, reason: str) -> None:
        self._state = HOLDING
        self.schedule.clear(self.smoother.raw, self.clock())
        self._event("hold", reason=reason)

    def _reseed(self, q: np.ndarray, dq: np.ndarray) -> None:
        """Start afresh from a measured state: the reference, filter, schedule and watchdog at q."""
        self._q, self._dq = np.array(q), np.array(dq)
        self._reset_core(q)

    def _reset_core(self, q: np.ndarray) -> None:
        now = self.clock()
        self._unapplied.clear()
        self._q_ref = np.array(q, np.float64)
        self.monitor = SafetyMonitor(self.filter, start=TimedTarget(now, np.asarray(q, np.float64)))
        self.schedule = TargetSchedule(q, now)
        cfg = self.config
        self.smoother = Smoother.for_limits(q, self.control_dt, self.limits, cfg.safety.velocity_scale,
                                            cfg.acceleration_scale, cfg.jerk_scale)
        self.watchdog.reset()

    def _event(self, what: str, **info) -> None:
        self.events.append({"event": what, "t": self.clock(), "state": self._state, **info})

    def _require_connected(self) -> None:
        if not self._connected:
            raise BackendError(f"{self.name}: not connected; call connect() first")

    # ------------------------------------------------------------------ episodes

    def save_episode(self, flagged: bool, reason: str) -> Path | None:
        """Write the controller log since the last save to episode_dir/NNN (atomically); None if not set."""
        log, self._log = self._log, {k: [] for k in self._log}
        if self.config.episode_dir is None:
            return None
        root = Path(self.config.episode_dir)
        while (root / f"{self._episodes:03d}").exists():
            self._episodes += 1
        final = root / f"{self._episodes:03d}"
        arrays = {"t": np.asarray(log["t"], np.float64).reshape(-1)}
        for key in ("q_ref", "q", "dq"):
            arrays[key] = np.asarray(log[key], np.float64).reshape(-1, 7)
        tracking = _tracking(arrays["q"], arrays["q_ref"])
        meta = {"backend": self.name, "arm": self.limits.name, "flagged": flagged, "reason": reason,
                "cycles": tracking["cycles"], "tracking_error_mean": tracking["mean"],
                "tracking_error_max": tracking["max"], "events": self.events[self._events_saved:]}
        with atomic_output_dir(final) as tmp:
            save_file(arrays, str(tmp / "log.safetensors"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=float))
        self._events_saved = len(self.events)
        self._episodes += 1
        return final


def import_client(module: str, extra: str = "hardware"):
    """Import a robot client library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RobalignError(f"robot backend needs the {module!r} package ({err}); install it with "
                            f"`pip install 'robalign[{extra}]'`") from None


class ThreadedBackend(LocalBackend):
    """A LocalBackend whose control core runs in a thread every control_dt, on the monotonic clock.

    Subclasses implement ``_cycle(now)``: send this cycle's reference, record the measured state,
    and raise their library's control error when the arm reports one.
    """

    def _start_thread(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._control_loop, name=f"{self.name}-control", daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        self._running = False
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _control_loop(self) -> None:
        next_t = time.monotonic()
        while self._running:
            with self._lock:
                if self._state in (STREAMING, HOLDING):
                    try:
                        self._cycle(self.clock())
                    except BaseException as err:
                        self._fault_from(err)
            next_t += self.control_dt
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # overran: do not try to catch up in a burst

    def _cycle(self, now: float) -> None:
        raise NotImplementedError

    def _fault_from(self, err: BaseException) -> None:
        """FAULT for an error out of the control loop (lock held): the arm's error ends there; any
        other is a bug, so after stopping the arm it propagates."""
        if isinstance(err, self.control_errors):
            self._enter_fault(f"{type(err).__name__}: {err}")
            return
        self._enter_fault(f"control loop crashed: {type(err).__name__}: {err}")
        raise err



def _tracking(q: np.ndarray, q_ref: np.ndarray) -> dict:
    """|q - q_ref| (rad), mean and max over joints and cycles (None without cycles), and the cycle count."""
    if not len(q):
        return {"mean": None, "max": None, "cycles": 0}
    err = np.abs(q - q_ref)
    return {"mean": float(err.mean()), "max": float(err.max()), "cycles": int(len(q))}


BACKENDS: Registry[type[RobotBackend]] = Registry("robot backend")


def register_backend(name: str):
    """Class decorator: make a backend available as ``robot=NAME``."""
    def deco(cls):
        cls.name = name
        return BACKENDS.register(name)(cls)
    return deco


def make_backend(name: str, **kwargs) -> RobotBackend:
    """The backend registered as `name`, built with its keyword settings."""
    _load_all()
    return BACKENDS.get(name)(**kwargs)


def _load_all() -> None:
    # importing registers; the client libraries themselves are imported only on connect()
    from robalign.hardware import franky_backend, libfranka_backend, remote, sim  # noqa: F401
