"""What reward training reads: preference labels, and backbone features of the videos.

A label is one answer: ((a, b), p) with p = P(a preferred over b) (0.5: a tie), or
((best, middle, worst), None) for a ranked triplet — the PreferenceStore's `labels()`.
Features are (N, F) per trajectory (robalign.rewards.models), computed once per
(encoder weights, frame stride) and cached as safetensors beside the run when asked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from robalign.errors import RobalignError
from robalign.preferences.store import pairs_of
from robalign.rewards.models import lift_of

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


def preferred_ids(labels: list[Label], k: int, l2: float = 0.05) -> list[str]:
    """The k trajectories the person preferred most, by a Bradley-Terry fit of one score
    per trajectory to every implied pair, with an L2 pull towards 0 so that a trajectory
    that won its only comparison does not outrank one that won twenty. Ties are broken by
    id, so the choice is deterministic."""
    pairs = pairs_of(labels)
    ids = sorted({t for a, b, _ in pairs for t in (a, b)})
    index = {t: i for i, t in enumerate(ids)}
    a = torch.tensor([index[p[0]] for p in pairs])
    b = torch.tensor([index[p[1]] for p in pairs])
    target = torch.tensor([p[2] for p in pairs], dtype=torch.float64)
    scores = torch.zeros(len(ids), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([scores], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(scores[a] - scores[b], target, reduction="sum")
                + l2 * scores.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    final = scores.detach().numpy()
    return sorted(ids, key=lambda t: (-round(float(final[index[t]]), 9), t))[:k]


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


def demos_from_dataset(path: str | Path, max_episodes: int = 50) -> dict:
    """{"demo-EPISODE": Trajectory with frames} from a LeRobotDataset written by `robalign demos`
    (the run directory or its dataset/ folder), at most `max_episodes` episodes."""
    from robalign.types import Trajectory

    from robalign.data.demos import dataset_root

    root = dataset_root(path, "demos", " or leave demos unset to use the most-preferred trajectories")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("robalign/demos", root=root)
    if "observation.image" not in ds.meta.features:
        raise RobalignError(f"demos={str(path)!r} has no observation.image video; visual rewards need one")
    episodes: dict[int, list] = {}
    for i in range(len(ds)):
        item = ds[i]
        ep = int(item["episode_index"])
        if ep >= max_episodes:
            break
        image = (item["observation.image"].numpy().transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8)
        episodes.setdefault(ep, []).append(image)
    from robalign.data.demos import recorded_look

    look = recorded_look(root)
    out = {}
    for ep, frames in episodes.items():
        T = len(frames)
        out[f"demo-{ep}"] = Trajectory(state=np.zeros((T, 1), np.float32), action=np.zeros((T, 1), np.float32),
                                       instruction="", success=True, frames=np.stack(frames),
                                       provenance={"robot_meshes": look} if look else {})
    return out


def frames_look(trajectories) -> str | None:
    """The one robot look ($ROBALIGN_ROBOT_MESHES) the trajectories' frames were drawn with;
    None when none recorded it. Frames of different looks are refused: a reward learnt from
    both would learn the look."""
    looks = {t.provenance.get("robot_meshes") for t in trajectories} - {None}
    if len(looks) > 1:
        raise RobalignError(f"these videos draw the robot in different ways ({', '.join(sorted(looks))}: "
                            f"ROBALIGN_ROBOT_MESHES changed between recordings); record them all with one setting")
    return looks.pop() if looks else None


def compute_features(model, trajectories: dict, cache_dir: str | Path | None = None,
                     progress: bool = True, transform=None) -> dict[str, torch.Tensor]:
    """{id: (N, F) backbone features} of each trajectory's used frames, cached per encoder.
    `transform(id, trajectory) -> trajectory` is applied first, only to those not cached.

    A cached file is named by the id *and* a hash of the frames: a trajectory's id hashes
    its arrays, not its video, so the same seeded episode recorded through another camera
    or at another size has the same id and must not be handed the other video's features."""
    cfg = model.cfg
    cache = None
    if cache_dir is not None:
        lift = lift_of(cfg)  # offsets' lift: its parameters change the features
        what = f"{model.backbone.weights_sha}:{cfg.encoder}:{cfg.frame_stride}:{cfg.features}:{cfg.image_size}"
        key = hashlib.sha256((what + (f":{sorted(lift.items())}" if lift else "")).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"features-{key}"
        cache.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    out = {}
    for tid, traj in tqdm(trajectories.items(), desc="video features", unit="video", disable=not progress):
        path = None
        if cache is not None:
            if traj.frames is None:
                raise RobalignError(f"trajectory {tid[:16]} has no frames to compute features of")
            frames_sha = hashlib.sha256(np.ascontiguousarray(traj.frames).tobytes()).hexdigest()[:16]
            path = cache / f"{tid}-{frames_sha}.safetensors"
        if path is not None and path.exists():
            out[tid] = load_file(path)["features"]
            continue
        out[tid] = model.frame_features(transform(tid, traj) if transform else traj)
        if path is not None:
            tmp = path.with_suffix(".tmp")
            save_file({"features": out[tid].contiguous()}, tmp)
            tmp.rename(path)
    return out


def augment_video(frames: np.ndarray, rng: np.random.Generator, shift: int = 4) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same video with one random look for the whole episode:
    hue rotated anywhere on the colour wheel, saturation x[0.5, 1.5], brightness and
    contrast x[0.8, 1.2], and the image shifted by up to `shift` pixels (edges repeated).

    Why per episode: the distractors a reward must ignore (table colour, camera jitter)
    are per episode too, and a look that changed frame to frame would itself look like
    motion to a first-frame-relative reward. Grey and white (the arm, the vase) have no
    hue, so the hue turn recolours the table and the clutter and leaves them be.
    """
    from torchvision.transforms.v2 import functional as TF

    x = torch.as_tensor(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
    x = TF.adjust_hue(x, float(rng.uniform(-0.5, 0.5)))
    x = TF.adjust_saturation(x, float(rng.uniform(0.5, 1.5)))
    x = TF.adjust_brightness(x, float(rng.uniform(0.8, 1.2)))
    x = TF.adjust_contrast(x, float(rng.uniform(0.8, 1.2)))
    if shift:
        H, W = x.shape[-2:]
        dy, dx = (int(v) for v in rng.integers(0, 2 * shift + 1, 2))
        x = F.pad(x.float(), (shift, shift, shift, shift), mode="replicate")[..., dy: dy + H, dx: dx + W]
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def compute_views(model, trajectories: dict, views: int, seed: int = 0, cache_dir: str | Path | None = None,
                  progress: bool = True) -> dict[str, list[torch.Tensor]]:
    """{id: [(N, F) features of each of `views` augmented copies of its video]}, for
    training (`train_reward(..., views=)`); copy k of a trajectory is seeded by (seed, id, k)."""
    import dataclasses

    def augmented(name: str, traj):  # one copy at a time, and only when its features are not cached
        tid, k = copy_of[name]
        rng = np.random.default_rng([seed, int(hashlib.sha256(tid.encode()).hexdigest()[:8], 16), k])
        return dataclasses.replace(traj, frames=augment_video(traj.frames, rng))

    copy_of = {f"{tid}~aug{seed}.{k}": (tid, k) for k in range(views) for tid in trajectories}
    feats = compute_features(model, {name: trajectories[tid] for name, (tid, _) in copy_of.items()}, cache_dir,
                             progress=progress, transform=augmented)
    out: dict[str, list[torch.Tensor]] = {tid: [] for tid in trajectories}
    for name, (tid, _) in copy_of.items():  # k ascending within each trajectory
        out[tid].append(feats[name])
    return out
