"""`robalign demos` writes a LeRobotDataset that lerobot itself reads back."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import robalign.envs as envs
from robalign.cli import main
from robalign.data import demos as demos_module
from robalign.data.demos import write_demos
from robalign.errors import OutputDirError, RobalignError, UnknownNameError
from robalign.rollout import expert_episode


@pytest.mark.slow
def test_demos_round_trip_through_lerobot(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "run"
    assert main(["demos", "env=reach-around", "n=2", "modes=[left,over]", "seed=5", "preview=1",
                 f"output_dir={out}", "progress=false"]) == 0
    assert (out / "config.yaml").read_text().count("reach-around") >= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modes"] == {"left": 1, "over": 1}
    assert summary["env_revision"] == envs.env_class("reach-around").revision == 2
    assert sorted(p.name for p in (out / "videos").glob("*.mp4")) == ["left-seed5.mp4", "over-seed6.mp4"]

    ds = LeRobotDataset("robalign/reach-around", root=out / "dataset")
    assert ds.num_episodes == 2 and len(ds) == summary["frames"]

    # Re-run the same expert episode: what lerobot yields must be what was written.
    env = envs.make("reach-around")
    try:
        expected = expert_episode(env, "left", 5)
    finally:
        env.close()
    first = [ds[i] for i in range(len(expected))]
    assert all(f["episode_index"].item() == 0 for f in first)
    np.testing.assert_allclose(np.stack([f["action"].numpy() for f in first]), expected.action, atol=1e-6)
    np.testing.assert_allclose(np.stack([f["observation.state"].numpy() for f in first]), expected.state, atol=1e-5)
    assert {f["task"] for f in first} == {expected.instruction}
    assert {f["mode"] for f in first} == {"left"}
    frames = np.stack([(f["observation.image"].numpy().transpose(1, 2, 0) * 255) for f in first])
    assert frames.shape == expected.frames.shape
    err = np.abs(frames - expected.frames.astype(np.float32)).mean()
    assert err < 6.0, f"video frames differ from rendered ones by {err:.1f} grey levels on average (lossy codec)"
    np.testing.assert_allclose(np.stack([f["privileged.vase_clearance"].numpy() for f in first]).ravel(),
                               expected.info["vase_clearance"], atol=1e-6)


def test_state_only_demos_leave_the_image_out(tmp_path, capsys):
    """`camera=false`: the same episodes without observation.image; a policy reading state
    trains from them, one reading images is told what the dataset lacks."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from robalign.policies.data import DemoWindows

    out = tmp_path / "run"
    assert main(["demos", "env=pick-place-lang", "n=1", "camera=false", "preview=0", f"output_dir={out}",
                 "progress=false"]) == 0
    assert json.loads((out / "summary.json").read_text())["camera"] is False
    ds = LeRobotDataset("robalign/pick-place-lang", root=out / "dataset")
    assert "observation.image" not in ds.meta.features and not ds.meta.video_keys
    env = envs.make("pick-place-lang", camera=False)
    try:
        expected = expert_episode(env, "direct", 0)
    finally:
        env.close()
    windows = DemoWindows(out, ("instruction", "state", "environment_state"), 1, 4)
    np.testing.assert_allclose(windows.arrays["action"].numpy(), expected.action, atol=1e-6)
    assert windows.shapes()["env_state_layout"] == [[5, 1, 4], [5, 1, 4], [5, 1, 4], [3, 1]]
    with pytest.raises(RobalignError, match="lacks observation.image"):
        DemoWindows(out, ("state", "image"), 1, 4)
    assert main(["demos", "env=pick-place-lang", "n=1", "camera=no", f"output_dir={tmp_path / 'b'}"]) != 0
    assert "camera must be true or false; got 'no'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_killed_run_leaves_nothing(tmp_path):
    """SIGTERM mid-recording: the hidden temp dir is deleted and output_dir never appears."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "robalign", "demos", "env=reach-around", "n=200", "camera=false",
                             "preview=0", f"output_dir={out}", "progress=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".run.*.partial/dataset")) and time.monotonic() < deadline:
            time.sleep(0.2)  # recording has started once lerobot's dataset exists
        assert list(tmp_path.glob(".run.*.partial/dataset")), "the recording never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_fail_before_writing(tmp_path):
    with pytest.raises(UnknownNameError, match="cube-group"):
        write_demos("nope", 1, tmp_path / "a")
    with pytest.raises(UnknownNameError, match="left, right, over"):
        write_demos("reach-around", 1, tmp_path / "b", modes=["sideways"])
    for n in (0, -3, 1.5, True):
        with pytest.raises(RobalignError, match="positive"):
            write_demos("reach-around", n, tmp_path / "c")
    for perturb in (-0.1, 1.5, "big"):
        with pytest.raises(RobalignError, match=r"perturb must be a number in \[0, 1\]"):
            write_demos("reach-around", 1, tmp_path / "d", perturb=perturb)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_or_occupied_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="not writable"):
        write_demos("reach-around", 1, blocker / "run")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="not empty"):
        write_demos("reach-around", 1, occupied)
    assert (occupied / "keep.txt").read_text() == "mine"


def test_failure_mid_run_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = demos_module._add_episode

    def add_then_fail(dataset, trajectory):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        real(dataset, trajectory)

    monkeypatch.setattr(demos_module, "_add_episode", add_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_demos("reach-around", 3, tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == [], os.listdir(tmp_path)
