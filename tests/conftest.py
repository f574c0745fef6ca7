import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

import robalign.envs as envs  # noqa: E402

ENV_NAMES = envs.available()


@pytest.fixture(params=ENV_NAMES)
def env_name(request):
    return request.param


def synthetic_trajectory(i: int, frames: bool = True, steps: int = 8):
    """A small made-up Trajectory whose `info["score"]` is i (for store and server tests)."""
    import numpy as np

    from robalign.types import Trajectory

    rng = np.random.default_rng(i)
    video = None
    if frames:  # a coloured square moving right, so each video looks different
        video = np.zeros((steps, 48, 64, 3), np.uint8)
        for t in range(steps):
            video[t, 16:32, 4 + 6 * t:20 + 6 * t] = (40 * i % 255, 200, 255 - 30 * i % 255)
    return Trajectory(
        state=rng.normal(size=(steps, 4)).astype(np.float32), action=rng.uniform(-1, 1, (steps, 7)).astype(np.float32),
        instruction=f"move the block (variant {i % 3})", success=bool(i % 2),
        info={"score": np.full(steps, i, np.float32)}, frames=video, mode="left" if i % 2 else "right",
        provenance={"env": None, "seed": i, "actor": "synthetic"},
    )


@pytest.fixture
def make_trajectory():
    return synthetic_trajectory


def serve_in_subprocess(store_dir, port: int):
    """`robalign prefs serve` as its own process (so it can be SIGKILLed); returns once it answers."""
    import subprocess
    import sys
    import time

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "robalign", "prefs", "serve", f"store={store_dir}", f"port={port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
    proc.kill()
    raise RuntimeError("server did not come up in 60 s")
