"""Build (once) the trajectory pools the reward benchmarks compare rewards on.

    MUJOCO_GL=egl .venv/bin/python benchmarks/reward_data.py --env reach-around [--distractors] [--size 160]

One PreferenceStore per (task, scene) under benchmarks/.cache/reward-pools/, holding
`--size` episodes of the task's scripted expert, modes taking turns, with smooth AR(1)
drift of a random std in [0, 0.6] on the translation, so that the objective a simulated
person cares about (`clearance`, `handle-grasp`) varies continuously between episodes.
Each episode keeps its 96 px agentview frames (the H.264 video people would watch) and
its privileged info (what the true objective reads). Killed runs continue where they
stopped: an episode is in the store or it is not.
"""

import argparse
import time
from pathlib import Path

import numpy as np

import robalign.envs as envs  # before anything imports mujoco
from robalign.preferences.store import PreferenceStore
from robalign.rollout import expert_episode

CACHE = Path(__file__).parent / ".cache" / "reward-pools"


def pool_dir(env_name: str, distractors: bool) -> Path:
    return CACHE / f"{env_name}-{'distractors' if distractors else 'clean'}"


def build_pool(env_name: str, distractors: bool, size: int) -> Path:
    root = pool_dir(env_name, distractors)
    with PreferenceStore(root) as store:
        done = {store.trajectory_info(t)["provenance"]["seed"] for t in store.trajectory_ids()}
        missing = [s for s in range(size) if s not in done]
        if not missing:
            return root
        env = envs.make(env_name, distractors=distractors, camera=True, image_size=96)
        start = time.perf_counter()
        try:
            for k, seed in enumerate(missing):
                drift = float(np.random.default_rng([seed, 7]).uniform(0.0, 0.6))
                traj = expert_episode(env, env.modes[seed % len(env.modes)], seed, drift=drift)
                store.add_trajectory(traj)
                print(f"\r{root.name}: {k + 1}/{len(missing)} episodes "
                      f"({(time.perf_counter() - start) / (k + 1):.1f} s each)", end="", flush=True)
        finally:
            env.close()
        print()
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", required=True, choices=["reach-around", "mug-grasp"])
    parser.add_argument("--distractors", action="store_true")
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    build_pool(args.env, args.distractors, args.size)


if __name__ == "__main__":
    main()
