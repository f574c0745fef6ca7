"""Episodes in worker processes: the same records as one by one, in order, errors reported."""

import numpy as np
import pytest

from robalign.episode_pool import EpisodePool
from robalign.errors import RobalignError
from robalign.types import Trajectory


class _Done:
    def __init__(self, trajectory):
        self.trajectory = trajectory

    def get(self):
        return self.trajectory


class FailingSeeds(EpisodePool):
    """The expert fails on chosen seeds; records which (mode, seed) episodes were asked for."""

    def __init__(self, fail: set[int], workers: int):
        super().__init__("reach-around", {}, workers=workers)
        self.fail, self.asked = fail, []

    def submit(self, job):
        self.asked.append((job.mode, job.seed))
        step = np.zeros((1, 1), np.float32)
        return _Done(Trajectory(state=step, action=step, instruction="", success=job.seed not in self.fail,
                                mode=job.mode, provenance={"seed": job.seed}))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_expert_demos_give_the_seeds_a_serial_run_gives(workers):
    """Demo i takes the next seed; a failed seed is retried with the one after (seeds 3 and 4 fail
    here, so the fourth demo, a `left`, ends on seed 5), however far ahead the pool ran."""
    pool = FailingSeeds({3, 4}, workers)
    got = [(t.mode, t.provenance["seed"]) for t in pool.expert_demos(["left", "right", "over"] * 2, 0)]
    assert got == [("left", 0), ("right", 1), ("over", 2), ("left", 5), ("right", 6), ("over", 7)]
    assert ("right", 4) in pool.asked  # run ahead on a guess that proved wrong, then redone
    pool = FailingSeeds(set(range(100)), workers)
    with pytest.raises(RobalignError, match="keeps failing in mode 'left'"):
        list(pool.expert_demos(["left"] * 3, 0))


def _rollouts(tmp_path, num_envs):
    from robalign.preferences import PreferenceStore
    from robalign.preferences.rollouts import record_rollouts

    with PreferenceStore(tmp_path / f"store{num_envs}") as store:
        ids = record_rollouts(store, "reach-around", 3, policy="expert", drift=0.3, seed=11, progress=False,
                              max_steps=20, num_envs=num_envs)
        return [store.load_trajectory(i, frames=True) for i in ids]


def test_parallel_rollouts_record_what_one_env_records(tmp_path):
    serial, parallel = _rollouts(tmp_path, 1), _rollouts(tmp_path, 2)
    assert [t.provenance["seed"] for t in parallel] == [11, 12, 13]
    assert [t.mode for t in parallel] == ["left", "right", "over"]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.state, b.state)
        np.testing.assert_array_equal(a.action, b.action)
        assert a.frames.shape == b.frames.shape == (len(a), 256, 256, 3)
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 1.0  # one codec, same pictures


def test_a_worker_that_cannot_build_its_env_reports_why():
    with EpisodePool("reach-around", {"image_size": 0}, workers=2) as pool:
        with pytest.raises(RobalignError, match="image_size must be an int in"):
            next(pool.ordered([pool.expert_job("left", 0)]))
    with pytest.raises(RobalignError, match="num_envs must be an int >= 1"):
        EpisodePool("reach-around", {}, workers=0)
