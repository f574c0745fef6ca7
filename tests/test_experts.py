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


def test_dart_demos_record_the_expert_label_not_the_pushed_action():
    """perturb > 0 (DART): the arm is pushed off the clean path and still succeeds, and the
    record keeps the expert's corrective actions, so replaying them open-loop does not give
    the recorded states (it does for a clean demo: the sim is deterministic)."""
    from robalign.rollout import record_episode

    env = envs.make("pick-place-lang", camera=False)
    try:
        clean = expert_episode(env, "direct", 3)
        pushed = expert_episode(env, "direct", 3, perturb=0.2)

        def replay(trajectory):  # its first 20 actions, then still (until the step limit)
            steps = iter(trajectory.action[:20])
            return record_episode(env, lambda obs: next(steps, np.zeros(7)), 3)

        assert clean.success and pushed.success and pushed.provenance["perturb"] == 0.2
        n = min(len(clean), len(pushed))
        assert np.abs(pushed.state[:n, :3] - clean.state[:n, :3]).max() > 0.005  # pushed > 5 mm off the path
        np.testing.assert_allclose(replay(clean).state[:20], clean.state[:20], atol=1e-9)
        assert np.abs(replay(pushed).state[:20, :3] - pushed.state[:20, :3]).max() > 1e-3
    finally:
        env.close()


def test_pick_place_expert_lifts_on_the_step_its_fingers_rest_on_the_cube():
    """The grasp ends by what the policy observes (the fingers' opening), not after a random
    pause: demos that sometimes wait at a closed, still gripper teach greedy decoding to wait
    for ever there."""
    from robalign.envs.tasks.pick_place_lang import CUBE_HALF, GRIP_MARGIN

    env = envs.make("pick-place-lang", camera=False)
    try:
        for seed in (0, 1):
            t = expert_episode(env, "direct", seed)
            opening = t.state[:, 7] - t.state[:, 8]
            closing = np.flatnonzero(t.action[:, 6] > 0)
            rest = closing[opening[closing] < 2 * CUBE_HALF + GRIP_MARGIN][0]
            assert rest - closing[0] >= 4  # the fingers took a few steps to close ...
            assert np.all(np.abs(t.action[closing[0]:rest, 2]) < 0.2)  # ... with the hand still
            assert np.all(t.action[rest:rest + 5, 2] > 0.5)  # then it lifts at once
    finally:
        env.close()
