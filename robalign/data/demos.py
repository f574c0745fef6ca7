"""Scripted-expert demonstrations written as a LeRobotDataset (v3.0, video-encoded).

Per frame the dataset holds the agentview image (video), proprioception, task-object
state, the action, the instruction (lerobot's `task`), the expert's behaviour mode, and
every privileged value the env reports (as `privileged.<name>`), so later stages can score
demos with the same objectives as rollouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from robalign.errors import RobalignError, UnknownNameError
from robalign.data.outputs import atomic_output_dir
from robalign.types import Trajectory

FPS = 20


def dataset_features(trajectory: Trajectory) -> dict:
    """lerobot feature spec for trajectories shaped like `trajectory` (no observation.image
    when it was recorded without the camera)."""
    features = {}
    if trajectory.frames is not None:
        h, w, _ = trajectory.frames.shape[1:]
        features["observation.image"] = {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]}
    features |= {
        "observation.state": {"dtype": "float32", "shape": (trajectory.state.shape[1],), "names": None},
        "observation.environment_state": {
            "dtype": "float32", "shape": (trajectory.env_state.shape[1],), "names": None,
        },
        "action": {"dtype": "float32", "shape": (trajectory.action.shape[1],), "names": None},
        "mode": {"dtype": "string", "shape": (1,), "names": None},
    }
    for key, value in trajectory.info.items():
        features[f"privileged.{key}"] = {"dtype": "float32", "shape": value.shape[1:] or (1,), "names": None}
    return features


def dataset_root(path: str | Path, setting: str = "dataset", hint: str = "") -> Path:
    """The LeRobotDataset root of a `robalign demos` run directory or of the dataset itself.

    `setting` names the CLI key the path came from and `hint` adds the alternative, for the
    error when the path holds no dataset.
    """
    root = Path(path)
    root = root / "dataset" if (root / "dataset" / "meta").is_dir() else root
    if not (root / "meta" / "info.json").is_file():
        raise RobalignError(f"{setting}={str(path)!r} is not a LeRobotDataset (no meta/info.json); give a "
                            f"directory written by `robalign demos`{hint}")
    return root


def recorded_env(path: str | Path) -> str | None:
    """The env name a `robalign demos` run recorded in config.yaml beside its dataset;
    None when the dataset came from elsewhere."""
    from omegaconf import OmegaConf

    recorded = dataset_root(path).parent / "config.yaml"
    return OmegaConf.load(recorded).get("env", {}).get("name") if recorded.is_file() else None


def recorded_look(path: str | Path) -> str | None:
    """How the frames of a `robalign demos` run drew the robot ($ROBALIGN_ROBOT_MESHES when it
    ran, from its summary.json); None when not recorded."""
    import json

    summary = dataset_root(path).parent / "summary.json"
    return json.loads(summary.read_text()).get("robot_meshes") if summary.is_file() else None


def episode_modes(modes: Sequence[str], n: int) -> list[str]:
    """An even mix: modes in turn, so any prefix of the episodes is as balanced as it can be."""
    return [modes[i % len(modes)] for i in range(n)]


def write_demos(env_name: str, n: int, output_dir: str | Path, **options) -> Path:
    """Record `n` expert demonstrations of `env_name` into `output_dir`/dataset.

    Options as `record_demos`. Nothing is left at `output_dir` if anything fails.
    Returns the dataset root.
    """
    validate_demo_request(env_name, n, options.get("modes"))
    with atomic_output_dir(output_dir) as tmp:
        record_demos(tmp, env_name, n, **options)
    return Path(output_dir).absolute() / "dataset"


def validate_demo_request(env_name: str, n: object, modes: Sequence[str] | None) -> list[str]:
    """Check the request before any work; return the modes to use."""
    import robalign.envs as envs

    env_cls = envs.env_class(env_name)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise RobalignError(f"n must be a positive number of episodes; got {n!r}")
    modes = list(modes) if modes else list(env_cls.modes)
    for mode in modes:
        if mode not in env_cls.modes:
            raise UnknownNameError(f"mode of {env_name}", mode, list(env_cls.modes))
    return modes


def record_demos(
    root: Path,
    env_name: str,
    n: int,
    modes: Sequence[str] | None = None,
    seed: int = 0,
    distractors: bool = False,
    image_size: int = 96,
    progress: bool = True,
    require_success: bool = True,
    perturb: float = 0.0,
    camera: bool = True,
    num_envs: int = 2,
) -> list[Trajectory]:
    """Record `n` expert episodes (modes in turn) as a LeRobotDataset at `root`/dataset.

    Seeds are seed, seed+1, ...; a failed expert episode is replaced by the next seed when
    `require_success` (imitation data should show the task done). `perturb` > 0 records
    DART demos (`expert_episode`): the arm is pushed off the path, the label corrects.
    `camera=False` leaves out observation.image (4x faster: 1.3 s instead of 5.3 s per
    pick-place-lang episode) for policies that read state only. `num_envs` processes run
    the episodes (robalign.episode_pool) while this one writes them; the dataset is the
    same for any number. Returns the recorded trajectories without frames (their seeds
    and modes are in `provenance`).
    """
    import os

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from robalign.episode_pool import EpisodePool

    # lerobot encodes each episode's video with SVT-AV1, which prints a 20-line banner and a
    # preset note per episode at its default log level; errors still show
    os.environ.setdefault("SVT_LOG", "1")
    modes = validate_demo_request(env_name, n, modes)
    if not (isinstance(perturb, (int, float)) and 0 <= perturb <= 1):
        raise RobalignError(f"perturb must be a number in [0, 1] (std of the push, in action units); got {perturb!r}")
    options = {"distractors": distractors, "image_size": image_size, "camera": camera}
    dataset, recorded = None, []
    bar = tqdm(total=n, desc=f"demos {env_name}", unit="ep", disable=not progress)
    try:
        with EpisodePool(env_name, options, workers=num_envs, episodes=n) as pool:
            for trajectory in pool.expert_demos(episode_modes(modes, n), seed, perturb=perturb,
                                                require_success=require_success):
                if dataset is None:
                    dataset = LeRobotDataset.create(
                        repo_id=f"robalign/{env_name}", fps=FPS, features=dataset_features(trajectory),
                        root=root / "dataset", robot_type="panda", use_videos=camera,
                    )
                _add_episode(dataset, trajectory)
                trajectory.frames = None  # the dataset has them; keep memory flat
                recorded.append(trajectory)
                bar.update(1)
    finally:
        bar.close()
        if dataset is not None:
            dataset.finalize()
    return recorded


def _add_episode(dataset, trajectory: Trajectory) -> None:
    for t in range(len(trajectory)):
        frame = {} if trajectory.frames is None else {"observation.image": trajectory.frames[t]}
        frame |= {
            "observation.state": trajectory.state[t],
            "observation.environment_state": trajectory.env_state[t],
            "action": trajectory.action[t],
            "mode": trajectory.mode or "",
            "task": trajectory.instruction,
        }
        for key, value in trajectory.info.items():
            frame[f"privileged.{key}"] = np.atleast_1d(value[t]).astype(np.float32)
        dataset.add_frame(frame)
    dataset.save_episode()
