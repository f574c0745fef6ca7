"""Policy speed: one DDIM-10 action chunk on one core, and training steps/s of robalign's
loop against lerobot's own training loop (`lerobot.scripts.lerobot_train.train`) on the same
dataset and the same diffusion model config, measured side by side in one run.

    python benchmarks/policy_speed.py --dataset runs/.../reach-around [--steps 30 60] [--threads 2]

Steps/s is taken from the difference between a short and a longer run of each loop, so
start-up (dataset loading, model building) cancels out. lerobot's loader decodes the video
column too, although the state policy does not read it: that is its loop on this dataset.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from robalign.policies import make_policy


def chunk_latency(repeats: int = 50) -> dict:
    torch.set_num_threads(1)
    stats = {k: {"min": -torch.ones(d), "max": torch.ones(d)} for k, d in (("state", 16), ("environment_state", 10),
                                                                             ("action", 7))}
    policy = make_policy("diffusion", stats, state_dim=16, env_state_dim=10, action_dim=7).eval()
    obs = {"state": torch.randn(1, 2, 16), "environment_state": torch.randn(1, 2, 10)}
    times = []
    with torch.no_grad():
        for i in range(repeats + 5):
            t = time.perf_counter()
            policy.predict_action_chunk(obs)
            if i >= 5:
                times.append(time.perf_counter() - t)
    return {"chunk_ms_median": 1000 * statistics.median(times), "chunk_ms_p90": 1000 * sorted(times)[int(0.9 * len(times))],
            "params_M": sum(p.numel() for p in policy.parameters()) / 1e6}


def robalign_seconds(dataset: str, steps: int, batch: int) -> float:
    from robalign.policies.training import TrainConfig, pretrain

    out = Path(tempfile.mkdtemp()) / "run"
    t = time.perf_counter()
    pretrain("diffusion", dataset, out, TrainConfig(steps=steps, batch_size=batch, checkpoint_every=10**6,
                                                     log_every=10**6), progress=False)
    seconds = time.perf_counter() - t
    shutil.rmtree(out.parent)
    return seconds


def lerobot_seconds(dataset: str, steps: int, batch: int) -> float:
    from lerobot.configs.default import DatasetConfig, WandBConfig
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.scripts.lerobot_train import train

    from robalign.policies.data import dataset_root
    from robalign.policies.diffusion.configuration import DiffusionPolicyConfig

    root = dataset_root(dataset)
    ours = DiffusionPolicyConfig()  # the default config robalign's loop trains
    policy = DiffusionConfig(
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(16,)),
                        "observation.environment_state": PolicyFeature(type=FeatureType.ENV, shape=(10,))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(7,))},
        down_dims=ours.down_dims, kernel_size=ours.kernel_size, n_groups=ours.n_groups,
        diffusion_step_embed_dim=ours.diffusion_step_embed_dim, noise_scheduler_type="DDIM", num_inference_steps=10, device="cpu",
        push_to_hub=False, pretrained_backbone_weights=None)
    out = Path(tempfile.mkdtemp()) / "run"
    cfg = TrainPipelineConfig(dataset=DatasetConfig(repo_id="robalign/demos", root=str(root)), policy=policy,
                              output_dir=out, batch_size=batch, steps=steps, num_workers=0, save_checkpoint=False,
                              log_freq=10**6, eval_freq=0, wandb=WandBConfig(enable=False))
    t = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - t
    shutil.rmtree(out.parent, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--steps", type=int, nargs=2, default=[20, 60])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(chunk_latency())
    torch.set_num_threads(args.threads)
    short, long = args.steps
    rates = {}
    for name, fn in (("lerobot", lerobot_seconds), ("robalign", robalign_seconds)):
        a, b = fn(args.dataset, short, args.batch), fn(args.dataset, long, args.batch)
        rates[name] = (long - short) / (b - a)
        print(f"{name}: {short} steps {a:.1f} s, {long} steps {b:.1f} s -> {rates[name]:.2f} steps/s")
    print(f"robalign / lerobot training steps/s: {rates['robalign'] / rates['lerobot']:.2f}x "
          f"(batch {args.batch}, {args.threads} threads)")


if __name__ == "__main__":
    main()
