"""One training loop for every learned reward: Bradley-Terry on its trajectory rewards.

Each label becomes comparisons (a, b, p, anchor): P(a preferred over b) = p, where the
reward of a and b is taken against `anchor` (a trajectory) or, with anchor None, against
the demos. The loss is binary cross-entropy of sigmoid(scale * (R(a) - R(b))) against p,
so ties (p = 0.5) pull the two rewards together.

    rapl  a triplet best > middle > worst gives (middle, worst, 1, anchor=best): the most
          preferred video is the anchor, as in RAPL; a pair gives (a, b, p, demos). With
          anchor="demos", every implied pair is measured against the demos instead.
    rlhf  a triplet gives its three pairs, a pair itself; no anchor.

A seeded share of the answers is held back for validation; training stops when the
validation loss has not improved for `patience` epochs and the best weights are kept.
Augmentation drops a random share of frames from each video every step and, when
augmented copies of the videos are given, draws each video among them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from robalign.errors import RobalignError
from robalign.preferences.store import pairs_of
from robalign.rewards.data import Label, check_labels
from robalign.rewards.sinkhorn import pad_sequences


@dataclasses.dataclass
class TrainConfig:
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4
    batch_size: int = 32  # comparisons per step
    max_epochs: int = 100
    patience: int = 10  # epochs without a better validation loss before stopping
    val_fraction: float = 0.2  # share of answers held back for early stopping (0: none, run max_epochs)
    frame_drop: float = 0.2  # augmentation: each frame is left out with this probability
    augment: int = 0  # augmentation: recoloured, shifted copies of each video to draw among (data.compute_views)
    seed: int = 0

    def __post_init__(self):
        checks = {"lr": self.lr > 0, "batch_size": self.batch_size >= 1, "max_epochs": self.max_epochs >= 1,
                  "patience": self.patience >= 1, "val_fraction": 0 <= self.val_fraction < 1,
                  "frame_drop": 0 <= self.frame_drop < 1, "weight_decay": self.weight_decay >= 0,
                  "augment": isinstance(self.augment, int) and self.augment >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise RobalignError(f"bad reward training setting {bad[0]}={getattr(self, bad[0])!r}; allowed: lr > 0, "
                                f"batch_size >= 1, max_epochs >= 1, patience >= 1, 0 <= val_fraction < 1, "
                                f"0 <= frame_drop < 1, weight_decay >= 0, augment an int >= 0")


Comparison = tuple[str, str, float, "str | None"]


def comparisons_for(method: str, labels: list[Label], anchor: str = "best") -> list[Comparison]:
    if method == "rapl" and anchor == "best":
        return [(ids[1], ids[2], 1.0, ids[0]) if p is None else (ids[0], ids[1], p, None) for ids, p in labels]
    return [(a, b, p, None) for a, b, p in pairs_of(labels)]


def comparison_logits(model, features: dict[str, torch.Tensor], batch: list[Comparison],
                      frame_drop: float = 0.0, generator: torch.Generator | None = None,
                      views: dict[str, list[torch.Tensor]] | None = None) -> torch.Tensor:
    """(len(batch),) logits scale * (R(a) - R(b)), each pair against its own anchor or the demos.
    With `views`, each video is drawn at random among its original and augmented copies."""

    def feat(tid: str) -> torch.Tensor:
        copies = views.get(tid) if views else None
        if not copies:
            return features[tid]
        k = int(torch.randint(len(copies) + 1, (1,), generator=generator))
        return features[tid] if k == 0 else copies[k - 1]

    seqs = [feat(c[0]) for c in batch] + [feat(c[1]) for c in batch]
    x, mask = pad_sequences(seqs)
    if frame_drop > 0:
        keep = torch.rand(mask.shape, generator=generator) >= frame_drop
        keep[:, 0] = True  # never empty a video
        mask = mask & keep
    n = len(batch)
    anchored = [i for i, c in enumerate(batch) if c[3] is not None]
    if not anchored:
        rewards = model.step_rewards(x, mask).sum(-1)
    else:
        # Anchored OT: embed each anchor once (the head is most of a step's cost), then
        # score both members of every pair against their shared anchor.
        emb = model.embed_features(x)
        unique = sorted({batch[i][3] for i in anchored})
        anchor_emb = dict(zip(unique, (model.embed_features(feat(t)) for t in unique)))
        plain = [i for i in range(n) if batch[i][3] is None]
        rows = anchored + [i + n for i in anchored]
        parts = [(rows, model.embedded_step_rewards(emb[rows], mask[rows], [anchor_emb[batch[i % n][3]] for i in rows]))]
        if plain:
            rows_p = plain + [i + n for i in plain]
            parts.append((rows_p, model.embedded_step_rewards(emb[rows_p], mask[rows_p])))
        rewards = torch.zeros(2 * n)
        for r, value in parts:
            rewards = rewards.index_put((torch.tensor(r),), value.sum(-1))
    return model.logit_scale() * (rewards[:n] - rewards[n:])


def split_labels(labels: list[Label], val_fraction: float, seed: int) -> tuple[list[Label], list[Label]]:
    n_val = int(round(len(labels) * val_fraction)) if len(labels) >= 5 else 0
    order = np.random.default_rng(seed).permutation(len(labels))
    return [labels[i] for i in order[n_val:]], [labels[i] for i in order[:n_val]]


def train_reward(model, features: dict[str, torch.Tensor], labels: list[Label], cfg: TrainConfig,
                 progress: bool = True, views: dict[str, list[torch.Tensor]] | None = None) -> dict:
    """Fit `model` to `labels` in place; returns the history (per-epoch losses, best epoch).
    `views` ({id: [augmented copies' features]}, robalign.rewards.data.compute_views) are
    drawn from in training steps only; validation reads the original videos."""
    check_labels(labels, set(features))
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_labels, val_labels = split_labels(labels, cfg.val_fraction, cfg.seed)
    train, val = (comparisons_for(model.cfg.method, part, model.cfg.anchor) for part in (train_labels, val_labels))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RobalignError(f"reward {model.cfg.method!r} has nothing to train")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    history = {"train_loss": [], "val_loss": [], "best_epoch": 0, "train_answers": len(train_labels),
               "val_answers": len(val_labels)}
    best_val, best_state, stale = math.inf, None, 0
    bar = tqdm(range(cfg.max_epochs), desc=f"reward {model.cfg.method}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        losses = []
        for start in range(0, len(train), cfg.batch_size):
            batch = [train[i] for i in rng.permutation(len(train))[start: start + cfg.batch_size]]
            logits = comparison_logits(model, features, batch, cfg.frame_drop, generator, views)
            loss = F.binary_cross_entropy_with_logits(logits, torch.tensor([c[2] for c in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history["train_loss"].append(float(np.mean(losses)))
        if val:
            val_loss = evaluate_loss(model, features, val)
            history["val_loss"].append(val_loss)
            if val_loss < best_val - 1e-4:
                best_val, stale, history["best_epoch"] = val_loss, 0, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            bar.set_postfix(train=f"{history['train_loss'][-1]:.3f}", val=f"{val_loss:.3f}")
            if stale >= cfg.patience:
                break
        else:
            history["best_epoch"] = epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["best_val_loss"] = best_val if val else None
    return history


@torch.no_grad()
def evaluate_loss(model, features, comparisons: list[Comparison], batch_size: int = 64) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(comparisons), batch_size):
        batch = comparisons[start: start + batch_size]
        logits = comparison_logits(model, features, batch)
        total += F.binary_cross_entropy_with_logits(logits, torch.tensor([c[2] for c in batch]),
                                                    reduction="sum").item()
    return total / len(comparisons)
