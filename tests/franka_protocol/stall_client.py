"""Streams to a Franka-protocol simulator until the test stalls this process (SIGSTOP), then
reports what the backend did: run by test_franka_protocol.py inside `unshare -n`.

    python stall_client.py BACKEND EPISODE_DIR     -> prints "STREAMING" when streaming, then one
                                                       JSON line with the outcome
"""

import json
import sys
import time

import numpy as np

from robalign.hardware.backend import FAULT, BackendFault, make_backend
from robalign.hardware.safety import SafetyViolation, TimedTarget

name, episode_dir = sys.argv[1], sys.argv[2]
out = {}
with make_backend(name, host="127.0.0.1", realtime=False, episode_dir=episode_dir, hold_timeout=30.0) as robot:
    state = robot.connect()
    q0, t0 = state.q.copy(), robot.clock()

    def stream(seconds: float) -> None:
        end = robot.clock() + seconds
        while robot.clock() < end and robot.state != FAULT:
            t = robot.clock() + 0.1
            try:
                robot.submit(TimedTarget(t, q0 + 0.1 * np.sin(t - t0) * np.array([1, 0, 0, 0, 0, 0, 1.0])))
            except SafetyViolation:  # stopped between stamping and sending: the target's time had passed
                out["stale_commands"] = out.get("stale_commands", 0) + 1
            except BackendFault:  # the reflex landed between the state check above and this submit
                break  # what the test checks happens next (FAULT, the refused submit, recover)
            time.sleep(0.02)

    stream(0.5)
    print("STREAMING", flush=True)  # the test stops this process now, and continues it later
    stream(10.0)
    out["state_after_stall"] = robot.state
    out["fault"] = robot.read_state().fault
    try:
        robot.submit(TimedTarget(robot.clock() + 0.1, q0))
        out["submit_in_fault"] = "accepted"
    except BackendFault:
        out["submit_in_fault"] = "BackendFault"
    robot.recover()
    out["state_after_recover"] = robot.state
    q0, t0 = robot.read_state().q.copy(), robot.clock()
    stream(1.0)
    out["state_after_restream"] = robot.state
    out["tracking"] = robot.tracking_error()
print(json.dumps(out), flush=True)
