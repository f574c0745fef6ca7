"""`robalign pretrain` and `robalign eval` end to end on a few real demos, plus their parts."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from robalign.cli import VERBS, compose
from robalign.errors import RobalignError


def main(argv):
    """One `robalign VERB ...` call in this process, returning the verb's result (errors raise)."""
    return VERBS[argv[0]](compose(argv[0], argv[1:]))

TINY = ["policy.config.down_dims=[16,32]", "policy.config.horizon=8", "policy.config.n_action_steps=4",
        "policy.config.num_train_timesteps=20", "policy.config.num_inference_steps=5",
        "policy.config.diffusion_step_embed_dim=16"]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "reach"
    main(["demos", "env=reach-around", "n=3", "preview=0", f"output_dir={out}", "progress=false"])
    return out


def pretrain_args(demos, out, steps, *extra):
    return ["pretrain", f"dataset={demos}", f"output_dir={out}", f"steps={steps}", "train.batch_size=16",
            "train.checkpoint_every=10", "train.log_every=5", "threads=1", "progress=false", *TINY, *extra]


def test_windows_match_lerobots_delta_timestamps(demos):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from robalign.policies.data import DemoWindows

    windows = DemoWindows(demos, ("state", "environment_state"), n_obs_steps=2, horizon=8)
    fps = 20
    ds = LeRobotDataset("robalign/demos", root=demos / "dataset", delta_timestamps={
        "observation.state": [-1 / fps, 0], "observation.environment_state": [-1 / fps, 0],
        "action": [(i - 1) / fps for i in range(8)]})
    first_episode_end = int(windows.episode_end[0])
    for i in (0, 1, 5, first_episode_end - 3, first_episode_end, first_episode_end + 1, len(windows) - 1):
        ours, theirs = windows.batch(torch.tensor([i])), ds[i]
        for key, column in (("state", "observation.state"), ("environment_state", "observation.environment_state"),
                            ("action", "action")):
            torch.testing.assert_close(ours[key][0], theirs[column], msg=f"{key} at frame {i}")
        assert torch.equal(ours["action_is_pad"][0], theirs["action_is_pad"]), i
    assert windows.num_episodes == 3 and sorted(windows.episode_modes) == ["left", "over", "right"]


def test_windows_from_trajectories_equal_the_windows_of_their_dataset(tmp_path):
    """An alignment method imitating its own rollouts cuts windows from Trajectory objects;
    they are the windows the same episodes give once written as a demo dataset."""
    from robalign.data.demos import record_demos
    from robalign.policies.data import DemoWindows

    trajectories = record_demos(tmp_path / "d", "reach-around", 2, camera=False, progress=False, num_envs=1)
    keys = ("state", "environment_state")
    from_dataset = DemoWindows(tmp_path / "d", keys, n_obs_steps=2, horizon=8)
    from_memory = DemoWindows.from_trajectories(trajectories, keys, n_obs_steps=2, horizon=8)
    assert len(from_memory) == len(from_dataset) == sum(len(t) for t in trajectories)
    assert torch.equal(from_memory.episode_start, from_dataset.episode_start)
    assert torch.equal(from_memory.episode_end, from_dataset.episode_end)
    everything = torch.arange(len(from_dataset))
    ours, theirs = from_memory.batch(everything), from_dataset.batch(everything)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert from_memory.episode_modes == from_dataset.episode_modes == [t.mode for t in trajectories]
    with pytest.raises(RobalignError, match="reads 'image' but some episodes were recorded without it"):
        DemoWindows.from_trajectories(trajectories, ("state", "image"), 2, 8)
    with pytest.raises(RobalignError, match="no episodes"):
        DemoWindows.from_trajectories([], keys, 2, 8)


def test_pretrain_then_eval(demos, tmp_path):
    run = tmp_path / "run"
    policy_dir = main(pretrain_args(demos, run, 30))
    assert sorted(p.name for p in policy_dir.iterdir()) == ["config.json", "model.safetensors", "stats.safetensors"]
    history = json.loads((run / "training.json").read_text())["history"]
    assert [h["step"] for h in history] == [5, 10, 15, 20, 25, 30]
    assert history[-1]["loss"] < history[0]["loss"]
    assert any(p.stat().st_size > 0 for p in (run / "tensorboard").iterdir())
    assert (run / "loss.png").stat().st_size > 0 and (run / "config.yaml").is_file()
    saved = json.loads((run / "checkpoints" / "last" / "train_state.json").read_text())["train"]
    assert saved["episode_start_share"] == 0.0  # null in the config: diffusion's own default

    vector = main(["eval", f"policy={policy_dir}", "episodes=3", "max_steps=20", "videos=1", "launcher=vector",
                   f"output_dir={tmp_path / 'ev'}", "progress=false"])
    assert set(vector) >= {"success_rate", "success_ci95", "objectives", "mode_share", "episode_length"}
    assert vector["episode_length"] == 20.0 and vector["success_rate"] == 0.0  # 20 steps cannot reach the goal
    assert vector["success_ci95"][0] == 0.0 and 0.5 < vector["success_ci95"][1] < 0.6
    assert set(vector["objectives"]) == {"clearance", "left-side", "path-length", "success", "time"}
    assert abs(sum(vector["mode_share"].values()) - 1) < 1e-9
    episodes = json.loads((tmp_path / "ev" / "episodes.json").read_text())
    assert [e["objectives"]["time"] for e in episodes] == [-20.0] * 3  # each episode's objectives, averaged above
    assert np.mean([e["objectives"]["clearance"] for e in episodes]) == pytest.approx(vector["objectives"]["clearance"])
    videos = list((tmp_path / "ev" / "videos").iterdir())
    assert len(videos) == 1 and videos[0].name == "seed100000-failure.mp4" and videos[0].stat().st_size > 1000
    assert (tmp_path / "ev" / "summary.png").stat().st_size > 0
    serial = main(["eval", f"policy={policy_dir}", "episodes=3", "max_steps=20", "videos=0", "launcher=serial",
                   f"output_dir={tmp_path / 'es'}", "progress=false"])
    assert serial["objectives"] == vector["objectives"]  # same seeds, same episodes, whichever launcher


def test_resume_after_kill_matches_an_uninterrupted_run(demos, tmp_path):
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "robalign", *pretrain_args(demos, killed, 40)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = killed / "checkpoints" / "last" / "train_state.json"
    deadline = time.monotonic() + 300
    while not (state.is_file() and json.loads(state.read_text())["step"] >= 10):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "policy").exists()
    with pytest.raises(RobalignError, match="already exists and is not empty"):
        main(pretrain_args(demos, killed, 40))
    main(pretrain_args(demos, killed, 40, "resume=true"))
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "robalign", *pretrain_args(demos, straight, 40)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, b = load_file(killed / "policy" / "model.safetensors"), load_file(straight / "policy" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    with pytest.raises(RobalignError, match="training settings differ"):
        main(pretrain_args(demos, killed, 40, "resume=true", "train.lr=0.01"))


def test_episode_start_share_draws_that_share_from_episode_starts(demos):
    from robalign.policies.data import DemoWindows
    from robalign.policies.training import TrainConfig

    data = DemoWindows(demos, ("state",), 2, 16)
    offset = torch.arange(len(data)) - data.episode_start  # step within its episode
    g = torch.Generator().manual_seed(0)
    mixed = TrainConfig(batch_size=1000, episode_start_share=0.25, episode_start_steps=4).sample(
        len(data), data.window_starts(4), g)
    uniform = TrainConfig(batch_size=1000).sample(len(data), data.window_starts(8), g)
    assert (offset[mixed[:250]] < 4).all() and len(mixed) == 1000
    early_share = float((offset[mixed] < 4).float().mean())
    uniform_share = float((offset[uniform] < 4).float().mean())
    expected = 3 * 4 / len(data)  # 3 episodes, their first 4 steps each
    assert abs(uniform_share - expected) < 0.03 and abs(early_share - (0.25 + 0.75 * expected)) < 0.04
    with pytest.raises(RobalignError, match="bad training setting episode_start_share=1.5"):
        TrainConfig(episode_start_share=1.5)


def test_bad_pretrain_and_eval_requests_leave_nothing(demos, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RobalignError, match="holds reach-around demos, but env=mug-grasp"):
        main(pretrain_args(demos, out, 5, "env=mug-grasp"))
    with pytest.raises(RobalignError, match="is not a LeRobotDataset"):
        main(["pretrain", f"dataset={tmp_path}", f"output_dir={out}"])
    with pytest.raises(RobalignError, match="unknown policy 'difusion'; valid choices: diffusion, diffusion-paper"):
        main(["pretrain", f"dataset={demos}", "policy=difusion"])
    with pytest.raises(RobalignError, match="bad training setting lr=-1"):
        main(pretrain_args(demos, out, 5, "train.lr=-1"))
    with pytest.raises(RobalignError, match="resume=true needs output_dir to be an earlier pretrain run"):
        main(pretrain_args(demos, out, 5, "resume=true"))
    with pytest.raises(RobalignError, match="unknown launcher 'slurm'; valid choices: serial, vector, ray"):
        main(["eval", f"policy={tmp_path}", "launcher=slurm", f"output_dir={out}"])
    with pytest.raises(RobalignError, match="is partial"):
        main(["eval", f"policy={tmp_path}", f"output_dir={out}"])
    with pytest.raises(RobalignError, match="unknown reach-around layout 'dense'; valid choices: default"):
        main(["eval", f"policy={tmp_path}", "env.layout=dense", f"output_dir={out}"])  # before the policy loads
    with pytest.raises(RobalignError, match="env.layout=dense is read by eval and align only"):
        main(["demos", "env=pick-place-lang", "env.layout=dense", f"output_dir={out}"])
    assert not out.exists()


def test_wilson_interval():
    from robalign.policies.evaluation import wilson_interval

    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.2775), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(10, 10), (0.7225, 1.0), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(5, 10), (0.2366, 0.7634), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(90, 100), (0.8256, 0.9448), atol=1e-4)


@pytest.mark.parametrize("env_name", ["reach-around", "mug-grasp", "pick-place-lang"])
def test_behaviour_mode_names_the_experts_mode(env_name):
    import robalign.envs as envs
    from robalign.rollout import expert_episode

    env = envs.make(env_name, camera=False)
    try:
        for mode in envs.env_class(env_name).modes:
            assert envs.env_class(env_name).behaviour_mode(expert_episode(env, mode, seed=7)) == mode
    finally:
        env.close()


@pytest.mark.slow
def test_ray_and_vector_launchers_match_the_serial_run(demos, tmp_path):
    from robalign.policies import load_policy
    from robalign.policies.evaluation import run_ray, run_serial, run_vector

    policy_dir = main(pretrain_args(demos, tmp_path / "run", 10))
    options = {"camera": False, "distractors": False, "max_steps": 12}
    seeds = [3, 4, 5]
    on_ray = run_ray(str(policy_dir), "reach-around", seeds, options, num_tasks=2)
    here = run_serial(load_policy(policy_dir), "reach-around", seeds, options)
    vector = run_vector(load_policy(policy_dir), "reach-around", seeds, options, num_envs=2)
    for a, b, c in zip(on_ray, here, vector, strict=True):
        assert a.provenance == b.provenance == c.provenance  # env, seed, scene, robot look, actor
        np.testing.assert_array_equal(a.action, b.action)
        np.testing.assert_array_equal(a.state, b.state)
        np.testing.assert_array_equal(c.action, b.action)
