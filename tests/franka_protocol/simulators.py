"""Start and stop the libfranka-protocol simulators for tests.

franky-sim 1.0.4 and franka-sim 1.1.7 each pin a MuJoCo that robalign's own (3.8.1, for
robosuite) is not, so scripts/setup.sh installs each into its own venv under .venv-sims/
(ROBALIGN_SIMS overrides). They listen on the fixed libfranka ports 1337/1338 and bind all
interfaces, so the tests that start them run inside `unshare -n` (a private network namespace
with only loopback): ``in_private_netns()`` says whether this process is in one.

franka-sim fetches its FR3 model through robot_descriptions (a GitHub download) unless
$FR3_MJCF names a local one; ``fr3_mjcf()`` writes one from the MuJoCo Menagerie FR3 that ships
inside franky-sim, with the mesh folder made absolute.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIMS = Path(os.environ.get("ROBALIGN_SIMS", REPO / ".venv-sims"))
READY = {"franky-sim": "Connect to the server", "franka-sim": "Server listening"}


def sim_python(kind: str) -> Path:
    return SIMS / kind / "bin" / "python"


def available(kind: str) -> bool:
    return sim_python(kind).exists()


def in_private_netns() -> bool:
    """True when the only network interface is loopback (inside `unshare -n`).

    /proc/net/dev follows the network namespace; /sys/class/net does not without a sysfs remount.
    """
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def fr3_mjcf(out_dir: Path) -> Path:
    """franky-sim's Menagerie FR3 MJCF with an absolute mesh dir, for franka-sim's $FR3_MJCF."""
    assets = subprocess.run(
        [str(sim_python("franky-sim")), "-c", "import franky_sim, os; print(os.path.dirname(franky_sim.__file__))"],
        check=True, capture_output=True, text=True, timeout=60).stdout.strip() + "/assets"
    xml = Path(assets, "fr3.xml").read_text().replace('meshdir="assets"', f'meshdir="{assets}/meshes"')
    out = Path(out_dir) / "fr3.xml"
    out.write_text(xml)
    return out


class Simulator:
    """One simulator process: `with Simulator("franka-sim", "--enforce-comm-constraints"):`."""

    def __init__(self, kind: str, *args: str, log_dir: Path, timeout: float = 60.0):
        if kind not in READY:
            raise ValueError(f"unknown simulator {kind!r}; choices: {sorted(READY)}")
        if not in_private_netns():
            raise RuntimeError(f"{kind} binds 0.0.0.0:1337; start it only inside `unshare -n`")
        self.kind, self.log = kind, Path(log_dir) / f"{kind}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if kind == "franky-sim":
            cmd = [str(sim_python(kind)), "-m", "franky_sim.run_server", "-s", "mujoco", *args]
        else:
            env["FR3_MJCF"] = str(fr3_mjcf(Path(log_dir)))
            cmd = [str(sim_python(kind)), "-m", "franka_sim.run_server", "--no-gripper", *args]
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while READY[kind] not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{kind} did not start (exit {self.proc.returncode}); its log:\n"
                                   f"{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(0.3)  # the UDP state socket opens just after the TCP listener

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
