"""The Franka-protocol scenarios; run only inside `unshare -n` by tests/test_franka_protocol.py.

(Not named test_*.py so the main run does not collect it outside the private namespace.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from franka_protocol.simulators import Simulator, in_private_netns
from robalign.hardware.backend import STREAMING, make_backend
from robalign.hardware.safety import TimedTarget

HERE = Path(__file__).parent
pytestmark = pytest.mark.skipif(not in_private_netns(), reason="needs a private network namespace (unshare -n)")


def test_franky_streams_a_recorded_policy_on_franky_sim(tmp_path):
    """Connect, stream 5 s of a recorded reach-around joint trajectory at 20 Hz, report tracking."""
    rec = json.loads((HERE / "reach_around_joints.json").read_text())
    offsets = 0.25 * (np.array(rec["q"]) - rec["q"][0])  # scaled to stay inside the FR3's range from its start
    with Simulator("franky-sim", log_dir=tmp_path), \
            make_backend("franky", host="127.0.0.1", realtime=False, episode_dir=str(tmp_path / "ep")) as robot:
        q0 = robot.connect().q.copy()
        dt = 1.0 / rec["hz"]
        t0 = robot.clock()
        for k, offset in enumerate(offsets):
            robot.submit(TimedTarget(t0 + (k + 2) * dt, q0 + offset))  # two steps ahead, as a chunk would
            time.sleep(max(0.0, t0 + (k + 1) * dt - robot.clock()))
        for k in range(len(offsets), len(offsets) + 12):  # 0.6 s more on the last target: let it settle
            robot.submit(TimedTarget(t0 + (k + 2) * dt, q0 + offsets[-1]))
            time.sleep(max(0.0, t0 + (k + 1) * dt - robot.clock()))
        state, err = robot.read_state(), robot.tracking_error()
        assert state.mode == STREAMING
        np.testing.assert_allclose(state.q_ref, q0 + offsets[-1], atol=2e-3)
        np.testing.assert_allclose(state.q, q0 + offsets[-1], atol=0.05)
        print(f"franky on franky-sim: {err['cycles']} cycles, tracking error mean {err['mean']:.4f} rad, "
              f"max {err['max']:.4f} rad")
        assert err["cycles"] > 2000 and err["mean"] < 0.01 and err["max"] < 0.05  # measured 0.0027, 0.012


@pytest.mark.parametrize("backend", ["franky", "libfranka"])
def test_a_stalled_stream_faults_with_the_real_reflex_and_recovers(backend, tmp_path):
    """franka-sim --enforce-comm-constraints; the client process is stopped for 0.3 s mid-stream."""
    episodes = tmp_path / "ep"
    with Simulator("franka-sim", "--enforce-comm-constraints", log_dir=tmp_path):
        client = subprocess.Popen([sys.executable, str(HERE / "stall_client.py"), backend, str(episodes)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            line = client.stdout.readline()
            assert line.strip() == "STREAMING", client.stderr.read()
            client.send_signal(signal.SIGSTOP)  # the host stalls: no command for 300 cycles
            time.sleep(0.3)
            client.send_signal(signal.SIGCONT)
            out, err = client.communicate(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
    assert client.returncode == 0, err
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["state_after_stall"] == "FAULT"
    assert "communication_constraints_violation" in outcome["fault"]
    assert outcome["submit_in_fault"] == "BackendFault"
    assert outcome["state_after_recover"] == "IDLE" and outcome["state_after_restream"] == "STREAMING"
    flagged = [json.loads((d / "meta.json").read_text()) for d in sorted(episodes.glob("[0-9][0-9][0-9]"))]
    faulted = [m for m in flagged if m["flagged"]]
    assert not list(episodes.glob(".*.partial")), "an episode was left half-written"
    assert len(faulted) == 1 and "communication_constraints_violation" in faulted[0]["reason"]
    assert faulted[0]["cycles"] > 100  # the controller log up to the fault is kept
