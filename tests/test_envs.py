"""Contract tests run over every registered env."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robalign.envs as envs
from robalign.envs.scene import TABLE_TOP_Z
from robalign.errors import RobalignError, UnknownNameError

EXPECTED = {"reach-around", "mug-grasp", "cube-group", "pick-place-lang"}


def test_all_issue_tasks_are_registered():
    assert EXPECTED <= set(envs.available())


def test_check_env_passes(env_name):
    env = envs.make(env_name, image_size=32, distractors=True)
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
        assert obs["state"].shape == (envs.STATE_SIZE,)
        assert obs["instruction"] and isinstance(info["is_success"], bool)
        assert info["privileged"], "privileged info feeds simulated people and metrics"
        # The declared object layout covers environment_state, and what it calls a position
        # is one: on or above the table, within a metre of the robot's workspace centre.
        layout = type(env.unwrapped).env_state_objects
        assert sum(size for _, size, *_ in layout) == env.unwrapped.env_state_size
        start = 0
        for name, size, has_position, *heading in layout:
            if has_position:
                xyz = obs["environment_state"][start:start + 3]
                assert TABLE_TOP_Z - 0.05 < xyz[2] < TABLE_TOP_Z + 0.6, (name, xyz)
                assert np.linalg.norm(xyz[:2]) < 1.0, (name, xyz)
            if heading:  # sin and cos of n x yaw follow the xyz
                assert heading[0] >= 1 and has_position and size >= 5, (name, heading)
                assert abs(np.hypot(*obs["environment_state"][start + 3:start + 5]) - 1) < 1e-4, name
            start += size
    finally:
        env.close()


def _rollout(env, seed, steps=8):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    images, states = [obs["image"]], [obs["state"]]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        images.append(obs["image"])
        states.append(obs["state"])
    return np.stack(images), np.stack(states), obs["environment_state"]


def test_same_seed_same_rollout_and_different_seed_differs(env_name):
    env = envs.make(env_name, image_size=32, distractors=True)
    try:
        a = _rollout(env, seed=7)
        b = _rollout(env, seed=7)
        c = _rollout(env, seed=8)
    finally:
        env.close()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0][0], c[0][0]), "distractors and placements must change with the seed"
    assert not np.allclose(a[2], c[2])


def test_restored_state_replays_the_same_steps(env_name):
    """save_state / restore_state (best-of-n's lookahead): after trying other actions and
    restoring, the same actions give bit-identical observations, info and termination;
    the gripper opens and closes across the save, so its controller's state matters."""
    env = envs.make(env_name, image_size=32, distractors=True, max_steps=40)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (12, 7)).astype(np.float32)
    actions[:, 6] = np.where(np.arange(12) % 5 < 2, -1, 1)

    def steps():
        out = []
        for a in actions:
            obs, _, terminated, truncated, info = env.step(a)
            out.append((obs["state"], obs["environment_state"], obs["image"], info["step"],
                        info["is_success"], terminated, truncated, repr(info["privileged"])))
        return out

    try:
        env.reset(seed=5)
        for a in rng.uniform(-1, 1, (6, 7)).astype(np.float32):
            env.step(a)
        saved = env.save_state()
        first = steps()
        env.restore_state(saved)
        for a in rng.uniform(-1, 1, (9, 7)).astype(np.float32):  # a different lookahead
            env.step(a)
        env.restore_state(saved)
        second = steps()
    finally:
        env.close()
    assert not np.array_equal(first[0][0], first[-1][0])  # the arm moved
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_distractors_change_the_picture_not_the_task(env_name):
    clean = envs.make(env_name, image_size=48)
    noisy = envs.make(env_name, image_size=48, distractors=True)
    try:
        o1, _ = clean.reset(seed=3)
        o2, _ = noisy.reset(seed=3)
        # same task state: distractors are visual only and drawn from their own stream
        np.testing.assert_allclose(o1["environment_state"], o2["environment_state"], atol=1e-9)
        assert np.abs(o1["image"].astype(int) - o2["image"].astype(int)).mean() > 5
    finally:
        clean.close()
        noisy.close()


def test_moving_distractor_moves():
    env = envs.make("reach-around", image_size=32, distractors=True, camera=False)
    try:
        env.reset(seed=0)
        body = env.scene.distractor_body_ids[0]
        before = env.model.body_pos[body].copy()
        for _ in range(10):
            env.step(np.zeros(7, np.float32))
        assert np.linalg.norm(env.model.body_pos[body] - before) > 0.01
    finally:
        env.close()


def test_reach_around_never_starts_within_the_clearance_threshold():
    # `clearance` is the closest approach over the whole episode, step 0 included: an arm
    # that starts within the threshold fails the objective before the policy acts.
    from robalign.envs.objectives import get_objective

    threshold = get_objective("clearance").threshold
    env = envs.make("reach-around", camera=False)
    try:
        starts = []
        for seed in [*range(40), *range(100000, 100040)]:  # demo seeds and held-out seeds
            env.reset(seed=seed)
            starts.append(env.privileged()["vase_clearance"])
        assert min(starts) > threshold + 0.005, f"closest start {min(starts):.3f} m"
    finally:
        env.close()


def test_unknown_env_names_the_choices():
    with pytest.raises(UnknownNameError) as err:
        envs.make("reach-arround")
    for name in EXPECTED:
        assert name in str(err.value)


@pytest.mark.parametrize("bad", [np.zeros(6), np.full(7, np.nan), np.full(7, np.inf)])
def test_bad_actions_are_rejected(bad):
    env = envs.make("reach-around", camera=False)
    try:
        env.reset(seed=0)
        with pytest.raises(RobalignError):
            env.step(bad)
    finally:
        env.close()


@pytest.mark.parametrize("kwargs", [{"image_size": 0}, {"max_steps": -1}, {"render_mode": "human"}])
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(RobalignError):
        envs.make("reach-around", **kwargs)


def test_render_rgb_array():
    env = envs.make("reach-around", camera=False, render_mode="rgb_array")
    try:
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (256, 256, 3) and frame.std() > 5
    finally:
        env.close()


def test_wrist_camera_is_optional():
    env = envs.make("reach-around", image_size=32, wrist_camera=True)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["wrist_image"].shape == (32, 32, 3)
        assert not np.array_equal(obs["wrist_image"], obs["image"])
    finally:
        env.close()


def _robot_look_rollout(monkeypatch, look: str):
    monkeypatch.setenv("ROBALIGN_ROBOT_MESHES", look)
    env = envs.make("reach-around", image_size=64)
    try:
        assert env.robot_meshes == look
        from robalign.rollout import record_episode
        rng = np.random.default_rng(0)
        env.max_steps = 6
        return record_episode(env, lambda obs: rng.uniform(-1, 1, 7).astype(np.float32), seed=4)
    finally:
        env.close()


def test_robot_look_changes_pixels_not_physics(monkeypatch):
    hulls = _robot_look_rollout(monkeypatch, "collision")
    meshes = _robot_look_rollout(monkeypatch, "visual")
    np.testing.assert_array_equal(hulls.state, meshes.state)
    np.testing.assert_array_equal(hulls.info["vase_clearance"], meshes.info["vase_clearance"])
    assert np.abs(hulls.frames.astype(int) - meshes.frames.astype(int)).mean() > 0.5
    assert hulls.provenance["robot_meshes"] == "collision" and meshes.provenance["robot_meshes"] == "visual"
    for traj in (hulls, meshes):
        # Collision geoms stay hidden in both looks. MuJoCo's default option drew them over the
        # visual meshes: the links' dark green and the hand's blue (77 and 9 such pixels in the
        # last 64 px frame before; the green goal's shading gives 1 or 2)
        img = traj.frames[-1].astype(int)
        blue = (img[..., 2] > 70) & (img[..., 0] < 40) & (img[..., 1] < 40)
        dark_green = (img[..., 1] > 50) & (img[..., 0] < 30) & (img[..., 2] < 30)
        assert blue.sum() == 0 and dark_green.sum() < 10, (blue.sum(), dark_green.sum())


def test_an_unknown_robot_look_names_the_choices(monkeypatch):
    monkeypatch.setenv("ROBALIGN_ROBOT_MESHES", "photoreal")
    with pytest.raises(UnknownNameError, match="collision, visual"):
        envs.make("reach-around", camera=False)


def test_pick_place_lang_dense_layout_puts_cubes_closer_and_says_so():
    from robalign.envs.tasks.pick_place_lang import CUBE_GAP, DENSE_CUBE_GAP
    from robalign.rollout import episode_provenance

    def closest(env, seed):
        env.reset(seed=seed)
        xy = [env.cube_pos(i)[:2] for i in range(3)]
        return min(np.linalg.norm(xy[i] - xy[j]) for i in range(3) for j in range(i))

    default, dense = (envs.make("pick-place-lang", camera=False, layout=lay) for lay in ("default", "dense"))
    try:
        gaps = {name: [closest(env, s) for s in range(100000, 100020)] for name, env in
                (("default", default), ("dense", dense))}
        assert min(gaps["default"]) > CUBE_GAP
        assert min(gaps["dense"]) > DENSE_CUBE_GAP and sum(g < CUBE_GAP for g in gaps["dense"]) >= 3
        assert episode_provenance(dense, 3)["layout"] == "dense"
        assert "layout" not in episode_provenance(default, 3)  # as records made before layouts existed
    finally:
        default.close()
        dense.close()
    with pytest.raises(UnknownNameError, match="unknown reach-around layout 'dense'; valid choices: default"):
        envs.make("reach-around", layout="dense")
    with pytest.raises(UnknownNameError, match="valid choices: default, dense, tight"):
        envs.check_layout("pick-place-lang", "sparse")


def test_pick_place_lang_tight_layout_crowds_the_wanted_cube_and_keeps_the_others_seeds():
    from robalign.envs.tasks.pick_place_lang import DENSE_CUBE_GAP, TIGHT_NEIGHBOUR

    def scene(env, seed):
        env.reset(seed=seed)
        xy = [env.cube_pos(i)[:2] for i in range(3)]
        return env.target, xy

    tight, dense = (envs.make("pick-place-lang", camera=False, layout=lay) for lay in ("tight", "dense"))
    try:
        nearest = []
        for seed in range(100000, 100020):
            target, xy = scene(tight, seed)
            gaps = [np.linalg.norm(xy[target] - xy[i]) for i in range(3) if i != target]
            assert min(gaps) > DENSE_CUBE_GAP
            nearest.append(min(gaps))
        assert max(nearest) < TIGHT_NEIGHBOUR
        # dense draws nothing more for tight's sake: its seeds give the scenes they gave before
        # (published evaluations use them), pinned by one scene recorded before tight existed
        target, xy = scene(dense, 100009)
        assert target == 2 and np.allclose(xy, [[0.08767, -0.09674], [0.11811, 0.0924], [0.12363, -0.03881]], atol=1e-5)
    finally:
        tight.close()
        dense.close()


def test_the_layout_reaches_the_vector_envs_workers():
    import types

    from robalign.policies.evaluation import run_vector

    still = types.SimpleNamespace(act=lambda obs: np.zeros(7, np.float32))
    seeds = [100002, 100007]  # their dense layouts differ from their default ones
    trajs = run_vector(types.SimpleNamespace(name="still"), "pick-place-lang", seeds,
                       {"camera": False, "max_steps": 2, "layout": "dense"}, num_envs=2,
                       make_actor=lambda i, seed: still)
    starts = {}
    for layout in ("default", "dense"):
        env = envs.make("pick-place-lang", camera=False, layout=layout)
        try:
            starts[layout] = [env.reset(seed=s)[0]["environment_state"] for s in seeds]
        finally:
            env.close()
    for t, dense, default in zip(trajs, starts["dense"], starts["default"], strict=True):
        assert t.provenance["layout"] == "dense"
        np.testing.assert_allclose(t.env_state[0], dense, atol=1e-6)
        assert not np.allclose(t.env_state[0], default, atol=1e-3)
