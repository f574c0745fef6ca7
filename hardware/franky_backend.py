"""`robot=franky`: a Panda or FR3 through franky-control 2.0's joint impedance tracker.

franky runs libfranka's 1 kHz loop in C++ (a client-side joint impedance controller,
``JointImpedanceTrackingMotion``) and picks up the newest joint reference each cycle. A thread
here runs the control core every ``control_dt`` (2 ms by default) and hands franky the
smoothed reference and its velocity as feed-forward; the references are already velocity-, acceleration- and jerk-bounded, so
the 2 ms steps the C++ loop sees stay small.

A reflex or lost connection surfaces as franky's ``ControlException`` when the motion is polled:
the backend enters FAULT, saves the episode flagged and keeps the controller log;
``recover()`` calls ``recover_from_errors()`` and only a person calls it.

Needs the ``hardware`` extra (``pip install robalign[hardware]``); on a non-realtime kernel pass
``realtime=false`` (franky's ``RealtimeConfig.Ignore``), as the tests against franky-sim do.
"""

from __future__ import annotations

import numpy as np

from robalign.errors import RobalignError
from robalign.hardware.backend import FAULT, BackendConfig, ThreadedBackend, import_client, register_backend


@register_backend("franky")
class FrankyBackend(ThreadedBackend):
    """franky-control's JointImpedanceTracker, fed by the control core every control_dt."""

    def __init__(self, config: BackendConfig | None = None, host: str = "172.16.0.2", realtime: bool = True,
                 stiffness: tuple[float, ...] = (600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0),
                 control_dt: float = 0.002, **overrides):
        config = BackendConfig.build({"arm": "fr3"}, **overrides) if config is None else config
        super().__init__(config, control_dt=control_dt)
        self.host, self.realtime = host, realtime
        self.stiffness = np.asarray(stiffness, np.float64)
        if self.stiffness.shape != (7,) or not np.all(self.stiffness > 0):
            raise RobalignError(f"franky stiffness must be 7 positive numbers (Nm/rad); got {stiffness!r}")
        self.franky = None
        self.robot = None
        self._tracker = None

    def _open(self):
        franky = self.franky = import_client("franky")
        self.control_errors = (franky.ControlException, franky.CommandException, franky.NetworkException,
                               franky.InvalidOperationException)
        config = franky.RealtimeConfig.Enforce if self.realtime else franky.RealtimeConfig.Ignore
        self.robot = franky.Robot(self.host, realtime_config=config)
        q, dq = self._measure()
        self._start_thread()
        return q, dq

    def _measure(self):
        js = self.robot.current_joint_state
        return np.array(js.position, np.float64), np.array(js.velocity, np.float64)

    def _start_motion(self, q):
        # the tracker starts at the measured q, which is where the smoother starts too
        self._tracker = self.franky.JointImpedanceTracker(self.robot, stiffness=self.stiffness)

    def _cycle(self, now):
        if not self.robot.is_in_control:
            self.robot.join_motion(timeout=0.5)  # raises the motion's ControlException, if it had one
            raise self.franky.ControlException("franky: the controller left control without an error")
        previous = self._q_ref
        ref = self._tick(now)
        if self._state == FAULT or self._tracker is None:
            return
        # velocity feed-forward: the smoothed reference's own velocity, so the impedance damps the
        # tracking error rather than the motion
        self._tracker.set_target(ref, dq=(ref - previous) / self.control_dt)
        q, dq = self._measure()
        self._record(now, q, dq, ref)

    def _stop_motion(self):
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return
        try:
            self.robot.stop()
            self.robot.join_motion(timeout=2.0)
        except self.franky.ControlException as err:
            if "preempted" not in str(err):  # our own stop preempts the motion; anything else is real
                raise

    def _recover(self):
        self._tracker = None
        if not self.robot.recover_from_errors():
            raise RobalignError("franky: recover_from_errors() failed; check the arm and Desk")

    def _close(self):
        self._stop_thread()
        self.robot = None
