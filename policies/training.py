"""One training loop for every policy: only `policy.compute_loss` differs.

AdamW with linear warm-up then cosine decay, an exponential moving average (EMA) of the
weights (what gets saved and evaluated, as in Diffusion Policy), a progress bar, TensorBoard
scalars, and a checkpoint every `checkpoint_every` steps that `resume=true` continues from
after a kill: weights, EMA, optimiser moments and RNG states, so a resumed run takes the
same steps an uninterrupted one would. Multi-GPU runs go through `accelerate launch`: the
loop is written against `accelerate.Accelerator`, which is a no-op on one device.

Run directory:
    policy/                 the final EMA policy (save_pretrained)
    checkpoints/last/       policy/ (EMA), train_state.safetensors, train_state.json
    tensorboard/            loss and learning rate
    training.json, loss.png the loss curve
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from robalign.errors import RobalignError

from . import load_policy, make_policy, policy_class
from .data import DemoWindows
from .pretrained import Policy, config_from_dict

STATE_FILE, STATE_JSON = "train_state.safetensors", "train_state.json"


@dataclasses.dataclass
class TrainConfig:
    steps: int = 9000            # optimiser steps in all (configs/pretrain.yaml says why)
    batch_size: int = 64         # windows per step (per process under accelerate)
    lr: float = 5e-4             # peak AdamW learning rate (Diffusion Policy's paper: 1e-4, for a far larger U-Net)
    weight_decay: float = 1e-6
    warmup_steps: int = 500      # linear warm-up, then cosine decay to 0 (capped at steps // 10)
    ema_decay: float = 0.999     # EMA weight of the past at convergence (ramps up from 0)
    grad_clip: float = 10.0      # max global gradient norm
    checkpoint_every: int = 500  # steps between resumable checkpoints
    log_every: int = 25          # steps between TensorBoard / loss-curve points
    seed: int = 0
    # share of each batch drawn from windows that start in an episode's first
    # episode_start_steps steps, the rest uniformly from all. Where the instruction alone says
    # what to do (which cube), those few windows are all that teaches a policy to read it: on
    # pick-place-lang a vla trained uniformly ignores the colour word (README, Figures).
    # None: the policy's own default (Policy.episode_start_share: vla 0.5, the others 0)
    episode_start_share: float | None = None
    episode_start_steps: int = 8

    def __post_init__(self):
        checks = {"steps": self.steps >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                  "weight_decay": self.weight_decay >= 0, "warmup_steps": self.warmup_steps >= 0,
                  "ema_decay": 0 <= self.ema_decay < 1, "grad_clip": self.grad_clip > 0,
                  "checkpoint_every": self.checkpoint_every >= 1, "log_every": self.log_every >= 1,
                  "episode_start_share": self.episode_start_share is None or 0 <= self.episode_start_share <= 1,
                  "episode_start_steps": self.episode_start_steps >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise RobalignError(f"bad training setting {bad[0]}={getattr(self, bad[0])!r}; allowed: steps, batch_size, "
                                f"checkpoint_every, log_every, episode_start_steps >= 1; lr, grad_clip > 0; "
                                f"weight_decay, warmup_steps >= 0; 0 <= ema_decay < 1; 0 <= episode_start_share <= 1 (or null)")

    def sample(self, n_windows: int, starts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(batch_size,) window indices: round(batch_size x episode_start_share) of them from
        `starts` (DemoWindows.window_starts(episode_start_steps)), the rest uniform over all
        n_windows."""
        n_start = round(self.batch_size * (self.episode_start_share or 0.0))
        uniform = torch.randint(n_windows, (self.batch_size - n_start,), generator=generator)
        if not n_start:
            return uniform
        return torch.cat([starts[torch.randint(len(starts), (n_start,), generator=generator)], uniform])

    def lr_at(self, step: int) -> float:
        warmup = min(self.warmup_steps, self.steps // 10)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        return self.lr * 0.5 * (1 + math.cos(math.pi * progress))

    def ema_at(self, step: int) -> float:
        """EMA decay at `step`: Diffusion Policy's warm-up 1 - (1 + step)^-0.75, capped."""
        return min(self.ema_decay, 1 - (1 + step) ** -0.75) if step > 0 else 0.0


def pretrain(policy_name: str, dataset: str | Path, output_dir: str | Path, train: TrainConfig,
             policy_overrides: dict | None = None, resume: bool = False, max_episodes: int | None = None,
             progress: bool = True, before_training: Callable[[], None] | None = None) -> Path:
    """Train `policy_name` on the demos at `dataset`; returns output_dir/policy.

    Everything is checked (dataset, policy settings, a resumable checkpoint) before the
    first file is written; `before_training` runs then, with output_dir created.
    """
    from accelerate import Accelerator

    out = Path(output_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    cls = policy_class(policy_name)
    if train.episode_start_share is None:
        train = dataclasses.replace(train, episode_start_share=cls.episode_start_share)
    probe = config_from_dict(cls.config_class, dict(policy_overrides or {}), f"{policy_name} policy config")
    data = DemoWindows(dataset, cls.input_keys(probe), probe.n_obs_steps, cls.window_horizon(probe), max_episodes)
    torch.manual_seed(train.seed)  # the initial weights depend on the seed alone
    policy = make_policy(policy_name, data.stats(), policy_overrides, **data.shapes())
    ema = copy.deepcopy(policy).requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=train.lr, betas=(0.95, 0.999),
                                  weight_decay=train.weight_decay)
    generator = torch.Generator().manual_seed(train.seed * 1000 + accelerator.process_index)
    torch.manual_seed(train.seed * 1000 + accelerator.process_index)
    step, history = 0, []
    last = out / "checkpoints" / "last"
    if resume:
        step, history = _restore(last, policy, ema, optimizer, generator, policy_name, train)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if before_training is not None:
            before_training()
    policy, optimizer = accelerator.prepare(policy, optimizer)
    raw = accelerator.unwrap_model(policy)
    writer = _tensorboard(out) if accelerator.is_main_process else None
    from tqdm.auto import tqdm

    bar = tqdm(total=train.steps, initial=step, desc=f"pretrain {policy_name}", unit="step",
               disable=not (progress and accelerator.is_main_process))
    policy.train()
    running = []
    starts = data.window_starts(train.episode_start_steps)  # once: the sampler draws from it every step
    while step < train.steps:
        index = train.sample(len(data), starts, generator)
        batch = data.batch(index, accelerator.device)
        for group in optimizer.param_groups:
            group["lr"] = train.lr_at(step)
        loss = policy(batch)  # forward = compute_loss; through the DDP wrapper so gradients sync
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(policy.parameters(), train.grad_clip)
        optimizer.step()
        _update_ema(ema, raw, train.ema_at(step))
        step += 1
        running.append(float(loss.detach()))
        bar.update(1)
        if step % train.log_every == 0 or step == train.steps:
            mean = sum(running) / len(running)
            running.clear()
            history.append({"step": step, "loss": mean, "lr": train.lr_at(step - 1)})
            bar.set_postfix(loss=f"{mean:.4f}")
            if writer is not None:
                writer.add_scalar("train/loss", mean, step)
                writer.add_scalar("train/lr", train.lr_at(step - 1), step)
        if accelerator.is_main_process and (step % train.checkpoint_every == 0 or step == train.steps):
            _checkpoint(last, step, history, raw, ema, optimizer, generator, policy_name, train)
    bar.close()
    if writer is not None:
        writer.close()
    final = out / "policy"
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        ema.save_pretrained(final)
        (out / "training.json").write_text(json.dumps({"policy": policy_name, "steps": step, "episodes":
                                                       data.num_episodes, "frames": len(data), "history": history},
                                                      indent=2))
        _plot_loss(history, out / "loss.png", policy_name)
    accelerator.wait_for_everyone()
    return final


@torch.no_grad()
def _update_ema(ema: Policy, policy: Policy, decay: float) -> None:
    for e, p in zip(ema.parameters(), policy.parameters()):
        e.mul_(decay).add_(p.detach().to(e.device), alpha=1 - decay)
    for e, b in zip(ema.buffers(), policy.buffers()):
        e.copy_(b)


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


# ---- resumable checkpoints -----------------------------------------------------------------
def _checkpoint(last: Path, step, history, policy, ema, optimizer, generator, policy_name, train) -> None:
    """Write checkpoints/last atomically: a kill mid-write leaves the previous one intact."""
    from safetensors.torch import save_file

    tmp = last.with_name("last.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    ema.save_pretrained(tmp / "policy")
    tensors = {f"policy.{k}": v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = generator.get_state()
    save_file(tensors, tmp / STATE_FILE)
    meta = {"step": step, "history": history, "policy": policy_name, "train": dataclasses.asdict(train),
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]}
    (tmp / STATE_JSON).write_text(json.dumps(meta))
    old = last.with_name("last.old")
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        os.rename(last, old)
    os.rename(tmp, last)
    shutil.rmtree(old, ignore_errors=True)


def _restore(last: Path, policy, ema, optimizer, generator, policy_name, train) -> tuple[int, list]:
    from safetensors.torch import load_file

    if not (last / STATE_JSON).is_file():
        old = last.with_name("last.old")  # killed between the two renames of _checkpoint
        if (old / STATE_JSON).is_file():
            last = old
        else:
            raise RobalignError(f"resume=true but {str(last)!r} holds no checkpoint; start without resume")
    meta = json.loads((last / STATE_JSON).read_text())
    if meta["policy"] != policy_name:
        raise RobalignError(f"resume: the checkpoint trained policy {meta['policy']!r}, not {policy_name!r}")
    saved = {k: v for k, v in meta["train"].items() if k not in ("steps", "checkpoint_every", "log_every")}
    now = {k: v for k, v in dataclasses.asdict(train).items() if k in saved}
    if saved != now:
        diff = {k: (saved[k], now[k]) for k in saved if saved[k] != now[k]}
        raise RobalignError(f"resume: training settings differ from the checkpoint's: {diff} (saved, given)")
    tensors = load_file(last / STATE_FILE)
    policy.load_state_dict({k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")})
    saved_ema = load_policy(last / "policy")
    ema.load_state_dict(saved_ema.state_dict())
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = value
    current = optimizer.state_dict()["param_groups"]
    groups = [{**saved, "params": now["params"]} for saved, now in zip(meta["param_groups"], current)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.batches"])
    return int(meta["step"]), list(meta["history"])


def _plot_loss(history: list[dict], path: Path, name: str) -> None:
    from robalign.data.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"pretrain {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
