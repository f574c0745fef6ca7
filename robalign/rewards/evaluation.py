"""How well does a reward agree with the person? Metrics and plots.

    accuracy        share of held-out answered comparisons (ties left out) the reward orders
                    the same way as the person
    spearman_traj   Spearman rho between the reward's trajectory totals and the true objective
    spearman_step   Spearman rho between per-step rewards and the objective's per-step form,
                    pooled over every step of every trajectory (None if it has no such form)

and, before any preference is asked, whether the frozen features show the objective at
all: `LinearProbe`, a ridge regression fitted to the true objective values.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from robalign.errors import RobalignError
from robalign.preferences.store import pairs_of
from robalign.rewards.data import Label


def _rho(x, y) -> float | None:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None  # undefined for constant input
    return float(spearmanr(x, y).statistic)


def step_rewards(model, trajectories: dict, features: dict | None) -> dict[str, np.ndarray]:
    return {tid: model.reward(t, None if features is None else features.get(tid)) for tid, t in trajectories.items()}


def evaluate(model, trajectories: dict, labels: list[Label], objective=None,
             features: dict[str, torch.Tensor] | None = None) -> dict:
    """Metrics of `model` on `trajectories` ({id: Trajectory}) and held-out `labels`.

    `objective`: the true objective (a robalign Objective or a callable); without one only
    accuracy is computed.
    """
    per_step = step_rewards(model, trajectories, features)
    # Rounded: float noise in a sum must not break ties (the oracle of a 0 objective sums to ~1e-17).
    total = {tid: round(float(r.sum()), 9) for tid, r in per_step.items()}
    pairs = [(a, b, p) for a, b, p in pairs_of(labels) if p != 0.5 and a in total and b in total]
    correct = [(total[a] > total[b]) == (p > 0.5) for a, b, p in pairs if total[a] != total[b]]
    ties = sum(total[a] == total[b] for a, b, _ in pairs)
    metrics = {"accuracy": (sum(correct) + 0.5 * ties) / len(pairs) if pairs else None,
               "comparisons": len(pairs), "trajectories": len(trajectories),
               "spearman_traj": None, "spearman_step": None}
    if objective is not None:
        ids = list(trajectories)
        truth = [objective(trajectories[t]) for t in ids]
        metrics["spearman_traj"] = _rho([total[t] for t in ids], truth)
        if getattr(objective, "per_step", None) is not None:
            metrics["spearman_step"] = _rho(np.concatenate([per_step[t] for t in ids]),
                                            np.concatenate([objective.steps(trajectories[t]) for t in ids]))
        metrics["_truth"], metrics["_learned"] = truth, [total[t] for t in ids]
    return metrics


# ---- can the features see the objective? ----------------------------------------------
def trajectory_summary(feats: torch.Tensor, relative: bool = True) -> np.ndarray:
    """(N, F) features of one video -> (F,) their mean over frames (first-frame-relative
    with `relative`, as the rewards' heads see them). A linear head summed over frames,
    the rlhf reward, is a linear function of this mean times the frame count."""
    x = feats.double()
    return (x - x[:1] if relative else x).mean(0).numpy()


class LinearProbe:
    """Ridge regression from trajectory summaries to the true objective.

    Fitted to values a person never gives (the objective of every training trajectory),
    it bounds from above what a linear reward on the same frozen features can learn from
    preferences, which only say which of two is better: if the probe's held-out rank
    correlation is low, no amount of answers will lift a linear head past it, and the
    frames or the encoder must change. The ridge strength is chosen by k-fold
    cross-validation on the training trajectories alone.

    x: (E, F) summaries, y: (E,) objective values.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, alphas=(0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
                 folds: int = 5, seed: int = 0):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(x) < 2 * folds:
            raise RobalignError(f"a probe needs (E, F) summaries and E values with E >= {2 * folds}; "
                             f"got {x.shape} and {y.shape}")
        self.mean, self.std = x.mean(0), x.std(0) + 1e-8
        z = (x - self.mean) / self.std
        parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), folds)
        self.cv_rho: dict[float, float | None] = {}
        for alpha in alphas:
            pred = np.empty(len(y))
            for k, test in enumerate(parts):
                train = np.concatenate([p for j, p in enumerate(parts) if j != k])
                w, b = _ridge(z[train], y[train], alpha)
                pred[test] = z[test] @ w + b
            self.cv_rho[alpha] = _rho(pred, y)
        self.alpha = max(alphas, key=lambda a: -math.inf if self.cv_rho[a] is None else self.cv_rho[a])
        self.weights, self.bias = _ridge(z, y, self.alpha)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std) @ self.weights + self.bias

    def rho(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """Spearman rho of the probe's predictions for `x` against the true values `y`."""
        return _rho(self.predict(x), y)


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and bias minimising |z w + b - y|^2 + alpha |w|^2 (b unpenalised). Solved in
    whichever of the F x F and E x E forms is smaller: features often outnumber videos."""
    yc, zc = y - y.mean(), z - z.mean(0)
    E, F = zc.shape
    if F <= E:
        w = np.linalg.solve(zc.T @ zc + alpha * np.eye(F), zc.T @ yc)
    else:
        w = zc.T @ np.linalg.solve(zc @ zc.T + alpha * np.eye(E), yc)
    return w, float(y.mean() - z.mean(0) @ w)


# ---- plots ------------------------------------------------------------------------------
def plot_scatter(truth, learned, path: str | Path, title: str = "", xlabel: str = "true objective") -> Path:
    from robalign.data.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(truth, learned, s=14, alpha=0.8)
    rho = _rho(learned, truth)
    ax.set(xlabel=xlabel, ylabel="learned trajectory reward",
           title=f"{title}  Spearman rho = {rho:.2f}" if rho is not None else title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_transport(model, features: torch.Tensor, demo: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """The OT plan between one rollout's frames (rows) and one demo's (columns)."""
    from robalign.rewards.sinkhorn import cosine_cost, sinkhorn

    from robalign.data.plots import pyplot

    plt = pyplot()
    with torch.no_grad():
        x, y = model.embed_features(features), model.embed_features(demo)
        cost = cosine_cost(x, y)
        plan = sinkhorn(cost, model.cfg.sinkhorn_eps, model.cfg.sinkhorn_iters)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, m, name in zip(axes, (cost, plan), ("cost 1 - cosine", "transport plan")):
        im = ax.imshow(m.numpy(), aspect="auto", cmap="viridis")
        ax.set(xlabel="demo frame", ylabel="rollout frame", title=name)
        fig.colorbar(im, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_curve(curves: dict[str, dict[int, list[float]]], path: str | Path, title: str = "",
               ylabel: str = "Spearman rho (trajectory)") -> Path:
    """Data-efficiency curve: {method: {n preferences: [value per seed]}} -> mean +- std."""
    from robalign.data.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, by_n in curves.items():
        ns = sorted(by_n)
        vals = [[v for v in by_n[n] if v is not None and not math.isnan(v)] for n in ns]
        mean = np.array([np.mean(v) if v else np.nan for v in vals])
        std = np.array([np.std(v) if v else np.nan for v in vals])
        ax.plot(ns, mean, marker="o", label=method)
        ax.fill_between(ns, mean - std, mean + std, alpha=0.2)
    ax.set(xscale="log", xlabel="preferences", ylabel=ylabel, title=title)
    budgets = sorted({n for by_n in curves.values() for n in by_n})
    ax.set_xticks(budgets, [str(n) for n in budgets])
    ax.minorticks_off()
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
