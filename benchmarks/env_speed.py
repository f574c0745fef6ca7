"""Steps/s of every task with and without the 96 px camera, beside a bare robosuite Lift
env with the same camera settings (shadows and reflections off), measured in one run.

    .venv/bin/python benchmarks/env_speed.py [--steps 200]

Prints a table with the ratio task/Lift for each column. Random actions; rendering and
robosuite's 25 controller substeps per 20 Hz step dominate the cost.
"""

import argparse
import os
import time

import robalign.envs as envs  # first: it selects MuJoCo's EGL backend before mujoco loads
from robalign.envs.scene import _load_triton_before_egl

import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def steps_per_second(step, reset, steps: int) -> float:
    reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.3, (steps, 7)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        step(a)
    return steps / (time.perf_counter() - start)


def bare_lift(camera: bool):
    import robosuite
    from robosuite.controllers import load_composite_controller_config

    env = robosuite.make(
        "Lift", robots="Panda", controller_configs=load_composite_controller_config(controller="BASIC", robot="Panda"),
        has_renderer=False, has_offscreen_renderer=camera, use_camera_obs=camera, camera_names="agentview",
        camera_heights=96, camera_widths=96, control_freq=20, horizon=100_000, ignore_done=True, hard_reset=False,
    )
    env.reset()
    if camera:  # the same render settings our tasks use
        scene = env.sim._render_context_offscreen.scn
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    _load_triton_before_egl()  # Lift's EGL context comes first here; triton after it segfaults
    rows = {}
    for camera in (False, True):
        lift = bare_lift(camera)
        rows.setdefault("robosuite Lift (bare)", {})[camera] = steps_per_second(lift.step, lift.reset, args.steps)
        lift.close()
        # each task with the robot drawn from its hulls (the default), then reach-around from
        # robosuite's visual meshes, as Lift draws it (ROBALIGN_ROBOT_MESHES is read per env)
        for name, look in [(n, "collision") for n in envs.available()] + [("reach-around", "visual")]:
            os.environ["ROBALIGN_ROBOT_MESHES"] = look
            env = envs.make(name, camera=camera)
            label = name if look == "collision" else f"{name} (visual meshes)"
            rows.setdefault(label, {})[camera] = steps_per_second(env.step, lambda: env.reset(seed=0), args.steps)
            env.close()
    base = rows["robosuite Lift (bare)"]
    print("| env | steps/s, no camera | ratio to Lift | steps/s, 96 px camera | ratio to Lift |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r[False]:.1f} | {r[False] / base[False]:.2f} | {r[True]:.1f} | {r[True] / base[True]:.2f} |")


if __name__ == "__main__":
    main()
