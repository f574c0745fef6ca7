"""`robot=libfranka`: an FR3 through pylibfranka 0.21 (Franka's own Python bindings).

pylibfranka exposes libfranka's active control: ``readOnce()`` blocks until the arm's next
1 kHz state packet and ``writeOnce(JointPositions)`` answers it. A thread here runs that loop
with the control core in between, so each 1 ms cycle sends one smoothed joint position under
the arm's internal joint impedance controller. A Python loop can miss cycles when the process
is starved; the arm tolerates a few, and after 20 in a row (``--enforce-comm-constraints`` on
franka-sim, always on a real FR3) it stops with ``communication_constraints_violation``: the
backend enters FAULT, saves the episode flagged, and ``recover()`` runs libfranka's
``automatic_error_recovery`` on request.

Needs the ``hardware`` extra; pass ``realtime=false`` on a non-realtime kernel.
"""

from __future__ import annotations

import time

import numpy as np

from robalign.hardware.backend import FAULT, BackendConfig, ThreadedBackend, import_client, register_backend


@register_backend("libfranka")
class LibfrankaBackend(ThreadedBackend):
    """pylibfranka joint position control, one command per 1 ms state packet."""

    def __init__(self, config: BackendConfig | None = None, host: str = "172.16.0.2", realtime: bool = True,
                 **overrides):
        config = BackendConfig.build({"arm": "fr3"}, **overrides) if config is None else config
        super().__init__(config, control_dt=0.001)
        self.host, self.realtime = host, realtime
        self.pf = self.robot = self._control = None
        self._finish_requested = False  # the control thread ends the motion on its next packet

    def _open(self):
        pf = self.pf = import_client("pylibfranka")
        self.control_errors = (pf.ControlException, pf.CommandException, pf.NetworkException,
                               pf.InvalidOperationException)
        config = pf.RealtimeConfig.kEnforce if self.realtime else pf.RealtimeConfig.kIgnore
        self.robot = pf.Robot(self.host, config)
        q, dq = self._measure()
        self._start_thread()
        return q, dq

    def _measure(self):
        s = self.robot.read_once()
        return np.array(s.q, np.float64), np.array(s.dq, np.float64)

    def _start_motion(self, q):
        deadline = time.monotonic() + 0.5
        while self._finish_requested and time.monotonic() < deadline:  # the last motion is still ending
            time.sleep(self.control_dt)
        self._control = self.robot.start_joint_position_control(self.pf.ControllerMode.JointImpedance)

    def _stop_motion(self):
        # only the control thread talks to the active control (one write per read): it sends
        # motion_finished on the next packet, within a millisecond
        if self._control is not None:
            self._finish_requested = True

    def _control_loop(self) -> None:
        # paced by the arm: readOnce blocks until the next 1 kHz packet. It runs outside the
        # lock so submit() is never starved; the control core runs under it.
        while self._running:
            control = self._control
            if control is None:
                time.sleep(self.control_dt)
                continue
            try:
                state, _ = control.readOnce()
                ref = None
                if not self._finish_requested:
                    with self._lock:
                        if self._control is control and self._state != FAULT:
                            now = self.clock()
                            ref = self._tick(now)  # may stop the motion (the watchdog)
                            if not self._finish_requested:
                                self._record(now, np.array(state.q, np.float64), np.array(state.dq, np.float64),
                                             ref)
                if ref is None or self._finish_requested:
                    finish = self.pf.JointPositions(np.asarray(self._q_ref, np.float64).tolist())
                    finish.motion_finished = True
                    control.writeOnce(finish)
                    self._control, self._finish_requested = None, False
                    continue
                control.writeOnce(self.pf.JointPositions(ref.tolist()))
            except BaseException as err:  # a reflex or a lost connection; or a bug in this loop
                self._control, self._finish_requested = None, False  # the motion is over either way
                if not isinstance(err, self.control_errors):
                    self.robot.stop()  # the arm did not end it: make sure nothing runs
                with self._lock:
                    self._fault_from(err)

    def _recover(self):
        self._control = None
        self.robot.automatic_error_recovery()

    def _close(self):
        self._stop_thread()
        self.robot = None
