"""Build (once) the trajectory pools the reward benchmarks compare rewards on.

    MUJOCO_GL=egl .venv/bin/python benchmarks/reward_data.py --env reach-around [--distractors] [--size 160] \
        [--frame-size 96] [--first-seed 0]

One PreferenceStore per (task, scene, frame size, robot look) under
benchmarks/.cache/reward-pools/, holding `--size` episodes of the task's scripted expert,
modes taking turns, with smooth AR(1) drift of a random std in [0, 0.6] on the translation,
so that the objective a simulated person cares about (`clearance`, `handle-grasp`) varies
continuously between episodes. Each episode keeps its agentview frames, 96 px unless
--frame-size says otherwise (the H.264 video people would watch), and its privileged info
(what the true objective reads). Two worker processes record (robalign.episode_pool).
Episode seeds run from --first-seed (0); a pool from another first seed is a separate
store, fresh episodes to confirm on what was chosen by looking at the default pool.
Killed runs continue where they stopped: an episode is in the store or it is not.
"""

import argparse
import time
from pathlib import Path

import numpy as np

import robalign.envs as envs  # before anything imports mujoco
from robalign.envs.scene import robot_meshes
from robalign.preferences.store import PreferenceStore

CACHE = Path(__file__).parent / ".cache" / "reward-pools"


def pool_dir(env_name: str, distractors: bool, frame_size: int = 96, first_seed: int = 0) -> Path:
    """One pool per task revision, scene, frame size, robot look ($ROBALIGN_ROBOT_MESHES) and first seed."""
    scene = "distractors" if distractors else "clean"
    fresh = f"-from{first_seed}" if first_seed else ""
    return CACHE / f"{env_name}-r{envs.env_class(env_name).revision}-{scene}-{frame_size}px-{robot_meshes()}{fresh}"


def drift_job(pool, modes: tuple[str, ...], seed: int):
    """The pools' episode for `seed`: the expert's modes in turn, smooth drift of a random std in [0, 0.6]."""
    return pool.expert_job(modes[seed % len(modes)], seed, drift=float(np.random.default_rng([seed, 7]).uniform(0.0, 0.6)))


def build_pool(env_name: str, distractors: bool, size: int, frame_size: int = 96, first_seed: int = 0) -> Path:
    root = pool_dir(env_name, distractors, frame_size, first_seed)
    with PreferenceStore(root) as store:
        done = {store.trajectory_info(t)["provenance"]["seed"] for t in store.trajectory_ids()}
        missing = [s for s in range(first_seed, first_seed + size) if s not in done]
        if not missing:
            return root
        from robalign.episode_pool import EpisodePool

        options = {"distractors": distractors, "camera": True, "image_size": frame_size}
        modes = envs.env_class(env_name).modes
        start = time.perf_counter()
        with EpisodePool(env_name, options, workers=2, episodes=len(missing)) as pool:
            jobs = [drift_job(pool, modes, seed) for seed in missing]
            for k, traj in enumerate(pool.ordered(jobs)):
                store.add_trajectory(traj)
                print(f"\r{root.name}: {k + 1}/{len(missing)} episodes "
                      f"({(time.perf_counter() - start) / (k + 1):.1f} s each)", end="", flush=True)
        print()
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", required=True, choices=["reach-around", "mug-grasp"])
    parser.add_argument("--distractors", action="store_true")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--frame-size", type=int, default=96, help="agentview side, pixels")
    parser.add_argument("--first-seed", type=int, default=0, help="episode seeds from here (> 0: another pool)")
    args = parser.parse_args()
    build_pool(args.env, args.distractors, args.size, args.frame_size, args.first_seed)


if __name__ == "__main__":
    main()
