"""`robot=sim`: the Panda in MuJoCo under joint impedance at 1 kHz, in its own process.

The physics runs in a child process (as a real arm's controller runs on its own computer); this
process runs the control core (safety filter, watchdog, schedule, smoother) and sends the child
each cycle's reference in batches. The child applies, per 1 ms physics step,

    tau = Kp (q_ref - q) + Kd (dq_ref - dq) + bias(q, dq)

(dq_ref: the reference's velocity, one cycle's difference; bias: gravity and Coriolis, which
the real Franka compensates itself)

clipped to the actuators' torque limits. Two clocks:

    virtual_clock=True   time moves only in advance(seconds): tests get exact, repeatable timing
    virtual_clock=False  a thread advances the physics with the wall clock (real-time mode)

The model is robosuite's Panda (the arm the tasks train on), with a 1 ms timestep. Messages to
the child are JSON headers and raw float64 bytes: nothing is unpickled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

import numpy as np

from robalign.errors import RobalignError
from robalign.hardware.backend import BackendConfig, BackendError, LocalBackend, register_backend

# q (rad) the arm starts at: Franka's "ready" pose
HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
# joint impedance gains of libfranka's joint_impedance_control example (Nm/rad, Nm s/rad)
KP = np.array([600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0])
KD = np.array([50.0, 50.0, 50.0, 50.0, 30.0, 25.0, 15.0])
BATCH = 50  # control cycles per message to the physics process


def panda_xml() -> str:
    """Path of robosuite's Panda arm model (found without importing robosuite, which is slow and loud)."""
    import importlib.util
    root = importlib.util.find_spec("robosuite").submodule_search_locations[0]
    return os.path.join(root, "models", "assets", "robots", "panda", "robot.xml")


def _send(conn, header: dict, *arrays: np.ndarray) -> None:
    conn.send_bytes(json.dumps({**header, "shapes": [list(a.shape) for a in arrays]}).encode())
    for a in arrays:
        conn.send_bytes(np.ascontiguousarray(a, np.float64).tobytes())


def _recv(conn) -> tuple[dict, list[np.ndarray]]:
    header = json.loads(conn.recv_bytes().decode())
    arrays = [np.frombuffer(conn.recv_bytes(), np.float64).reshape(shape) for shape in header.pop("shapes")]
    return header, arrays


def _physics_process(conn, xml: str, dt: float, q0: list[float]) -> None:
    """The child: step the Panda under joint impedance for each reference it is sent."""
    import mujoco
    model = mujoco.MjModel.from_xml_path(xml)
    model.opt.timestep = dt
    data = mujoco.MjData(model)
    data.qpos[:7] = q0
    mujoco.mj_forward(model, data)
    lo, hi = model.actuator_ctrlrange[:7, 0], model.actuator_ctrlrange[:7, 1]
    prev = np.array(q0, np.float64)  # the last reference applied
    while True:
        try:
            header, arrays = _recv(conn)
        except EOFError:  # the parent exited without close(): nothing left to simulate for
            return
        op = header["op"]
        if op == "close":
            conn.close()
            return
        if op == "step":
            refs = arrays[0]
            qs, dqs = np.empty_like(refs), np.empty_like(refs)
            for k, ref in enumerate(refs):
                dq_ref = (ref - prev) / dt  # the smoothed reference's own velocity: damp the error, not the motion
                prev = ref
                tau = KP * (ref - data.qpos[:7]) + KD * (dq_ref - data.qvel[:7]) + data.qfrc_bias[:7]
                data.ctrl[:7] = np.clip(tau, lo, hi)
                mujoco.mj_step(model, data)
                qs[k], dqs[k] = data.qpos[:7], data.qvel[:7]
            _send(conn, {"t": data.time}, qs, dqs)
        elif op == "state":
            _send(conn, {"t": data.time}, data.qpos[:7].copy(), data.qvel[:7].copy())


@register_backend("sim")
class SimBackend(LocalBackend):
    """The simulated Panda; `advance(seconds)` moves a virtual clock, otherwise it runs in real time."""

    def __init__(self, config: BackendConfig | None = None, virtual_clock: bool = True,
                 q0: np.ndarray | None = None, **overrides):
        config = BackendConfig.build(**overrides) if config is None else config
        if config.arm != "panda":
            raise RobalignError(f"robot=sim simulates the Panda; set arm=panda (got arm={config.arm!r})")
        self.virtual_clock = virtual_clock
        self._t = 0.0  # s, simulated time (the clock on a virtual clock)
        self._t0_wall = None
        self.q0 = HOME.copy() if q0 is None else np.asarray(q0, np.float64)
        super().__init__(config, control_dt=0.001, clock=self._sim_time)
        self._proc = self._conn = None
        self._runner: threading.Thread | None = None
        self._running = False

    def _sim_time(self) -> float:
        return self._t

    # ------------------------------------------------------------------ hooks

    def _open(self):
        # a fresh interpreter, not fork (the parent may hold threads and GL contexts) nor
        # multiprocessing's spawn (it re-imports the caller's __main__)
        parent, child = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "robalign.hardware.sim", "--fd", str(child.fileno()), "--xml", panda_xml(),
             "--dt", repr(self.control_dt), "--q0", json.dumps(self.q0.tolist())], pass_fds=(child.fileno(),))
        child.close()
        self._conn = Connection(parent.detach())
        q, dq = self._measure()
        if not self.virtual_clock:
            self._running = True
            self._t0_wall = time.monotonic() - self._t
            self._runner = threading.Thread(target=self._realtime_loop, name="sim-realtime", daemon=True)
            self._runner.start()
        return q, dq

    def _measure(self):
        _send(self._conn, {"op": "state"})
        header, (q, dq) = _recv(self._conn)
        return q, dq

    def _start_motion(self, q):
        pass  # the impedance controller always runs; streaming only changes its reference

    def _stop_motion(self):
        pass  # the reference stays where it is: the arm stands still under impedance

    def _recover(self):
        pass

    def _close(self):
        self._running = False
        if self._runner is not None and self._runner is not threading.current_thread():
            self._runner.join(timeout=5)
        try:
            _send(self._conn, {"op": "close"})
        except (BrokenPipeError, OSError):
            pass  # the child already exited; join below reaps it
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._conn.close()

    # ------------------------------------------------------------------ time

    def advance(self, seconds: float) -> None:
        """Run the arm for `seconds` of simulated time (virtual clock only), one 1 ms cycle at a time."""
        if not self.virtual_clock:
            raise BackendError("advance() drives the virtual clock; this sim runs in real time (use wait())")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise RobalignError(f"advance(seconds) needs a finite number >= 0; got {seconds!r}")
        self._run_cycles(round(seconds / self.control_dt))

    def wait(self, seconds: float) -> None:
        if self.virtual_clock:
            self.advance(seconds)
        else:
            time.sleep(seconds)

    def _run_cycles(self, n: int) -> None:
        while n > 0:
            batch = min(n, BATCH)
            with self._lock:
                if not self._connected and not self.virtual_clock:
                    return  # closed while the real-time thread waited for the lock
                self._require_connected()
                start = self._t
                refs = np.empty((batch, 7))
                for k in range(batch):
                    self._t = start + (k + 1) * self.control_dt
                    refs[k] = self._tick(self._t)  # the cycle at time t: watchdog, schedule, smoother
                _send(self._conn, {"op": "step"}, refs)
                header, (qs, dqs) = _recv(self._conn)
                for k in range(batch):
                    self._record(start + (k + 1) * self.control_dt, qs[k], dqs[k], refs[k])
            n -= batch

    def _realtime_loop(self) -> None:
        while self._running:
            behind = (time.monotonic() - self._t0_wall) - self._t
            cycles = min(int(behind / self.control_dt), 10 * BATCH)
            if cycles > 0:
                self._run_cycles(cycles)
            else:
                time.sleep(self.control_dt)


if __name__ == "__main__":  # the physics process, started by SimBackend._open
    args = argparse.ArgumentParser()
    args.add_argument("--fd", type=int, required=True)
    args.add_argument("--xml", required=True)
    args.add_argument("--dt", type=float, required=True)
    args.add_argument("--q0", required=True)
    a = args.parse_args()
    _physics_process(Connection(a.fd), a.xml, a.dt, json.loads(a.q0))
