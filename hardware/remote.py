"""`robot=remote`: the policy on the GPU workstation, the arm's backend on its real-time PC, over ZeroMQ.

    robot PC:     robalign robot serve robot=franky robot_settings.host=172.16.0.2 bind=10.0.0.2
    workstation:  robalign deploy robot=remote robot_settings.server=10.0.0.2 ...

Four sockets, each doing one job:

    commands   PUSH -> PULL, CONFLATE   the newest command only: a late packet is superseded,
                                         never queued. Each carries a sequence number and the
                                         sender's monotonic send time; the server drops any
                                         packet whose number or send time does not grow.
    heartbeat  PUSH -> PULL              the workstation says it is alive every heartbeat_period;
                                         after link_timeout of silence the server holds the arm
    state      PUB -> SUB, CONFLATE      the server publishes the arm's state every state_period;
                                         it is also the server's heartbeat: a client whose newest
                                         state is older than link_timeout raises LinkLost
    control    REQ -> REP                connect, read_state, hold, stop, recover (JSON)

Target times cross the wire relative to the send time (t - t_send) and the server re-bases them
on its own clock at receipt, so the two clocks never need to agree; the one-way latency
(about 0.1 ms on a LAN) is absorbed by the schedule. The SafetyFilter runs on both sides: the
workstation filters before sending (typed errors, nothing sent), the server's backend filters
again before its arm moves.

Command packet (little-endian): b"RBC1", seq u64, t_send f64, n u32, then n x 8 float64
(t - t_send, q1..q7). Nothing on the wire is unpickled.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import struct
import threading
import time

import numpy as np

from robalign.errors import RobalignError
from robalign.hardware.backend import (FAULT, IDLE, BackendConfig, BackendError, BackendFault, RobotBackend,
                                       RobotState, _time_of, as_targets, import_client, make_backend,
                                       register_backend, tcp_position)
from robalign.hardware.safety import SafetyFault, SafetyFilter, SafetyMonitor, SafetyViolation, TimedTarget

_MAGIC = b"RBC1"
_HEAD = struct.Struct("<4sQdI")
PORTS = {"control": 5555, "commands": 5556, "heartbeat": 5557, "state": 5558}


class LinkLost(BackendError):
    """The other side has been silent for longer than link_timeout."""


def _zmq():
    return import_client("zmq")


def encode_command(seq: int, t_send: float, targets: list[TimedTarget]) -> bytes:
    body = np.array([[t.t - t_send, *t.q] for t in targets], np.float64).reshape(-1, 8)
    return _HEAD.pack(_MAGIC, seq, t_send, len(targets)) + body.tobytes()


def decode_command(packet: bytes) -> tuple[int, float, np.ndarray]:
    """(seq, t_send, (n, 8) rows of t - t_send and q); RobalignError on a malformed packet."""
    if len(packet) < _HEAD.size:
        raise RobalignError(f"command packet of {len(packet)} bytes is shorter than its {_HEAD.size}-byte header")
    magic, seq, t_send, n = _HEAD.unpack_from(packet)
    if magic != _MAGIC or len(packet) != _HEAD.size + 64 * n:
        raise RobalignError(f"malformed command packet: magic {magic!r} (want {_MAGIC!r}), {len(packet)} bytes "
                            f"for {n} targets (want {_HEAD.size + 64 * n})")
    return seq, t_send, np.frombuffer(packet, np.float64, offset=_HEAD.size).reshape(n, 8)


class RobotServer:
    """Runs on the arm's PC: serves one backend to one workstation over ZeroMQ."""

    def __init__(self, backend: RobotBackend, bind: str = "127.0.0.1", ports: dict | None = None,
                 state_period: float = 0.01, link_timeout: float = 0.5):
        zmq = _zmq()
        self.backend, self.state_period, self.link_timeout = backend, state_period, link_timeout
        self.ctx = zmq.Context()
        ports = {**PORTS, **(ports or {})}
        self.sockets, self.ports = {}, {}
        for name, kind in (("control", zmq.REP), ("commands", zmq.PULL), ("heartbeat", zmq.PULL),
                           ("state", zmq.PUB)):
            sock = self.ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            if name in ("commands", "state"):
                sock.setsockopt(zmq.CONFLATE, 1)  # newest only
            if ports[name] == 0:
                self.ports[name] = sock.bind_to_random_port(f"tcp://{bind}")
            else:
                sock.bind(f"tcp://{bind}:{ports[name]}")
                self.ports[name] = ports[name]
            self.sockets[name] = sock
        self.last_seq, self.last_t_send = -1, -float("inf")
        self.dropped = 0  # packets with an old sequence number or send time
        # s from the workstation's send to receipt here: meaningful only where both share a
        # monotonic clock (one machine, as in benchmarks/hardware_latency.py)
        self.wire_latency: list[float] = []
        self.last_error: str | None = None
        self.last_heartbeat: float | None = None
        self.link_held = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._state_seq = 0

    def start(self) -> "RobotServer":
        """Serve in a background thread (tests, benchmarks); `serve_forever` blocks instead."""
        self._running = True
        self._thread = threading.Thread(target=self.serve_forever, name="robot-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        zmq = _zmq()
        self._running = True
        poller = zmq.Poller()
        for name in ("control", "commands", "heartbeat"):
            poller.register(self.sockets[name], zmq.POLLIN)
        next_state = time.monotonic()
        while self._running:
            timeout_ms = max(0.0, (next_state - time.monotonic()) * 1000)
            for sock, _ in poller.poll(timeout_ms):
                if sock is self.sockets["control"]:
                    self._control(sock.recv())
                elif sock is self.sockets["commands"]:
                    self._command(sock.recv())
                else:
                    sock.recv()
                    self.last_heartbeat = time.monotonic()
                    self.link_held = False
            if time.monotonic() >= next_state:
                self._check_link()
                self._publish()
                next_state = time.monotonic() + self.state_period

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in self.sockets.values():
            sock.close()
        self.ctx.term()

    def _command(self, packet: bytes) -> None:
        now = self.backend.clock()
        try:
            seq, t_send, rows = decode_command(packet)
        except RobalignError as err:
            self.last_error = str(err)
            return
        if seq <= self.last_seq or not t_send > self.last_t_send:
            self.dropped += 1
            return
        self.last_seq, self.last_t_send = seq, t_send
        self.wire_latency.append(time.monotonic() - t_send)
        targets = [TimedTarget(now + float(r[0]), r[1:].copy()) for r in rows]
        try:
            self.backend.submit(targets)  # the robot side's own safety filter
            self.last_error = None
        except (SafetyViolation, SafetyFault, BackendError) as err:
            self.last_error = f"{type(err).__name__}: {err}"

    def _check_link(self) -> None:
        if (self.last_heartbeat is not None and not self.link_held
                and time.monotonic() - self.last_heartbeat > self.link_timeout):
            self.link_held = True
            if self.backend.state not in (IDLE, FAULT):
                self.backend.hold()

    def _state_dict(self) -> dict:
        s = self.backend.read_state()
        return {"seq": self._state_seq, "t": s.t, "q": s.q.tolist(), "dq": s.dq.tolist(), "q_ref": s.q_ref.tolist(),
                "mode": s.mode, "fault": s.fault, "last_error": self.last_error, "dropped": self.dropped,
                "last_seq": self.last_seq}

    def _publish(self) -> None:
        try:
            state = self._state_dict()
        except BackendError:  # the backend is not connected yet: there is no state to report
            return
        self.sockets["state"].send(json.dumps(state).encode())
        self._state_seq += 1

    def _control(self, request: bytes) -> None:
        try:
            req = json.loads(request.decode())
            op = req.get("op")
            if op == "connect":
                self.backend.connect()
                self.last_seq, self.last_t_send = -1, -float("inf")  # a new session numbers from 0
            elif op == "hold":
                self.backend.hold()
            elif op == "stop":
                self.backend.stop(str(req.get("reason", "remote stop")))
            elif op == "recover":
                self.backend.recover()
            elif op == "config":
                cfg = getattr(self.backend, "config", None)
                reply = {"ok": True, "arm": cfg.arm if cfg else "panda"}
                self.sockets["control"].send(json.dumps(reply).encode())
                return
            elif op != "read_state":
                raise RobalignError(f"unknown request {op!r}; allowed: connect, read_state, hold, stop, recover")
            reply = {"ok": True, "state": self._state_dict(), "clock": self.backend.clock()}
        except (RobalignError, ValueError) as err:
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        self.sockets["control"].send(json.dumps(reply).encode())


@register_backend("remote")
class RemoteBackend(RobotBackend):
    """The workstation's end: filters, numbers and sends commands; mirrors the server's state."""

    def __init__(self, config: BackendConfig | None = None, server: str = "127.0.0.1", ports: dict | None = None,
                 heartbeat_period: float = 0.05, link_timeout: float = 0.5, request_timeout: float = 5.0,
                 **overrides):
        self.config = BackendConfig.build(**overrides) if config is None else config
        self.server, self.ports = server, {**PORTS, **(ports or {})}
        self.heartbeat_period, self.link_timeout, self.request_timeout = heartbeat_period, link_timeout, request_timeout
        self.filter = self.monitor = None
        self._seq = 0
        self._latest: dict | None = None
        self._latest_at = 0.0
        self._offset = 0.0  # client clock - server clock
        self._lock = threading.RLock()
        self._running = False
        self._local_fault: str | None = None  # this side's monitor latched FAULT
        self._sent: collections.deque = collections.deque(maxlen=256)  # the targets sent lately, oldest first
        self.ctx = None

    def clock(self) -> float:
        return time.monotonic()

    @property
    def state(self) -> str:
        if self._local_fault is not None:
            return FAULT
        return self._fresh_state()["mode"] if self._latest is not None else IDLE

    def connect(self) -> RobotState:
        zmq = _zmq()
        with self._lock:
            if self.ctx is None:
                self.ctx = zmq.Context()
                self._req = self._socket(zmq.REQ, "control")
                self._req.setsockopt(zmq.RCVTIMEO, int(self.request_timeout * 1000))
                self._cmd = self._socket(zmq.PUSH, "commands")
                self._hb = self._socket(zmq.PUSH, "heartbeat")
                self._sub = self._socket(zmq.SUB, "state", conflate=True)
                self._sub.setsockopt(zmq.SUBSCRIBE, b"")
                self._running = True
                threading.Thread(target=self._background, name="remote-link", daemon=True).start()
            arm = self._request("config")["arm"]
            if arm != self.config.arm:
                self.config = dataclasses.replace(self.config, arm=arm)
            self.filter = SafetyFilter(self.config.limits(), self.config.safety,
                                       fk=tcp_position() if self.config.workspace_fk else None)
            reply = self._request("connect")
            self._adopt(reply)
            self._reseed()
            return self._to_state(self._latest)

    def read_state(self) -> RobotState:
        return self._to_state(self._fresh_state())

    def submit(self, targets) -> list[TimedTarget]:
        items = as_targets(targets)
        with self._lock:
            if self.monitor is None:
                raise BackendError("remote: not connected; call connect() first")
            latest = self._fresh_state()
            fault = self._local_fault or (latest["fault"] if latest["mode"] == FAULT else None)
            if fault is not None:
                raise BackendFault(f"remote: the arm is in FAULT ({fault}); call recover() first")
            self._replan(items, latest)
            safe, error = [], None
            for item in items:
                before = self.monitor.last_safe
                target = self.monitor.submit(item)
                if self.monitor.state == "FAULT":  # this side latched: stop the arm, refuse until recover()
                    self._local_fault = f"safety monitor: {self.monitor.violations} consecutive violations"
                    self._adopt(self._request("stop", reason=f"workstation {self._local_fault}"))
                    raise SafetyFault(f"remote: {self._local_fault}; the arm stopped and commands are refused "
                                      "until recover()")
                if self.monitor.last_result.rejected is not None:
                    error = self.monitor.last_result.rejected
                    break
                if target is not before:
                    safe.append(target)
            if safe:
                self._sent.extend(safe)
                t_send = self.clock()
                self._cmd.send(encode_command(self._seq, t_send, safe))
                self._seq += 1
            if error is not None:
                raise error
            return safe

    def _replan(self, items: list, latest: dict) -> None:
        """As LocalBackend._replan, anchored at the target sent just before the new chunk's first
        time, or at the reference the arm reports when none is (or the last is in the past)."""
        last = self.monitor.last_safe
        if last is None:
            return
        now, t = self.clock(), _time_of(items[0]) if items else None
        if last.t < now:
            self.monitor.replan_from(TimedTarget(now, np.array(latest["q_ref"], np.float64)))
        elif t is not None and now < t <= last.t:
            earlier = [x for x in self._sent if now <= x.t < t]
            self.monitor.replan_from(earlier[-1] if earlier
                                     else TimedTarget(now, np.array(latest["q_ref"], np.float64)))

    def hold(self) -> None:
        self._adopt(self._request("hold"))

    def stop(self, reason: str) -> None:
        self._adopt(self._request("stop", reason=reason))

    def recover(self) -> None:
        self._adopt(self._request("recover"))
        self._local_fault = None
        self._reseed()

    def close(self) -> None:
        with self._lock:
            if self.ctx is None:
                return
            if self._latest is not None and self._latest["mode"] not in (IDLE, FAULT):
                try:
                    self.stop("closed")
                except BackendError:
                    pass  # the server is gone: its link watchdog holds the arm
            self._running = False
            time.sleep(self.heartbeat_period)
            for sock in (self._req, self._cmd, self._hb, self._sub):
                sock.close(linger=0)
            self.ctx.term()
            self.ctx = None

    @property
    def server_stats(self) -> dict:
        """What the server last reported about the command stream: dropped packets, last seq, last error."""
        s = self._fresh_state()
        return {"dropped": s["dropped"], "last_seq": s["last_seq"], "last_error": s["last_error"]}

    # ------------------------------------------------------------------ internals

    def _socket(self, kind, name, conflate=False):
        zmq = _zmq()
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if conflate:
            sock.setsockopt(zmq.CONFLATE, 1)
        sock.connect(f"tcp://{self.server}:{self.ports[name]}")
        return sock

    def _request(self, op: str, **fields) -> dict:
        zmq = _zmq()
        with self._lock:
            if self.ctx is None:
                raise BackendError("remote: not connected; call connect() first")
            t0 = self.clock()
            try:
                self._req.send(json.dumps({"op": op, **fields}).encode())
                reply = json.loads(self._req.recv().decode())
            except zmq.Again:
                # a REQ socket that missed its reply is stuck; replace it
                self._req.close(linger=0)
                self._req = self._socket(zmq.REQ, "control")
                self._req.setsockopt(zmq.RCVTIMEO, int(self.request_timeout * 1000))
                raise LinkLost(f"remote: no reply to {op!r} from {self.server}:{self.ports['control']} within "
                               f"{self.request_timeout} s") from None
            if not reply.get("ok"):
                raise BackendError(f"remote: the server refused {op!r}: {reply.get('error')}")
            if "clock" in reply:
                self._offset = (t0 + self.clock()) / 2 - reply["clock"]
            return reply

    def _adopt(self, reply: dict) -> None:
        if "state" in reply:
            self._latest, self._latest_at = reply["state"], self.clock()

    def _reseed(self) -> None:
        s = self._request("read_state")["state"]
        self._sent.clear()
        self.monitor = SafetyMonitor(self.filter, start=TimedTarget(self.clock(), np.array(s["q"], np.float64)))

    def _background(self) -> None:
        zmq = _zmq()
        next_hb = 0.0
        while self._running:
            if self.clock() >= next_hb:
                try:
                    self._hb.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # not connected yet: the server's link watchdog notices if it stays so
                next_hb = self.clock() + self.heartbeat_period
            if self._sub.poll(int(self.heartbeat_period * 1000 / 2)):
                msg = json.loads(self._sub.recv().decode())
                with self._lock:
                    self._latest, self._latest_at = msg, self.clock()

    def _fresh_state(self) -> dict:
        if self._latest is None:
            raise BackendError("remote: not connected; call connect() first")
        age = self.clock() - self._latest_at
        if age > self.link_timeout:
            raise LinkLost(f"remote: no state from the server for {age:.3f} s (link_timeout {self.link_timeout} s)")
        return self._latest

    def _to_state(self, s: dict) -> RobotState:
        mode, fault = (FAULT, self._local_fault) if self._local_fault is not None else (s["mode"], s["fault"])
        return RobotState(s["t"] + self._offset, np.array(s["q"]), np.array(s["dq"]), np.array(s["q_ref"]),
                          mode, fault)


def serve(robot: str = "sim", bind: str = "127.0.0.1", link_timeout: float = 0.5, **backend_settings) -> None:
    """`robalign robot serve`: serve the named backend until interrupted."""
    backend = make_backend(robot, **backend_settings)
    backend.connect()
    server = RobotServer(backend, bind=bind, link_timeout=link_timeout)
    print(f"robot serve: {robot} on {bind}, ports {server.ports}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
        backend.close()
