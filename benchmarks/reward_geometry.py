"""Rewards on the true geometry: what a perfect scene encoder would give RAPL and rlhf.

    MUJOCO_GL=egl .venv/bin/python benchmarks/reward_geometry.py --env reach-around \
        [--encoder-weights benchmarks/.cache/scene-encoder/reach-around-r2-no-axis.safetensors]

The same pool, split, simulated people, learning-rate grid and training as
benchmarks/reward_alignment.py at 150 triplets (3 seeds), but each frame's features are
the true values a scene-cnn is pretrained to predict (robalign.rewards.scene_encoder.
scene_targets, standardised on the training trajectories, every 4th frame as the rewards
use): all of them, and only where things are (the gripper's and objects' positions and
the objects' axis directions; no joints). With --encoder-weights,
the scene-cnn's own 128 features on the same labels beside them. This separates what the
encoder reads from what the reward can make of perfect reading.
"""

import argparse

import numpy as np
import torch

import robalign.envs as envs  # noqa: F401  (before anything imports mujoco)
from robalign.envs import get_objective
from robalign.rewards.data import compute_features
from robalign.rewards.evaluation import evaluate
from robalign.rewards.models import RewardConfig, fit_to_backbone, make_reward
from robalign.rewards.scene_encoder import scene_targets

from reward_alignment import HERE, TASKS, answers, fit, pool_split, tuning_answers

LRS = (1e-3, 3e-3, 1e-2)


def true_features(trajs: dict, train: list[str], env: str, stride: int) -> dict[str, dict[str, torch.Tensor]]:
    """{variant: {id: (N, K) standardised true values of every stride-th frame}}."""
    values = {t: scene_targets(trajs[t].state[::stride], trajs[t].env_state[::stride], env) for t in trajs}
    names = next(iter(values.values()))[1]
    fit_rows = np.concatenate([values[t][0] for t in train])
    used = fit_rows.std(0) > 1e-3
    mean, std = fit_rows[:, used].mean(0), fit_rows[:, used].std(0)
    every = {t: torch.tensor((y[:, used] - mean) / std, dtype=torch.float32) for t, (y, _) in values.items()}
    names = [n for n, u in zip(names, used) if u]
    # positions and axis directions (names ending _x/_y/_z), not joints or fingers
    positions = [k for k, n in enumerate(names) if n[-2:] in ("_x", "_y", "_z") and not n.startswith("arm")]
    return {f"true values ({len(names)})": every,
            f"true positions and axes ({len(positions)})": {t: v[:, positions] for t, v in every.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="reach-around", choices=list(TASKS))
    parser.add_argument("--encoder-weights", default=None, help="a scene-cnn to compare with on the same labels")
    parser.add_argument("--pool", type=int, default=160)
    args = parser.parse_args()
    torch.set_num_threads(1)
    objective = get_objective(TASKS[args.env])
    trajs, train, held = pool_split(args.env, True, args.pool, 96)
    base = RewardConfig(method="rapl", objective=TASKS[args.env], env=args.env)
    variants = true_features(trajs, train, args.env, base.frame_stride)
    if args.encoder_weights:
        base = fit_to_backbone(RewardConfig(**{**base.__dict__, "encoder": "scene-cnn",
                                               "encoder_weights": args.encoder_weights}))
        variants["scene-cnn (128)"] = compute_features(make_reward(base), trajs,
                                                       cache_dir=HERE / ".cache" / "reward-features", progress=False)
    tuning = tuning_answers(objective, trajs, train)
    print(f"{args.env} with distractors, 150 triplets, 3 seeds, held-out trajectory rho")
    for name, feats in variants.items():
        cfg = RewardConfig(**{**base.__dict__, "feature_dim": next(iter(feats.values())).shape[-1]})
        row = []
        for method in ("rapl", "rlhf"):
            lr = fit(method, cfg, feats, tuning, 0, {"max_epochs": 100}, LRS)[1]["lr"]
            rhos = []
            for seed in range(3):
                labels, held_labels = answers(objective, trajs, train, held, 150, seed)
                model, _ = fit(method, cfg, feats, labels, seed, {"max_epochs": 100}, (lr,))
                rhos.append(evaluate(model, {t: trajs[t] for t in held}, held_labels, objective, feats)["spearman_traj"])
            row.append(f"{method} {np.mean(rhos):.2f} ± {np.std(rhos):.2f} (lr {lr:g}; "
                       + ", ".join(f"{r:.2f}" for r in rhos) + ")")
        print(f"{name}: " + "; ".join(row), flush=True)


if __name__ == "__main__":
    main()
