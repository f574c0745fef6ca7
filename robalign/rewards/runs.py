"""`robalign reward` and `robalign reward eval`: from a preference store to a reward
directory, and from a reward directory to metrics and plots. Both write into a fresh
output directory atomically (nothing is left behind on an error).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from robalign.errors import RobalignError
from robalign.rewards.data import (check_labels, compute_features, compute_views, demos_from_dataset, frames_look,
                                   load_videos, preferred_ids)
from robalign.rewards.models import RewardConfig, fit_to_backbone, load_reward, make_reward
from robalign.rewards.training import TrainConfig, train_reward


def learn_reward(store, cfg: RewardConfig, train: TrainConfig, output_dir: str | Path, demos_top: int = 5,
                 progress: bool = True, config_text: str | None = None, demos: str | Path | None = None) -> Path:
    """Train (or configure) a `cfg.method` reward on every answer in `store`, save it.

    OT rewards compare against `demos` (a LeRobotDataset from `robalign demos`) or, when
    none is given, the `demos_top` compared trajectories the answers rank highest."""
    from robalign.data.outputs import atomic_output_dir

    if not isinstance(demos_top, int) or demos_top < 1:
        raise RobalignError(f"demos_top must be an int >= 1; got {demos_top!r}")
    model = make_reward(fit_to_backbone(cfg))
    labels = store.labels()
    check_labels(labels)
    ids = sorted({t for group, _ in labels for t in group})
    demo_names: list[str] = []
    demo_trajectories, views = None, None
    if model.visual:
        trajectories = load_videos(store, ids)
        features = compute_features(model, trajectories, progress=progress)
        if train.augment and model.trainable:
            views = compute_views(model, trajectories, train.augment, seed=train.seed, progress=progress)
        if cfg.method in ("rapl", "imagenet-ot"):
            if demos is not None:
                demo_trajectories = demos_from_dataset(demos)
                demo_features = compute_features(model, demo_trajectories, progress=progress)
                demo_names = [f"{demos}:{name}" for name in demo_features]
                model.demos = list(demo_features.values())
            else:
                demo_names = preferred_ids(labels, demos_top)
                model.demos = [features[t] for t in demo_names]
        seen = list(trajectories.values()) + (list(demo_trajectories.values()) if demo_trajectories else [])
        model.cfg.robot_meshes = frames_look(seen)
    history = train_reward(model, features, labels, train, progress=progress, views=views) if model.trainable else {}
    with atomic_output_dir(output_dir) as tmp:
        if config_text is not None:
            (tmp / "config.yaml").write_text(config_text)
        model.save_pretrained(tmp)
        summary = {"method": cfg.method, "answers": len(labels), "trajectories": len(ids),
                   "demos": demo_names,
                   "train": dataclasses.asdict(train) if model.trainable else None, "history": history}
        (tmp / "training.json").write_text(json.dumps(summary, indent=2))
        if history.get("train_loss"):
            _plot_losses(history, tmp / "training_loss.png")
    return Path(output_dir)


def evaluate_reward(reward_dir: str | Path, store, output_dir: str | Path, objective: str | None = None,
                    encoder_weights: str | None = None, progress: bool = True, config_text: str | None = None) -> dict:
    """reward_metrics.json (accuracy, spearman_traj, spearman_step), scatter and transport plots."""
    from robalign.data.outputs import atomic_output_dir
    from robalign.envs.objectives import get_objective
    from robalign.rewards.evaluation import evaluate, plot_scatter, plot_transport

    model = load_reward(reward_dir)
    if encoder_weights is not None:
        model.cfg.encoder_weights = encoder_weights
    objective_name = objective or model.cfg.objective
    labels = store.labels()
    ids = store.trajectory_ids()
    if not ids:
        raise RobalignError("the preference store has no trajectories to evaluate the reward on")
    trajectories = load_videos(store, ids) if model.visual else {t: store.load_trajectory(t) for t in ids}
    features = compute_features(model, trajectories, progress=progress) if model.visual else None
    truth = get_objective(objective_name) if objective_name else None
    metrics = evaluate(model, trajectories, labels, truth, features)
    truth_values, learned = metrics.pop("_truth", None), metrics.pop("_learned", None)
    metrics.update(method=model.cfg.method, objective=objective_name)
    with atomic_output_dir(output_dir) as tmp:
        if config_text is not None:
            (tmp / "config.yaml").write_text(config_text)
        (tmp / "reward_metrics.json").write_text(json.dumps(metrics, indent=2))
        if truth_values is not None:
            plot_scatter(truth_values, learned, tmp / "scatter.png", title=model.cfg.method, xlabel=objective_name)
        if model.demos and features:
            first = ids[0]
            plot_transport(model, features[first], model.demos[0], tmp / "transport.png",
                           title=f"{model.cfg.method}: trajectory {first[:8]} vs demo 0")
    return metrics


def _plot_losses(history: dict, path: Path) -> None:
    from robalign.data.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(history["train_loss"], label="train")
    if history.get("val_loss"):
        ax.plot(history["val_loss"], label="validation")
        ax.axvline(history["best_epoch"], color="gray", ls=":", label="kept")
    ax.set(xlabel="epoch", ylabel="Bradley-Terry loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
