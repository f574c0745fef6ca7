"""What reward training reads: preference labels, and backbone features of the videos.

A label is one answer: ((a, b), p) with p = P(a preferred over b) (0.5: a tie), or
((best, middle, worst), None) for a ranked triplet — the PreferenceStore's `labels()`.
Features are (N, F) per trajectory (robalign.rewards.models), computed once per
(encoder weights, frame stride) and cached as safetensors beside the run when asked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tqdm import tqdm

from robalign.errors import RobalignError

Label = tuple[tuple[str, ...], "float | None"]


def check_labels(labels: list[Label], known: set[str] | None = None) -> None:
    """Refuse an empty label set, malformed labels and labels naming unknown trajectories."""
    if not labels:
        raise RobalignError("there are no preferences to learn from: the store has no answered queries "
                            "(answer some with `robalign prefs serve` or `robalign prefs simulate`)")
    for ids, p in labels:
        if not ((len(ids) == 2 and p is not None and 0 <= p <= 1) or (len(ids) == 3 and p is None)):
            raise RobalignError(f"bad preference label {(ids, p)!r}: expected ((a, b), P(a over b) in [0, 1]) "
                                f"or ((best, middle, worst), None)")
        missing = [i for i in ids if known is not None and i not in known]
        if missing:
            raise RobalignError(f"a preference references trajectory {missing[0]!r}, which is not in the store "
                                f"or has no video; every compared trajectory needs its video")


def preferred_ids(labels: list[Label], k: int) -> list[str]:
    """The k trajectories the person preferred most: by (wins - losses) / comparisons over
    every implied pair; ties are broken by id so the choice is deterministic."""
    wins: dict[str, float] = {}
    seen: dict[str, int] = {}
    for a, b, p in pairs_of(labels):
        for t, w in ((a, p), (b, 1 - p)):
            wins[t] = wins.get(t, 0.0) + (2 * w - 1)
            seen[t] = seen.get(t, 0) + 1
    ranked = sorted(seen, key=lambda t: (-wins[t] / seen[t], t))
    return ranked[:k]


def pairs_of(labels: list[Label]) -> list[tuple[str, str, float]]:
    """Every label as pairs (a, b, P(a over b)); a triplet gives its three pairs."""
    out = []
    for ids, p in labels:
        if p is not None:
            out.append((ids[0], ids[1], float(p)))
        else:
            out += [(ids[i], ids[j], 1.0) for i in range(3) for j in range(i + 1, 3)]
    return out


def load_videos(store, ids: list[str]) -> dict:
    """{id: Trajectory with frames}; every video must exist, match its steps and share one size."""
    from robalign.preferences.store import UnknownIdError

    out, size = {}, None
    for tid in ids:
        try:
            traj = store.load_trajectory(tid, frames=True)
        except (UnknownIdError, FileNotFoundError, KeyError) as err:
            raise RobalignError(f"a preference references trajectory {tid!r}, which the store cannot load ({err})") from None
        if traj.frames is None:
            raise RobalignError(f"trajectory {tid!r} has no video; visual rewards need every compared trajectory's video")
        if len(traj.frames) != len(traj):
            raise RobalignError(f"trajectory {tid!r}: its video has {len(traj.frames)} frames but it has {len(traj)} "
                                f"steps; videos must have one frame per step")
        if size is None:
            size = traj.frames.shape[1:3]
        elif traj.frames.shape[1:3] != size:
            raise RobalignError(f"trajectory {tid!r}: video frames are {traj.frames.shape[1]}x{traj.frames.shape[2]}, "
                                f"others are {size[0]}x{size[1]}; all videos must have one size")
        out[tid] = traj
    return out


def compute_features(model, trajectories: dict, cache_dir: str | Path | None = None,
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """{id: (N, F) backbone features} of each trajectory's used frames, cached per encoder."""
    cfg = model.cfg
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{model.backbone.weights_sha}:{cfg.encoder}:{cfg.frame_stride}:{cfg.features}:{cfg.image_size}".encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"features-{key}"
        cache.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    out = {}
    for tid, traj in tqdm(trajectories.items(), desc="video features", unit="video", disable=not progress):
        path = cache / f"{tid}.safetensors" if cache is not None else None
        if path is not None and path.exists():
            out[tid] = load_file(path)["features"]
            continue
        out[tid] = model.frame_features(traj)
        if path is not None:
            tmp = path.with_suffix(".tmp")
            save_file({"features": out[tid].contiguous()}, tmp)
            tmp.rename(path)
    return out
