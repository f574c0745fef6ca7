"""Query selection on synthetic trajectories (no MuJoCo episodes): fast."""

import itertools
import time

import numpy as np
import pytest

from robalign.errors import RobalignError, UnknownNameError
from robalign.preferences.selection import (
    STRATEGIES, BradleyTerryEnsemble, select_queries, store_features, trajectory_features,
)
from robalign.preferences.store import PreferenceStore
from robalign.types import Trajectory


def synthetic(rng: np.random.Generator, env: str = "toy") -> Trajectory:
    steps = int(rng.integers(8, 20))
    return Trajectory(
        state=rng.normal(size=(steps, 1)).astype(np.float32), action=np.zeros((steps, 1), np.float32),
        instruction="x", success=True, info={"x": rng.normal(size=(steps, 2)).astype(np.float32)},
        provenance={"env": env},
    )


def true_reward(t: Trajectory) -> float:
    """What the simulated person wants: a linear function of the summary features."""
    return float(t.info["x"][:, 0].mean() - 0.5 * t.info["x"][:, 1].max())


def labelled(trajs, pairs):
    return [1.0 if true_reward(trajs[i]) > true_reward(trajs[j]) else 0.0 for i, j in pairs]


def test_features_layout_is_sorted_and_fixed():
    t = Trajectory(state=np.array([[0.0], [2.0]]), action=np.zeros((2, 1)), instruction="x", success=True,
                   info={"b": np.array([1.0, 3.0]), "a": np.array([[5.0, 6.0], [7.0, 8.0]])})
    f = trajectory_features(t)
    expect = [6, 7, 5, 6, 7, 8, 7, 8,  # info.a: mean, min, max, last (per dimension)
              2, 1, 3, 3,  # info.b
              1, 0, 2, 2,  # state
              2]  # length
    np.testing.assert_allclose(f, expect)


def test_ensemble_learns_a_linear_preference():
    rng = np.random.default_rng(0)
    trajs = [synthetic(rng) for _ in range(80)]
    feats = {str(k): trajectory_features(t) for k, t in enumerate(trajs)}
    train = rng.choice(60, size=(200, 2))
    train = train[train[:, 0] != train[:, 1]]
    comparisons = [(str(i), str(j), y) for (i, j), y in zip(train, labelled(trajs, train))]
    start = time.perf_counter()
    model = BradleyTerryEnsemble(n_members=5, seed=0).fit({k: feats[k] for k in map(str, range(60))}, comparisons)
    assert time.perf_counter() - start < 1.0
    held = list(itertools.combinations(range(60, 80), 2))
    acc = model.accuracy([(feats[str(i)], feats[str(j)]) for i, j in held], labelled(trajs, held))
    assert acc > 0.9
    assert model.reward(feats["0"]).shape == (5, 1)
    assert model.prob_prefers(feats["0"], feats["1"]).shape == (5,)


def test_ties_are_half_labels():
    rng = np.random.default_rng(1)
    feats = {str(k): trajectory_features(synthetic(rng)) for k in range(10)}
    ties = [(str(i), str(j), 0.5) for i, j in itertools.combinations(range(10), 2)]
    model = BradleyTerryEnsemble(seed=0).fit(feats, ties)
    np.testing.assert_allclose(model.prob_prefers(feats["0"], feats["1"]), 0.5, atol=1e-6)


def make_store(tmp_path, n, rng, env="toy"):
    store = PreferenceStore(tmp_path / "prefs")
    trajs = {store.add_trajectory(t): t for t in (synthetic(rng, env) for _ in range(n))}
    return store, trajs


def test_disagreement_asks_about_close_calls(tmp_path):
    rng = np.random.default_rng(2)
    store, trajs = make_store(tmp_path, 40, rng)
    annotator, _ = store.add_annotator("sim", kind="simulated")
    groups = select_queries(store, 60, "random", seed=0)  # answers to fit on
    for qid, (a, b) in zip(store.add_queries(groups), groups):
        store.record_answer(qid, annotator, "A" if true_reward(trajs[a]) > true_reward(trajs[b]) else "B")

    def gap(groups):  # how far apart in true reward the chosen pairs are
        return np.mean([abs(true_reward(trajs[a]) - true_reward(trajs[b])) for a, b in groups])

    unsure = select_queries(store, 10, "disagreement", seed=1)
    assert gap(unsure) < 0.7 * np.mean([gap(select_queries(store, 10, "random", seed=s)) for s in range(5)])
    # and more than by chance: the model is less sure about them than about random pairs
    feats = store_features(store, list(trajs))
    model = BradleyTerryEnsemble(seed=0).fit(feats, store.comparisons())
    certainty = [np.mean([abs(model.prob_prefers(feats[a], feats[b]).mean() - 0.5) for a, b in g])
                 for g in (unsure, select_queries(store, 10, "random", seed=9))]
    assert certainty[0] < certainty[1]


def test_no_pair_is_asked_twice(tmp_path):
    rng = np.random.default_rng(3)
    store, trajs = make_store(tmp_path, 6, rng)  # 15 pairs
    a, b = list(trajs)[:2]
    store.add_queries([(b, a)])  # asked in the other order
    seen = set()
    for round_ in range(7):
        groups = select_queries(store, 2, "disagreement", seed=round_)
        store.add_queries(groups, strategy="disagreement")
        seen.update(frozenset(g) for g in groups)
    assert len(seen) == 14 and frozenset((a, b)) not in seen
    with pytest.raises(RobalignError, match="have not been asked"):
        select_queries(store, 1)


def test_triplets(tmp_path):
    rng = np.random.default_rng(4)
    store, trajs = make_store(tmp_path, 6, rng)
    annotator, _ = store.add_annotator("sim", kind="simulated")
    for g in select_queries(store, 3, kind="triplet", seed=0):  # 9 pairwise labels: enough to fit
        [qid] = store.add_queries([g])
        order = sorted(range(3), key=lambda k: -true_reward(trajs[g[k]]))
        store.record_answer(qid, annotator, "rank", ranking=order)
    groups = select_queries(store, 5, "disagreement", kind="triplet", seed=1)
    assert all(len(g) == 3 and len(set(g)) == 3 for g in groups)
    asked = {frozenset(q["trajectories"]) for q in store.queries()}
    assert len({frozenset(g) for g in groups} | asked) == 8  # 5 new ones, none asked before


def test_env_filter_and_mixed_features(tmp_path):
    rng = np.random.default_rng(5)
    store, _ = make_store(tmp_path, 4, rng, env="toy")
    other = Trajectory(state=np.zeros((5, 7)), action=np.zeros((5, 1)), instruction="y", success=False,
                       provenance={"env": "other"})
    oid = store.add_trajectory(other)
    groups = select_queries(store, 6, env="toy")
    assert all(oid not in g for g in groups)
    with pytest.raises(RobalignError, match="pass env="):
        store_features(store, store.trajectory_ids())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 0}, RobalignError, "n must be"),
    ({"n": 1, "strategy": "bogus"}, UnknownNameError, "disagreement"),
    ({"n": 1, "kind": "quad"}, UnknownNameError, "triplet"),
    ({"n": 1, "kind": "triplet"}, RobalignError, "needs 3 trajectories"),
    ({"n": 1, "env": "nowhere"}, RobalignError, "has 0"),
])
def test_bad_input(tmp_path, kwargs, error, match):
    store, _ = make_store(tmp_path, 2, np.random.default_rng(6))
    with pytest.raises(error, match=match):
        select_queries(store, **kwargs)


def test_strategies_registered():
    assert STRATEGIES.names() == ["disagreement", "random"]
