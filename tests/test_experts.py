"""Every mode of every scripted expert solves its task (a few seeds; benchmarks/ runs 50)."""

import numpy as np
import pytest

import robalign.envs as envs
from robalign.errors import UnknownNameError
from robalign.rollout import expert_episode

CASES = [(name, mode) for name in envs.available() for mode in envs.env_class(name).modes]


@pytest.mark.parametrize("env_name,mode", CASES)
def test_expert_mode_succeeds(env_name, mode):
    env = envs.make(env_name, camera=False, distractors=True)
    try:
        results = [expert_episode(env, mode, seed) for seed in (0, 1)]
    finally:
        env.close()
    assert all(t.success for t in results), [len(t) for t in results]
    assert all(len(t) < env.max_steps for t in results)


def test_unknown_mode_names_the_choices():
    env = envs.make("reach-around", camera=False)
    try:
        env.reset(seed=0)
        with pytest.raises(UnknownNameError, match="left, right, over"):
            envs.ScriptedExpert(env, "under", np.random.default_rng(0))
    finally:
        env.close()


def test_reach_around_modes_differ_in_their_objectives():
    env = envs.make("reach-around", camera=False)
    try:
        left, right, over = (expert_episode(env, m, 4) for m in ("left", "right", "over"))
    finally:
        env.close()
    side = envs.get_objective("left-side")
    assert side(left) > 0.05 and side(right) < -0.05 and abs(side(over)) < 0.05
    length = envs.get_objective("path-length")
    assert length(over) > length(left)  # over the top is the shorter way here
