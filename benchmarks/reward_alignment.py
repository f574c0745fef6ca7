"""Which learned reward agrees with the person? RAPL against its baselines.

    MUJOCO_GL=egl .venv/bin/python benchmarks/reward_alignment.py \
        [--env reach-around] [--distractors] [--budgets 50 150 750] [--seeds 3] [--methods ...] \
        [--frame-size 96] [--image-size 96]

Pools come from benchmarks/reward_data.py (built on first use, minutes per pool). Each
pool is split once into train trajectories and 40 held-out trajectories. For each seed,
a simulated person (Boltzmann-rational on the task's objective) ranks random triplets of
train trajectories; a method trained on the first n answers is scored on the held-out
trajectories (Spearman rho against the true objective, per trajectory and per step) and
on held-out triplets the same person ranked (accuracy). Nothing is tuned on held-out
trajectories: each learned method picks its learning rate from a grid by its own
validation split of the training answers, and every method sees the same features,
frames, augmentation and demos (the 5 train trajectories the answers rank highest).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import robalign.envs as envs  # noqa: F401  (before anything imports mujoco)
from robalign.annotators import SimulatedAnnotator
from robalign.envs import get_objective
from robalign.envs.scene import robot_meshes
from robalign.preferences.store import PreferenceStore
from robalign.rewards.data import compute_features, compute_views, preferred_ids
from robalign.rewards.evaluation import evaluate, plot_curve
from robalign.rewards.models import RewardConfig, fit_to_backbone, make_reward
from robalign.rewards.training import TrainConfig, train_reward

from reward_data import build_pool

HERE = Path(__file__).parent
TASKS = {"reach-around": "clearance", "mug-grasp": "handle-grasp"}  # the objective each task's person has
METHODS = ("rapl", "rlhf", "imagenet-ot", "oracle")
LR_GRID = (3e-4, 1e-3, 3e-3)
N_HELD, N_DEMOS = 40, 5


def rank_triplets(person, trajs: dict, ids: list[str], n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(n):
        group = [ids[k] for k in rng.choice(len(ids), 3, replace=False)]
        order = person.rank([trajs[t] for t in group])
        labels.append((tuple(group[k] for k in order), None))
    return labels


def answers(objective, trajs: dict, train: list[str], held: list[str], n: int, seed: int) -> tuple[list, list]:
    """Seed `seed`'s simulated person (rational as the objective says): n ranked triplets of
    train trajectories, and 300 of held-out ones to score on (seeded 10000 + seed)."""
    person = SimulatedAnnotator(objective, rationality=objective.rationality, seed=seed)
    return rank_triplets(person, trajs, train, n, seed), rank_triplets(person, trajs, held, 300, 10_000 + seed)


def tuning_answers(objective, trajs: dict, train: list[str]) -> list:
    """What learning rates are tuned on: seed 0's first 150 answers (never held-out trajectories)."""
    return rank_triplets(SimulatedAnnotator(objective, rationality=objective.rationality, seed=0), trajs, train, 150, 0)


def pool_split(env: str, distractors: bool, size: int, frame_size: int,
               first_seed: int = 0) -> tuple[dict, list[str], list[str]]:
    """The pool's trajectories with frames ({id: Trajectory}), and its fixed split into
    train ids and N_HELD held-out ids (seeded; every reward benchmark uses this one)."""
    root = build_pool(env, distractors, size, frame_size, first_seed)
    with PreferenceStore(root, create=False) as store:
        ids = sorted(store.trajectory_ids())[:size]
        trajs = {t: store.load_trajectory(t, frames=True) for t in ids}
    order = np.random.default_rng(0).permutation(len(ids))
    return trajs, [ids[k] for k in order[N_HELD:]], [ids[k] for k in order[:N_HELD]]


def fit(method, base: RewardConfig, feats, labels, seed, train_cfg, lrs=(None,), views=None):
    """A trained (or, for imagenet-ot and oracle, configured) reward; with several `lrs`,
    the one with the lowest validation loss (on the training answers' own split) wins."""
    cfg = RewardConfig(**{**base.__dict__, "method": method})
    demo_ids = preferred_ids(labels, N_DEMOS)
    best = None
    for lr in lrs:
        torch.manual_seed(seed)  # the head's initial weights: the same whichever runs came before
        model = make_reward(cfg)
        model.demos = [feats[t] for t in demo_ids]
        if lr is None or method not in ("rapl", "rlhf"):
            return model, {}
        hist = train_reward(model, feats, labels, TrainConfig(**{**train_cfg, "lr": lr, "seed": seed}), progress=False,
                            views=views)
        if best is None or hist["best_val_loss"] < best[1]["best_val_loss"]:
            best = (model, {**hist, "lr": lr})
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="reach-around", choices=list(TASKS))
    parser.add_argument("--distractors", action="store_true")
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 150, 750])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--pool", type=int, default=160)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the pool's first episode seed; > 0: a separate pool of fresh episodes (a confirmation)")
    parser.add_argument("--relative", type=int, default=1, help="features relative to the first frame (1) or not (0)")
    parser.add_argument("--hidden", type=int, default=0)
    parser.add_argument("--features", default="pooled", choices=["pooled", "spatial", "spatial8", "offsets"],
                        help="offsets: a scene-cnn's gripper-to-object offsets, lifted (needs --encoder scene-cnn)")
    parser.add_argument("--keypoints", type=int, default=0, help="> 0: a spatial-softmax head (needs a spatial --features)")
    parser.add_argument("--anchor", default="demos", choices=["best", "demos"], help="rapl's anchor")
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LR_GRID),
                        help="learning-rate grid each learned method is tuned on (one value: no tuning, for screening)")
    parser.add_argument("--augment", type=int, default=0,
                        help="augmented copies per training video (colour and shift, one look per episode; 0: none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: two benchmarks share 2 cores)")
    parser.add_argument("--frame-size", type=int, default=96, help="the pool's agentview side, pixels")
    parser.add_argument("--image-size", type=int, default=96, help="frames are resized to this for the encoder")
    parser.add_argument("--encoder", default="efficientnet-lite0", help="backbone (robalign.rewards.encoders)")
    parser.add_argument("--encoder-weights", default=None, help="its weights file (scene-cnn: required)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    objective_name = TASKS[args.env]
    objective = get_objective(objective_name)
    rationality = objective.rationality  # registered with the objective: clearance 200, handle-grasp 10
    scene = "distractors" if args.distractors else "clean"
    trajs, train, held = pool_split(args.env, args.distractors, args.pool, args.frame_size, args.first_seed)
    ids = sorted(trajs)
    base = fit_to_backbone(RewardConfig(method="rapl", objective=objective_name, env=args.env,
                                        relative=bool(args.relative), hidden_dim=args.hidden, embed_dim=args.embed,
                                        features=args.features, anchor=args.anchor, image_size=args.image_size,
                                        keypoints=args.keypoints, encoder=args.encoder,
                                        encoder_weights=args.encoder_weights))
    start = time.perf_counter()
    feats = compute_features(make_reward(base), trajs, cache_dir=HERE / ".cache" / "reward-features", progress=True)
    print(f"features: {len(feats)} videos in {time.perf_counter() - start:.0f} s")
    views = None
    if args.augment:  # training videos only: held-out ones are scored as recorded
        start = time.perf_counter()
        views = compute_views(make_reward(base), {t: trajs[t] for t in train}, args.augment,
                              cache_dir=HERE / ".cache" / "reward-features", progress=True)
        print(f"augmented features: {args.augment} copies of {len(views)} videos in {time.perf_counter() - start:.0f} s")
    values = np.array([objective(trajs[t]) for t in ids])
    print(f"{args.env} ({scene}): {len(train)} train / {len(held)} held-out trajectories; {objective_name} "
          f"{values.min():.3f} .. {values.max():.3f} (median {np.median(values):.3f}); rationality {rationality}")

    train_cfg = {"max_epochs": args.max_epochs}
    results = {m: {n: [] for n in args.budgets} for m in args.methods}
    # Learning rates are tuned once per method, on seed 0's first 150 answers and their
    # validation split (never on held-out trajectories), then used for every run.
    tuning = tuning_answers(objective, trajs, train)
    lr_for = {}
    for method in (m for m in args.methods if m in ("rapl", "rlhf")):
        if len(args.lrs) == 1:  # screening: the one given
            lr_for[method] = args.lrs[0]
            continue
        lr_for[method] = fit(method, base, feats, tuning, 0, train_cfg, tuple(args.lrs), views)[1]["lr"]
        print(f"{method}: learning rate {lr_for[method]} (validation loss on the training answers)", flush=True)
    for seed in range(args.seeds):
        labels, held_labels = answers(objective, trajs, train, held, max(args.budgets), seed)
        for method in args.methods:
            for n in args.budgets:
                t0 = time.perf_counter()
                model, hist = fit(method, base, feats, labels[:n], seed, train_cfg, (lr_for.get(method),), views)
                m = evaluate(model, {t: trajs[t] for t in held}, held_labels, objective, feats)
                m = {k: v for k, v in m.items() if not k.startswith("_")}
                m.update(seconds=time.perf_counter() - t0, lr=hist.get("lr"), epochs=hist.get("best_epoch"))
                results[method][n].append(m)
                print(f"seed {seed} {method:12s} n={n:4d}: rho_traj {m['spearman_traj']:+.2f} "
                      f"rho_step {m['spearman_step'] if m['spearman_step'] is None else round(m['spearman_step'], 2)} "
                      f"acc {m['accuracy']:.2f}  lr {m['lr']} epoch {m['epochs']} ({m['seconds']:.0f} s)", flush=True)

    def cell(method, n, key):
        v = [r[key] for r in results[method][n] if r[key] is not None]
        return f"{np.mean(v):.2f} ± {np.std(v):.2f}" if v else "n/a"

    print(f"\n{args.env} ({scene}), {args.seeds} seeds, mean ± std; held-out trajectories\n")
    print("| method | prefs | rho traj | rho step | accuracy |\n|---|---|---|---|---|")
    for method in args.methods:
        for n in args.budgets:
            print(f"| {method} | {n} | {cell(method, n, 'spearman_traj')} | {cell(method, n, 'spearman_step')} | "
                  f"{cell(method, n, 'accuracy')} |")
    out = HERE / ".cache" / "reward-results"
    out.mkdir(parents=True, exist_ok=True)
    head = "".join(f"-{tag}{v}" for tag, v in (("kp", args.keypoints), ("h", args.hidden), ("aug", args.augment)) if v)
    # another encoder, or other weights of one, writes files of its own (the weights' sha names them)
    encoder = "" if args.encoder == "efficientnet-lite0" and not args.encoder_weights else \
        f"{args.encoder}-{base.encoder_sha[:8]}-"
    fresh = f"-from{args.first_seed}" if args.first_seed else ""
    stem = (f"{encoder}{args.env}-{scene}-{args.features}{head}-{args.anchor}-{args.frame_size}px-in{args.image_size}-"
            f"{robot_meshes()}{fresh}")
    (out / f"{stem}.json").write_text(json.dumps({m: {str(n): r for n, r in v.items()} for m, v in results.items()},
                                                 indent=1))
    curves = {m: {n: [r["spearman_traj"] for r in v[n]] for n in v} for m, v in results.items()}
    print("curve:", plot_curve(curves, out / f"{stem}-curve.png", title=f"{args.env} ({scene})"))


if __name__ == "__main__":
    main()
