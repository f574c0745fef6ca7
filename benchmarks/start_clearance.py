"""How many reach-around episodes can satisfy `clearance` at all: the objective is the
gripper's closest approach to the vase over the whole episode, step 0 included, so an
episode whose arm starts within the threshold (5 cm) fails it whatever the policy does.

    .venv/bin/python benchmarks/start_clearance.py [--shift -0.04 -0.02]

Prints, per seed range (demos, alignment's training states, held-out evaluation), the
share of initial states already within the threshold, and the same for the held-out seeds
with the vase placed `--shift` metres further from the arm's start (along +x). The default
shifts show layouts closer to the arm: -0.04 is the layout before task revision 2, where
34% of held-out seeds started within 5 cm.
"""

from __future__ import annotations

import argparse

import numpy as np

import robalign.envs as envs
from robalign.envs.objectives import get_objective

RANGES = {"demos (seeds 0-59)": range(60), "alignment training states (50000-50127)": range(50000, 50128),
          "held-out, benchmark's 40 (100000-100039)": range(100000, 100040),
          "held-out (100000-100099)": range(100000, 100100)}


def start_clearance(env, seeds) -> np.ndarray:
    out = []
    for seed in seeds:
        env.reset(seed=seed)
        out.append(env.privileged()["vase_clearance"])
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shift", type=float, nargs="*", default=[-0.04, -0.02])
    args = parser.parse_args()
    threshold = get_objective("clearance").threshold
    env = envs.make("reach-around", camera=False)
    task = env.unwrapped if hasattr(env, "unwrapped") else env
    print(f"| initial states | within {threshold * 100:.0f} cm at step 0 | start clearance min / median / max |")
    print("|---|---|---|")
    for name, seeds in RANGES.items():
        c = start_clearance(task, seeds)
        print(f"| {name} | {np.mean(c < threshold):.1%} ({np.sum(c < threshold)} of {len(c)}) | "
              f"{c.min() * 100:.1f} / {np.median(c) * 100:.1f} / {c.max() * 100:.1f} cm |", flush=True)
    place = type(task).place_objects
    for dx in args.shift:
        def shifted(self, rng, dx=dx):
            place(self, rng)
            joint = self.vase.joints[0]
            placed = self.scene.sim.data.get_joint_qpos(joint)[:3]  # not yet in xpos before mj_forward
            self.set_free_body(joint, placed + np.array([dx, 0.0, 0.0]))

        type(task).place_objects = shifted
        c = start_clearance(task, RANGES["held-out (100000-100099)"])
        print(f"| held-out, vase {dx * 100:+.0f} cm in x | {np.mean(c < threshold):.1%} | "
              f"{c.min() * 100:.1f} / {np.median(c) * 100:.1f} / {c.max() * 100:.1f} cm |", flush=True)
    type(task).place_objects = place
    env.close()


if __name__ == "__main__":
    main()
