"""The policy runtime: chunk scheduling, action conversion, observations, cameras, `robalign deploy`."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from robalign.errors import RobalignError
from robalign.hardware.cameras import CameraError, OpenCVCamera, StaleFrame
from robalign.hardware.runtime import (ACTION_GAIN, POS_SCALE, ActionSchedule, DeltaToJoint, DeployConfig,
                                       ObservationAssembler, PandaKinematics, deploy)
from robalign.hardware.sim import HOME
from robalign.policies import make_policy

TINY = dict(down_dims=(16, 32), horizon=8, n_action_steps=4, num_train_timesteps=20, num_inference_steps=5,
            diffusion_step_embed_dim=16)
E = 10


@pytest.fixture(scope="module")
def kin():
    return PandaKinematics()


def tiny_policy(directory, action_range=0.2):
    g = torch.Generator().manual_seed(0)
    stats = {}
    for key, dim in (("state", 16), ("environment_state", E), ("action", 7)):
        lo = -torch.rand(dim, generator=g) * action_range - action_range / 2
        stats[key] = {"min": lo, "max": lo + action_range}
    policy = make_policy("diffusion", stats, TINY, state_dim=16, env_state_dim=E, action_dim=7).eval()
    policy.save_pretrained(directory)
    return policy


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    """A module:function giving the task-object state, as a user's pose tracker would."""
    (tmp_path / "fake_tracker.py").write_text(f"import numpy as np\ndef poses():\n    return np.zeros({E}, 'f4')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_tracker:poses"


# ---------------------------------------------------------------- scheduling


def test_latest_only_takes_the_newest_chunk_and_drops_past_slots():
    s = ActionSchedule(dt=0.1)
    s.add(0.0, np.arange(4)[:, None] * np.ones((4, 2)))  # actions 0, 1, 2, 3 for slots from t=0
    assert s.action_at(0.05)[0] == 0 and s.action_at(0.25)[0] == 2
    s.add(0.2, 10 + np.arange(4)[:, None] * np.ones((4, 2)))  # a newer plan replaces it
    assert s.action_at(0.25)[0] == 10 and s.action_at(0.55)[0] == 13
    assert s.action_at(0.61) is None  # every slot passed: the policy fell behind
    with pytest.raises(RobalignError, match="merge"):
        ActionSchedule(0.1, merge="average")
    with pytest.raises(RobalignError, match="finite"):
        s.add(1.0, np.full((4, 2), np.nan))


def test_temporal_ensemble_weights_every_chunk_covering_the_slot():
    s = ActionSchedule(dt=0.1, merge="temporal-ensemble", ensemble_decay=0.5)
    s.add(0.0, np.zeros((4, 1)))
    s.add(0.1, np.ones((4, 1)))
    w = np.exp(-0.5 * np.arange(2))
    assert s.action_at(0.15)[0] == pytest.approx(w[1] / w.sum())  # the older chunk weighs more (ACT)
    assert s.action_at(0.45)[0] == pytest.approx(1.0)  # only the newer chunk reaches this slot


# ---------------------------------------------------------------- kinematics and observations


def test_delta_to_joint_moves_the_grip_site_by_the_scaled_offset(kin):
    convert = DeltaToJoint(kin)
    np.testing.assert_allclose(convert(HOME, np.zeros(7)), HOME, atol=1e-9)
    pos0, rot0 = kin.tcp(HOME)
    for axis in range(3):
        action = np.zeros(7)
        action[axis] = 1.0
        pos, rot = kin.tcp(convert(HOME, action))
        want = pos0.copy()
        want[axis] += ACTION_GAIN * POS_SCALE
        np.testing.assert_allclose(pos, want, atol=2e-4)
        np.testing.assert_allclose(rot, rot0, atol=2e-3)
    yaw = np.zeros(7)
    yaw[5] = 1.0
    _, rot = kin.tcp(convert(HOME, yaw))
    angle = math.acos((np.trace(rot @ rot0.T) - 1) / 2)
    assert angle == pytest.approx(ACTION_GAIN * 0.5, abs=2e-3)


def test_observed_state_matches_the_tasks_proprioception(kin):
    import mujoco

    import robalign.envs as envs
    env = envs.make("reach-around", camera=False)
    try:
        env.reset(seed=3)
        rng = np.random.default_rng(0)
        policy = make_policy("diffusion", _stats(), TINY, state_dim=16, env_state_dim=E, action_dim=7)
        assembler = ObservationAssembler(policy, kin, env_state=lambda: np.zeros(E))
        for _ in range(5):
            q = HOME + rng.uniform(-0.3, 0.3, 7)
            env.data.qpos[env._arm_qpos] = q
            mujoco.mj_forward(env.model, env.data)
            want = env.proprioception()
            got = assembler.state(q)
            np.testing.assert_allclose(got[:3], want[:3], atol=1e-4)  # grip site position, world frame
            assert abs(np.dot(got[3:7], want[3:7])) == pytest.approx(1.0, abs=1e-4)  # the same orientation
            np.testing.assert_allclose(got[9:], want[9:], atol=1e-6)  # joint positions
    finally:
        env.close()


def _stats():
    return {k: {"min": -torch.ones(d), "max": torch.ones(d)} for k, d in (("state", 16), ("environment_state", E),
                                                                          ("action", 7))}


def test_missing_inputs_are_named(kin):
    policy = make_policy("diffusion", _stats(), TINY, state_dim=16, env_state_dim=E, action_dim=7)
    with pytest.raises(RobalignError, match="environment_state .*module:function"):
        ObservationAssembler(policy, kin)


# ---------------------------------------------------------------- cameras


def test_opencv_camera_keeps_the_latest_frame_and_flags_stale_ones(tmp_path):
    from robalign.data.videos import write_mp4
    frames = np.zeros((10, 32, 48, 3), np.uint8)
    for i in range(10):
        frames[i, :, : 4 * (i + 1)] = 255  # a white bar that grows: frame i has 4(i+1) white columns
    video = write_mp4(tmp_path / "cam.mp4", frames, fps=20)
    with OpenCVCamera(str(video)) as cam:
        first = cam.latest()
        time.sleep(0.2)
        later = cam.latest(max_age=0.2)
        assert later.seq > first.seq and later.t > first.t and later.image.shape == (32, 48, 3)
        white = int((later.image[16].mean(-1) > 128).sum())
        assert white == pytest.approx(4 * (later.seq + 1), abs=2)  # the newest frame, not a queued one
        time.sleep(0.6)  # the 0.5 s file has ended: the slot ages
        with pytest.raises(StaleFrame, match="ms old"):
            cam.latest(max_age=0.1)
    with pytest.raises(CameraError, match="could not open"):
        OpenCVCamera(str(tmp_path / "missing.mp4")).start()


# ---------------------------------------------------------------- deploy


def test_deploy_streams_to_the_sim_and_records_a_lerobot_episode(tmp_path, tracker):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    tiny_policy(tmp_path / "policy")
    out = tmp_path / "deploy"
    summary = deploy(DeployConfig(policy=str(tmp_path / "policy"), duration=1.5, output_dir=str(out),
                                  env_state=tracker, robot_settings={"virtual_clock": True}), progress=False)
    assert summary["steps"] == 30 and not summary["flagged"] and summary["inference_ms_p50"] > 0
    assert summary["warmup_ms"] > 0 and summary["idle_slots"] == 0
    assert json.loads((out / "deploy.json").read_text())["steps"] == 30
    ds = LeRobotDataset("robalign/deploy", root=out / "dataset")
    assert ds.num_episodes == 1 and len(ds) == 30
    sent = np.stack([ds[i]["joint_sent"].numpy() for i in range(30)])
    assert np.all(np.isfinite(sent)) and np.abs(sent[-1] - HOME).max() > 1e-3  # commands went out and moved it
    controller = json.loads((out / "controller" / "000" / "meta.json").read_text())
    assert controller["reason"] == "closed" and controller["cycles"] > 1000


def test_dry_run_sends_nothing(tmp_path, tracker):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    tiny_policy(tmp_path / "policy")
    out = tmp_path / "dry"
    summary = deploy(DeployConfig(policy=str(tmp_path / "policy"), duration=0.5, output_dir=str(out), dry_run=True,
                                  env_state=tracker, robot_settings={"virtual_clock": True}), progress=False)
    assert summary["dry_run"] and summary["steps"] == 10
    ds = LeRobotDataset("robalign/deploy", root=out / "dataset")
    assert np.all(np.isnan(np.stack([ds[i]["joint_sent"].numpy() for i in range(10)])))
    targets = np.stack([ds[i]["joint_target"].numpy() for i in range(10)])
    assert np.all(np.isfinite(targets))  # everything but the sending ran
    assert not (out / "controller").exists() or not any((out / "controller").iterdir())  # it never streamed


def test_deploy_bad_settings_fail_before_anything_is_written(tmp_path):
    from robalign.cli import main
    tiny_policy(tmp_path / "policy")
    out = tmp_path / "never"
    with pytest.raises(RobalignError, match="environment_state"):
        deploy(DeployConfig(policy=str(tmp_path / "policy"), output_dir=str(out)), progress=False)
    with pytest.raises(RobalignError, match="merge"):
        deploy(DeployConfig(policy=str(tmp_path / "policy"), output_dir=str(out), merge="mean"), progress=False)
    with pytest.raises(RobalignError, match="duration"):
        deploy(DeployConfig(policy=str(tmp_path / "policy"), output_dir=str(out), duration=-1), progress=False)
    assert not out.exists() and not list(tmp_path.glob(".never*"))
    assert main(["deploy", f"policy={tmp_path / 'nope'}", f"output_dir={out}"]) != 0
    assert not out.exists()
