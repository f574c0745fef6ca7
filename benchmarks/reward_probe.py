"""Can the encoder's frozen features see the objective at all? A linear probe, before any preference.

    MUJOCO_GL=egl .venv/bin/python benchmarks/reward_probe.py --env reach-around [--distractors] \
        [--features pooled spatial spatial8] [--frame-size 96]

On the pool and split of benchmarks/reward_alignment.py (160 trajectories, the same 40
held out), a ridge regression is fitted to the true objective of every training
trajectory (120 values: far more than 150 triplets say) from the mean of each video's
features, first-frame-relative as the rewards see them and absolute, and scored on the
held-out 40 (Spearman rho). A linear reward learnt from preferences on the same features
cannot be expected to beat it; where it is well below the bar, the frames or the encoder
are what has to change. Ridge strength by 5-fold cross-validation on the training 120.
Seconds per pool once its features are cached (reward_alignment.py caches the same ones).
"""

import argparse

import numpy as np

import robalign.envs as envs  # noqa: F401  (before anything imports mujoco)
from robalign.envs import get_objective
from robalign.rewards.data import compute_features
from robalign.rewards.evaluation import LinearProbe, trajectory_summary
from robalign.rewards.models import RewardConfig, fit_to_backbone, make_reward

from reward_alignment import HERE, TASKS, pool_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="reach-around", choices=list(TASKS))
    parser.add_argument("--distractors", action="store_true")
    parser.add_argument("--features", nargs="+", default=["pooled", "spatial", "spatial8"],
                        choices=["pooled", "spatial", "spatial8"])
    parser.add_argument("--pool", type=int, default=160)
    parser.add_argument("--frame-size", type=int, default=96, help="the pool's agentview side, pixels")
    parser.add_argument("--image-size", type=int, default=96, help="frames are resized to this for the encoder")
    parser.add_argument("--encoder", default="efficientnet-lite0", help="backbone (robalign.rewards.encoders)")
    parser.add_argument("--encoder-weights", default=None, help="its weights file (scene-cnn: required)")
    args = parser.parse_args()

    objective = get_objective(TASKS[args.env])
    trajs, train, held = pool_split(args.env, args.distractors, args.pool, args.frame_size)
    ids = sorted(trajs)
    y = {t: objective(trajs[t]) for t in ids}
    scene = "distractors" if args.distractors else "clean"
    print(f"\n{args.env} ({scene}, {args.frame_size} px): linear probe on {len(train)} train trajectories' "
          f"true {objective.name}, Spearman rho on {len(held)} held out\n")
    print("| features | summary | held-out rho | ridge alpha | its cross-validated rho |\n|---|---|---|---|---|")
    for kind in args.features:
        cfg = fit_to_backbone(RewardConfig(method="rlhf", features=kind, image_size=args.image_size,
                                               encoder=args.encoder, encoder_weights=args.encoder_weights))
        feats = compute_features(make_reward(cfg), trajs, cache_dir=HERE / ".cache" / "reward-features",
                                 progress=False)
        for relative in (True, False):
            x = {t: trajectory_summary(feats[t], relative) for t in ids}
            probe = LinearProbe(np.stack([x[t] for t in train]), np.array([y[t] for t in train]))
            rho = probe.rho(np.stack([x[t] for t in held]), np.array([y[t] for t in held]))
            print(f"| {kind} ({cfg.feature_dim}) | {'first-frame-relative' if relative else 'absolute'} mean | "
                  f"{rho:+.2f} | {probe.alpha:g} | {probe.cv_rho[probe.alpha]:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
