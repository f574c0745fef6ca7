"""Writes reach_around_joints.json: the Panda's joint positions while the scripted expert does
one `reach-around` episode (mode "left", seed 0), 5 s at the env's control rate. The Franka-
protocol tests stream it, as offsets from the simulated arm's start, as "a recorded policy".

    MUJOCO_GL=egl python tests/franka_protocol/record_reach_around.py
"""

import json
from pathlib import Path

import numpy as np

import robalign.envs as envs
from robalign.envs.experts import ScriptedExpert

from robalign.envs.scene import CONTROL_HZ as HZ  # the tasks' control rate

env = envs.make("reach-around", camera=False)
env.reset(seed=0)
expert = ScriptedExpert(env, "left", np.random.default_rng(0))
hz = HZ
qs = []
for _ in range(int(5 * hz)):
    qs.append(env.data.qpos[:7].tolist())
    env.step(expert.act() if not expert.done else np.zeros(7))
env.close()
out = Path(__file__).with_name("reach_around_joints.json")
out.write_text(json.dumps({"hz": hz, "source": "reach-around, scripted expert, mode left, seed 0", "q": qs}))
print(out, len(qs), "steps; joint range (rad):", np.ptp(np.array(qs), 0).round(3).tolist())
