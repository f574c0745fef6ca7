"""The scene-cnn encoder the reward benchmarks use with `--encoder scene-cnn`: episodes, then pretraining.

    MUJOCO_GL=egl .venv/bin/python benchmarks/scene_encoder.py --env reach-around \
        [--distractor-episodes 1200] [--clean-episodes 300] [--epochs 15] [--seed 0] [--no-axis]
    .venv/bin/python benchmarks/reward_alignment.py --env reach-around --distractors --encoder scene-cnn \
        --encoder-weights benchmarks/.cache/scene-encoder/reach-around-r2.safetensors --lrs 1e-3 3e-3 1e-2

Episodes are recorded as the reward pools' are (benchmarks/reward_data.py: the scripted
expert's modes in turn, smooth drift of random size) but on other seeds (50000+ with
distractors, 60000+ clean), so no pool trajectory, held out or not, is seen in
pretraining; every other step's frame is kept with its recorded state, 50 episodes per
cached file (a killed run continues). Pretraining is `robalign.rewards.scene_encoder`'s,
on every 4th step of each episode, with 1 episode in 20 held out for its own error report;
the weights file is named by the env's revision and, where not the default, `--no-axis`
(objects' axis directions left out of the targets) and `--seed`. No preference or
objective is involved.
"""

import argparse
import time
from pathlib import Path

import numpy as np

import robalign.envs as envs  # before anything imports mujoco

CACHE = Path(__file__).parent / ".cache" / "scene-encoder"


def record(env_name: str, distractors: bool, first_seed: int, count: int) -> list[Path]:
    """Files of 50 episodes each: frames (every 2nd step), state, env_state, episode seed."""
    from robalign.episode_pool import EpisodePool
    from reward_data import drift_job

    root = CACHE / f"{env_name}-r{envs.env_class(env_name).revision}-{'distractors' if distractors else 'clean'}"
    root.mkdir(parents=True, exist_ok=True)
    modes = envs.env_class(env_name).modes
    paths = [root / f"{s}.npz" for s in range(first_seed, first_seed + count, 50)]
    todo = [p for p in paths if not p.exists()]
    if not todo:
        return paths
    start = time.perf_counter()
    with EpisodePool(env_name, {"distractors": distractors, "camera": True, "image_size": 96}, workers=2) as pool:
        for path in todo:
            c0 = int(path.stem)
            jobs = [drift_job(pool, modes, s) for s in range(c0, c0 + 50)]
            trajs = list(pool.ordered(jobs))
            np.savez(path, frames=np.concatenate([t.frames[::2] for t in trajs]),
                     state=np.concatenate([t.state[::2] for t in trajs]),
                     env_state=np.concatenate([t.env_state[::2] for t in trajs]),
                     episode=np.concatenate([np.full(len(t.frames[::2]), c0 + k) for k, t in enumerate(trajs)]))
            print(f"{path.parent.name}/{path.name} ({time.perf_counter() - start:.0f} s)", flush=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="reach-around", choices=["reach-around", "mug-grasp"])
    parser.add_argument("--distractor-episodes", type=int, default=1200)
    parser.add_argument("--clean-episodes", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0, help="the pretraining's (weights, batches, shifts)")
    parser.add_argument("--no-axis", action="store_true", help="leave the objects' axis directions out of the targets")
    parser.add_argument("--record-only", action="store_true", help="record the episodes, do not pretrain")
    args = parser.parse_args()
    import torch

    from robalign.rewards.scene_encoder import pretrain_on_arrays, save_scene_encoder, scene_targets

    paths = record(args.env, True, 50000, args.distractor_episodes) + record(args.env, False, 60000, args.clean_episodes)
    if args.record_only:
        return
    frames, targets, episode = [], [], []
    for path in paths:
        z = np.load(path)
        ep = z["episode"]
        step = np.arange(len(ep)) - np.searchsorted(ep, ep)  # index within the episode (files are in episode order)
        keep = step % 2 == 0  # every 4th step of the episode (the file holds every 2nd)
        y, names = scene_targets(z["state"][keep], z["env_state"][keep], args.env)
        frames.append(z["frames"][keep]), targets.append(y), episode.append(ep[keep])
    frames, targets, episode = np.concatenate(frames), np.concatenate(targets), np.concatenate(episode)
    if args.no_axis:
        keep = np.array(["_axis_" not in n for n in names])
        targets, names = targets[:, keep], [n for n, k in zip(names, keep) if k]
    print(f"{len(frames)} frames of {len(np.unique(episode))} episodes", flush=True)
    torch.set_num_threads(2)
    start = time.perf_counter()
    net, names, error, spread = pretrain_on_arrays(frames, targets, names, episode % 20 == 0, epochs=args.epochs,
                                                   lr=args.lr, seed=args.seed)
    variant = ("-no-axis" if args.no_axis else "") + (f"-seed{args.seed}" if args.seed else "")
    out = CACHE / f"{args.env}-r{envs.env_class(args.env).revision}{variant}.safetensors"
    save_scene_encoder(net, out, names)
    print(f"wrote {out} ({(time.perf_counter() - start) / 60:.1f} min of pretraining)")
    print("held-out RMSE / spread: " + ", ".join(f"{n} {e / s:.2f}" for n, e, s in zip(names, error, spread)))


if __name__ == "__main__":
    main()
