"""Query selection: which trajectories to ask a person to compare next.

A person's answers are the scarce resource of preference learning: each one costs seconds
of attention, while trajectories are cheap. Asking about pairs whose answer we can already
predict wastes that attention. `disagreement` asks where a small ensemble of reward models
disagrees most about which trajectory is preferred, a cheap stand-in for the expected
information of an answer (Christiano et al. 2017; PEBBLE, Lee et al. 2021). `random` is
the unbiased baseline, and what `disagreement` does until a few answers exist.

The ensemble is deliberately tiny: a linear Bradley-Terry reward on per-trajectory summary
features (no pixels), each member fit by Newton's method on a bootstrap resample of the
answers. It refits in milliseconds, so selection can run between every batch of queries.

    groups = select_queries(store, 8, strategy="disagreement", env="reach-around")
    store.add_queries(groups, strategy="disagreement")
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

from robalign.errors import RobalignError, UnknownNameError
from robalign.registry import Registry
from robalign.types import Trajectory

KINDS = {"pair": 2, "triplet": 3}
MIN_COMPARISONS = 4  # fewer answers than this say nothing about disagreement: ask at random
STRATEGIES: Registry = Registry("query strategy")


# ---- features ----------------------------------------------------------------------------
def trajectory_features(traj: Trajectory) -> np.ndarray:
    """(D,) summary of a trajectory: mean, min, max and last value of every dimension of
    `state` and of each info array (keys sorted, so the layout is the same for every
    trajectory of a task), then the length."""
    arrays = {"state": traj.state, **{f"info.{k}": v for k, v in traj.info.items()}}
    parts = []
    for key in sorted(arrays):
        x = np.asarray(arrays[key], dtype=np.float64).reshape(len(traj), -1)  # scalar per step -> (T, 1)
        parts += [x.mean(0), x.min(0), x.max(0), x[-1]]
    return np.concatenate(parts + [[float(len(traj))]])


# Trajectory ids are content hashes, so a cached feature vector can never go stale.
_FEATURE_CACHE: dict[str, np.ndarray] = {}


def store_features(store, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Feature vectors of stored trajectories, by id; all must have the same layout."""
    out = {}
    for tid in ids:
        if tid not in _FEATURE_CACHE:
            _FEATURE_CACHE[tid] = trajectory_features(store.load_trajectory(tid))
        out[tid] = _FEATURE_CACHE[tid]
    if len({v.shape for v in out.values()}) > 1:
        raise RobalignError("trajectories of different tasks have different features and cannot share one "
                            "reward model; pass env= to select among one task's trajectories")
    return out


# ---- reward model ------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def _fit_logistic(d: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> np.ndarray:
    """w minimising mean BCE(sigmoid(d @ w), y) + l2/2 |w|^2, by Newton's method.

    Convex and D is small, so Newton converges in a handful of steps; soft labels (0.5
    for a tie) need no special case.
    """
    n, dim = d.shape
    w = np.zeros(dim)
    for _ in range(iters):
        p = _sigmoid(d @ w)
        grad = d.T @ (p - y) / n + l2 * w
        hess = (d * (p * (1 - p))[:, None]).T @ d / n + l2 * np.eye(dim)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


class BradleyTerryEnsemble:
    """`n_members` linear rewards r(x) = w . standardise(x), P(i > j) = sigmoid(r_i - r_j).

    Each member sees a bootstrap resample of the comparisons, so members agree where the
    answers pin the reward down and disagree where they do not.
    """

    def __init__(self, n_members: int = 5, l2: float = 1e-2, seed: int = 0):
        if not isinstance(n_members, int) or n_members < 1:
            raise RobalignError(f"n_members must be an integer >= 1; got {n_members!r}")
        if not l2 > 0:  # without it, separable answers (the usual case) send |w| to infinity
            raise RobalignError(f"l2 must be > 0; got {l2!r}")
        self.n_members, self.l2, self.seed = n_members, float(l2), seed
        self.weights: np.ndarray | None = None  # (M, D)

    def fit(self, features: dict[str, np.ndarray], comparisons: Sequence[tuple[str, str, float]]) -> "BradleyTerryEnsemble":
        """Fit on `comparisons` (id_i, id_j, P(i preferred)); `features` maps id -> (D,)."""
        missing = {t for i, j, _ in comparisons for t in (i, j)} - features.keys()
        if missing:
            raise RobalignError(f"{len(missing)} compared trajectories have no features, e.g. {sorted(missing)[0]!r}")
        if not comparisons:
            raise RobalignError("fitting a reward model needs at least one comparison")
        ids = list(features)
        x = np.stack([features[t] for t in ids])
        # Standardise over every trajectory given, answered or not: the scale is then the
        # pool's, and constant features (sd 0) stay at 0 instead of dividing by zero.
        self.mean, sd = x.mean(0), x.std(0)
        self.scale = np.where(sd > 1e-12, sd, 1.0)
        z = self._standardise(x)
        row = {t: k for k, t in enumerate(ids)}
        d = np.stack([z[row[i]] - z[row[j]] for i, j, _ in comparisons])
        y = np.array([p for _, _, p in comparisons], dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        members = []
        for _ in range(self.n_members):
            boot = rng.integers(0, len(d), len(d))
            members.append(_fit_logistic(d[boot], y[boot], self.l2))
        self.weights = np.stack(members)
        return self

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale

    def reward(self, x: np.ndarray) -> np.ndarray:
        """(M, N) reward of each member for features `x` (N, D) or (D,) -> (M, 1)."""
        if self.weights is None:
            raise RobalignError("the ensemble is not fitted yet; call fit() first")
        return self.weights @ np.atleast_2d(self._standardise(x)).T

    def prob_prefers(self, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
        """P(a preferred over b) per member: (M,) for single vectors, (M, N) for batches."""
        p = _sigmoid(self.reward(xa) - self.reward(xb))
        return p[:, 0] if np.ndim(xa) == 1 and np.ndim(xb) == 1 else p

    def accuracy(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], labels: Sequence[float]) -> float:
        """Share of `pairs` (xa, xb) whose preferred side the ensemble's mean probability
        gets right; `labels` are P(a preferred), and ties (0.5) are left out."""
        labels = np.asarray(labels, dtype=np.float64)
        keep = labels != 0.5
        if not keep.any():
            raise RobalignError("accuracy needs at least one pair that is not a tie")
        xa = np.stack([a for a, _ in pairs])[keep]
        xb = np.stack([b for _, b in pairs])[keep]
        p = self.prob_prefers(xa, xb).mean(0)
        return float(np.mean((p > 0.5) == (labels[keep] > 0.5)))


# ---- strategies --------------------------------------------------------------------------
# A strategy picks n of the candidate groups: fn(store, ids, candidates, n, rng) -> groups.


@STRATEGIES.register("random")
def random_strategy(store, ids, candidates, n, rng) -> list[tuple[str, ...]]:
    return [candidates[k] for k in rng.choice(len(candidates), n, replace=False)]


@STRATEGIES.register("disagreement")
def disagreement_strategy(store, ids, candidates, n, rng) -> list[tuple[str, ...]]:
    pool = set(ids)
    comparisons = [c for c in store.comparisons() if c[0] in pool and c[1] in pool]
    if len(comparisons) < MIN_COMPARISONS:
        return random_strategy(store, ids, candidates, n, rng)
    features = store_features(store, ids)
    model = BradleyTerryEnsemble(seed=int(rng.integers(2**31))).fit(features, comparisons)
    # A triplet's answer ranks all three of its pairs, so its worth is their summed variance.
    score = np.zeros(len(candidates))
    for a, b in itertools.combinations(range(len(candidates[0])), 2):
        xa = np.stack([features[g[a]] for g in candidates])
        xb = np.stack([features[g[b]] for g in candidates])
        score += model.prob_prefers(xa, xb).var(0)
    # Stable sort: equal scores keep the candidates' random order.
    return [candidates[k] for k in np.argsort(-score, kind="stable")[:n]]


# ---- selection ---------------------------------------------------------------------------
def _asked(store, size: int) -> set[frozenset]:
    """Groups already asked, as unordered sets. A triplet's answer also answers its three
    pairs, so a pair inside an asked triplet counts as asked."""
    asked = set()
    for q in store.queries():
        trajs = q["trajectories"]
        asked.add(frozenset(trajs))
        if size == 2:
            asked.update(frozenset(p) for p in itertools.combinations(trajs, 2))
    return asked


def _candidates(ids: list[str], size: int, asked: set[frozenset], limit: int, rng) -> list[tuple[str, ...]]:
    """Up to `limit` distinct unasked groups drawn uniformly at random."""
    total = math.comb(len(ids), size)
    if total <= 20 * limit:  # few enough to list: exact, and we know when none are left
        groups = [g for g in itertools.combinations(ids, size) if frozenset(g) not in asked]
        groups = [groups[k] for k in rng.permutation(len(groups))[:limit]]
    else:  # too many to list: draw until enough new ones (nearly every draw is new)
        seen, groups = set(), []
        for _ in range(50 * limit):
            g = tuple(ids[k] for k in rng.choice(len(ids), size, replace=False))
            key = frozenset(g)
            if key not in asked and key not in seen:
                seen.add(key)
                groups.append(g)
                if len(groups) == limit:
                    break
    # Shuffle each group's order: people favour one side of the screen, and a fixed order
    # (pool order) would turn that bias into a bias for older trajectories.
    return [tuple(g[k] for k in rng.permutation(size)) for g in groups]


def select_queries(store, n: int, strategy: str = "random", kind: str = "pair", seed: int = 0,
                   env: str | None = None, candidates: int = 2000) -> list[tuple[str, ...]]:
    """Choose `n` new groups (pairs or triplets of trajectory ids) to ask about.

    A group is new when no query asked about the same trajectories, in any order. The
    groups are returned, not added: `store.add_queries(groups, strategy=strategy)`.

    Args:
        store: the PreferenceStore whose trajectories, queries and answers are used.
        n: how many groups.
        strategy: a name in STRATEGIES ("random", "disagreement").
        kind: "pair" or "triplet".
        seed: seed of the candidate draw and of the ensemble's bootstrap.
        env: only use this task's trajectories (None: all of them).
        candidates: how many random new groups a strategy chooses among.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise RobalignError(f"n must be an integer >= 1 (how many queries to select); got {n!r}")
    if kind not in KINDS:
        raise UnknownNameError("query kind", kind, list(KINDS))
    choose = STRATEGIES.get(strategy)
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < n:
        raise RobalignError(f"candidates must be an integer >= n ({n}); got {candidates!r}")
    size = KINDS[kind]
    ids = store.trajectory_ids(env)
    if len(ids) < size:
        where = f" for env {env!r}" if env is not None else ""
        raise RobalignError(f"a {kind} query needs {size} trajectories; the store has {len(ids)}{where}")
    rng = np.random.default_rng(seed)
    pool = _candidates(ids, size, _asked(store, size), candidates, rng)
    if len(pool) < n:
        raise RobalignError(f"only {len(pool)} {kind}s of the store's {len(ids)} trajectories have not been "
                            f"asked yet; ask for at most {len(pool)} or add trajectories")
    return choose(store, ids, pool, n, rng)
