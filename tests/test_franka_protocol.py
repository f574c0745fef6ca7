"""The franky and libfranka backends against the libfranka-protocol simulators.

Each test runs pytest again inside `unshare -n` (a private network namespace with only
loopback: the simulators bind 0.0.0.0 on the fixed ports 1337/1338), under a timeout; the inner
tests start and stop the simulator themselves:

- the conformance suite (test_backend_conformance.py) with robot=franky on franky-sim and
  robot=libfranka on franka-sim;
- franky streaming a recorded policy for 5 s on franky-sim, tracking error reported;
- a stalled stream on franka-sim --enforce-comm-constraints, for franky and libfranka: the real
  communication_constraints_violation, FAULT, the episode saved flagged, recover() (netns_tests.py).

The simulators live in their own venvs (scripts/setup.sh makes .venv-sims/); a missing one or a
missing `unshare` fails these tests rather than skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from franka_protocol.simulators import SIMS, available

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_in_netns(args: list[str], env: dict | None = None, timeout: float = 420) -> None:
    for kind in ("franky-sim", "franka-sim"):
        if not available(kind):
            pytest.fail(f"{kind} is not installed in {SIMS}/{kind}; run scripts/setup.sh")
    if shutil.which("unshare") is None:
        pytest.fail("`unshare` (util-linux) is needed to run the simulators in a private network namespace")
    inner = (f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider -o addopts='' "
             + " ".join(args))
    try:
        proc = subprocess.run(["unshare", "-n", "bash", "-c", inner], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the namespaced run took more than {timeout} s:\n{(err.stdout or b'')[-4000:]}")
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, f"inner pytest failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


@pytest.mark.parametrize("backend", ["franky", "libfranka"])
def test_conformance_suite_against_the_protocol_simulator(backend):
    run_in_netns(["tests/test_backend_conformance.py"], env={"ROBALIGN_CONFORMANCE_BACKEND": backend})


def test_happy_path_and_stalled_stream_scenarios():
    run_in_netns(["-s", "tests/franka_protocol/netns_tests.py"])
