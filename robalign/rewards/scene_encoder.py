"""A small CNN that learns to read the scene's geometry from frames, for rewards to build on.

ImageNet features pool away where the gripper is relative to the objects, which is what
objectives such as `clearance` are about (docs/results/rewards.md). This encoder is
pretrained instead on the task's own recorded episodes to predict, from one frame, what
every robalign dataset records beside it: the robot's proprioception (`observation.state`)
and the task objects' state (`observation.environment_state`). No person, preference or
objective is involved; RAPL then aligns its features with the person as it does ImageNet's.

    net = pretrain_scene_encoder(frames, targets)          # (M, H, W, 3) uint8, (M, K) float
    save_scene_encoder(net, "scene.safetensors", names)    # names: the K targets' (scene_targets)
    # then: robalign reward encoder=scene-cnn encoder_weights=scene.safetensors ...
    #       features=offsets: random Fourier features of the read-out's gripper-to-object offsets

Glossary: B batch, H x W image (96 x 96), C channels, P keypoints, D feature size (128),
K prediction targets (state and environment-state values, standardised), O task objects,
L lifted offset features (256).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robalign.errors import RobalignError

FEATURES = 128  # D
KEYPOINTS = 32  # P
# features=offsets: L random Fourier features of the gripper's offset from each task object,
# a Gaussian kernel of width OFFSET_BANDWIDTH metres (about the offsets' spread over a task's
# episodes: 5-13 cm on reach-around and mug-grasp), drawn once from a fixed seed.
# A reward trained on them records the three (RewardConfig.offset_lift) and refuses to load
# if they change, rather than score with features it was not trained on.
OFFSET_FEATURES, OFFSET_BANDWIDTH, OFFSET_SEED = 256, 0.1, 0


# the lift of rewards saved before their config recorded it (offset_lift None)
FIRST_OFFSET_LIFT = {"features": 256, "bandwidth": 0.1, "seed": 0}


def offset_lift() -> dict:
    """The lift features=offsets computes, as a reward config records it."""
    return {"features": OFFSET_FEATURES, "bandwidth": OFFSET_BANDWIDTH, "seed": OFFSET_SEED}


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) -> (B, 2P): the expected (x, y) in [-1, 1] of each of P learnt attention
    maps, so the features say *where* things are rather than how much of them is seen."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.attend = nn.Conv2d(channels, keypoints, 1)
        # learnt sharpness (as robomimic's): a diffuse softmax averages a keypoint towards the centre
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.attend(x) / self.log_temperature.exp()
        B, P, h, w = maps.shape
        weights = maps.flatten(2).softmax(-1).view(B, P, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1)
        xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w)
        return torch.cat([(weights * xs).sum((2, 3)), (weights * ys).sum((2, 3))], 1)


class SceneCNN(nn.Module):
    """Frames (B, 3, H, W), normalised to [-1, 1] -> (B, D) features; `predict` adds the linear
    read-out to the K standardised targets it was pretrained on."""

    def __init__(self, targets: int):
        super().__init__()

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.ReLU())

        # stride 8 keeps a 12 x 12 map at 96 px: a cell is ~4 cm of the table, and the
        # soft argmax resolves well below a cell
        self.convs = nn.Sequential(block(3, 32, 2), block(32, 64, 2), block(64, 128, 2), block(128, 64, 1))
        self.keypoints = SpatialSoftmax(64, KEYPOINTS)
        self.mlp = nn.Sequential(nn.Linear(2 * KEYPOINTS, 256), nn.ReLU(), nn.Linear(256, FEATURES), nn.ReLU())
        self.readout = nn.Linear(FEATURES, targets)
        # the standardisation `predict`'s outputs undo: kept in the weights file
        self.register_buffer("target_mean", torch.zeros(targets))
        self.register_buffer("target_std", torch.ones(targets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.keypoints(self.convs(x)))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self(x))

    def read_out(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) features -> (B, K) the targets' values in their own units (metres, radians)."""
        return self.readout(feats) * self.target_std + self.target_mean


def _batch(frames: np.ndarray, idx: np.ndarray, shift: int, rng: np.random.Generator) -> torch.Tensor:
    """Frames idx as (B, 3, H, W) in [-1, 1], each shifted by up to `shift` px (edge padding)."""
    x = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if shift:
        H, W = x.shape[-2:]
        x = F.pad(x, (shift,) * 4, mode="replicate")
        dy, dx = rng.integers(0, 2 * shift + 1, size=(2, len(idx)))
        x = torch.stack([x[b, :, dy[b]:dy[b] + H, dx[b]:dx[b] + W] for b in range(len(idx))])
    return x


def pretrain_scene_encoder(frames: np.ndarray, targets: np.ndarray, val_frames: np.ndarray | None = None,
                           val_targets: np.ndarray | None = None, epochs: int = 10, batch: int = 128,
                           lr: float = 1e-3, shift: int = 4, seed: int = 0, progress: bool = True) -> SceneCNN:
    """Fit a SceneCNN to predict `targets` (M, K) from `frames` (M, H, W, 3) uint8 by squared
    error on standardised targets; returns the trained net (eval mode) with the targets'
    mean and std kept as buffers. Every target must vary over the frames."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise RobalignError(f"frames must be (M, H, W, 3) uint8; got {frames.shape} {frames.dtype}")
    if targets.ndim != 2 or len(targets) != len(frames):
        raise RobalignError(f"targets must be (M, K) with M = {len(frames)} frames; got {targets.shape}")
    if not 2 <= batch <= len(frames):
        raise RobalignError(f"batch must be an int in [2, {len(frames)}] (the frames given); got {batch!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = targets.mean(0), targets.std(0)
    if (std <= 1e-6).any():
        raise RobalignError(f"targets {np.flatnonzero(std <= 1e-6).tolist()} do not vary over the frames; "
                            f"leave them out (nothing to learn from a constant)")
    z = torch.from_numpy((targets - mean) / std).float()
    net = SceneCNN(targets.shape[1])
    net.target_mean.copy_(torch.from_numpy(mean))
    net.target_std.copy_(torch.from_numpy(std))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(frames) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    from tqdm import tqdm

    bar = tqdm(total=steps, desc="scene encoder", disable=not progress)
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(frames))
        for k in range(len(frames) // batch):
            idx = np.sort(order[k * batch:(k + 1) * batch])
            loss = F.mse_loss(net.predict(_batch(frames, idx, shift, rng)), z[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if val_frames is not None:
            err = scene_encoder_error(net, val_frames, val_targets)
            bar.write(f"epoch {epoch + 1}: held-out error per target (target units) "
                      + " ".join(f"{e:.3g}" for e in err))
    bar.close()
    return net.eval()


def save_scene_encoder(net: SceneCNN, path, names: list[str]) -> None:
    """The weights as safetensors, the K targets' names in its metadata (features=offsets
    reads the gripper's and objects' positions by name): what `encoder=scene-cnn
    encoder_weights=PATH` loads."""
    import json

    from safetensors.torch import save_file

    if len(names) != net.readout.out_features:
        raise RobalignError(f"{len(names)} target names for a read-out of {net.readout.out_features} values")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path,
              metadata={"targets": json.dumps(list(names))})


def offset_features(values: torch.Tensor, names: list[str]) -> torch.Tensor:
    """(M, K) read-out values in metres, named as scene_targets names them -> (M, L) random
    Fourier features of the gripper's offset from each task object (eef minus object, 3 O).

    Why offsets: objectives are about where the gripper is *relative to* an object (how
    close it passes the vase, which side of the mug it holds), and a first-frame-relative
    reward on positions sees only how far the gripper moved. Why a lift: the OT reward's
    cosine cost sees the direction of a feature vector, not its size, so on a few linear
    offsets it cannot tell 3 cm from 10 cm; cos(offset . w + b) over many random w makes
    nearby offsets similar and far ones not (a Gaussian kernel, Rahimi and Recht 2007).
    An object coordinate the read-out lacks (it never varied: a goal's height) counts as 0,
    which only shifts the features' phases."""
    where = {n: k for k, n in enumerate(names)}
    objects = [n[:-2] for n in names if n.endswith("_x") and "_axis" not in n and n != "eef_x"]
    if not {"eef_x", "eef_y", "eef_z"} <= where.keys() or not objects:
        raise RobalignError(f"features=offsets needs the gripper's (eef_x/y/z) and an object's position among "
                            f"the encoder's targets; it has {names}")
    zero = torch.zeros(len(values))
    offsets = torch.stack([values[:, where[f"eef_{a}"]] - (values[:, where[f"{o}_{a}"]] if f"{o}_{a}" in where else zero)
                           for o in objects for a in "xyz"], 1)
    w, b = _lift_weights(offsets.shape[1], OFFSET_FEATURES, OFFSET_BANDWIDTH, OFFSET_SEED)
    return torch.cos(offsets @ w + b) * (2 / OFFSET_FEATURES) ** 0.5


@functools.lru_cache(maxsize=8)
def _lift_weights(width: int, features: int, bandwidth: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lift's fixed (width, L) frequencies and (L,) phases, drawn once per width and lift
    (keyed on the lift too, so a changed constant can never be served stale weights)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(width, features, generator=gen) / bandwidth
    return w, torch.rand(features, generator=gen) * 2 * np.pi


@torch.no_grad()
def scene_encoder_error(net: SceneCNN, frames: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(K,) root-mean-square error of the net's predictions, in the targets' own units."""
    net.eval()
    preds = []
    for start in range(0, len(frames), 256):
        x = _batch(frames, np.arange(start, min(start + 256, len(frames))), 0, None)
        preds.append(net.read_out(net(x)))
    return torch.cat(preds).sub(torch.from_numpy(targets).float()).pow(2).mean(0).sqrt().numpy()


def scene_targets(state: np.ndarray, env_state: np.ndarray, env_name: str) -> tuple[np.ndarray, list[str]]:
    """(M, K) pretraining targets and their names from the recorded (M, S) proprioception and
    (M, E) environment state (robalign's layouts: eef position 3, eef quaternion 4, fingers 2,
    arm joints 7; the task's env_state_objects): the gripper's position, finger and arm joints, each task
    object's position and, for objects recorded with a quaternion, the direction of their x
    axis (a mug's handle; a quaternion's own sign is arbitrary, a direction's is not). A value
    that never varies is dropped by the caller."""
    from robalign.envs import env_class

    columns = [(state[:, :3], ["eef_x", "eef_y", "eef_z"]),
               (state[:, 7:9], ["finger_0", "finger_1"]),
               (state[:, 9:], [f"arm_joint_{k}" for k in range(state.shape[1] - 9)])]
    start = 0
    for name, size, has_position, *_ in env_class(env_name).env_state_objects:
        if has_position:
            columns.append((env_state[:, start:start + 3], [f"{name}_x", f"{name}_y", f"{name}_z"]))
        if has_position and size == 7:  # position then quaternion wxyz: where the object's x axis points
            w, x, y, z = env_state[:, start + 3:start + 7].T
            axis = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], 1)
            columns.append((axis, [f"{name}_axis_x", f"{name}_axis_y", f"{name}_axis_z"]))
        start += size
    return np.concatenate([c for c, _ in columns], 1).astype(np.float32), [n for _, ns in columns for n in ns]


def pretrain_on_arrays(frames: np.ndarray, targets: np.ndarray, names: list[str], held: np.ndarray,
                       **train) -> tuple[SceneCNN, list[str], np.ndarray, np.ndarray]:
    """Pretrain on the frames not `held` (M,) bool, after dropping target values that move
    less than a millimetre over them (a goal's fixed height teaches nothing and cannot be
    standardised). Returns the net, the names of the values kept, their (K,) held-out RMSE
    and their (K,) spread over every frame (within a few held-out episodes an object's
    place barely varies). `train` goes to `pretrain_scene_encoder`."""
    used = targets[~held].std(0) > 1e-3
    targets, names = targets[:, used], [n for n, u in zip(names, used) if u]
    net = pretrain_scene_encoder(frames[~held], targets[~held], frames[held], targets[held], **train)
    return net, names, scene_encoder_error(net, frames[held], targets[held]), targets.std(0)


def pretrain_encoder_run(demos: list[str], output_dir, epochs: int = 10, lr: float = 1e-3, batch: int = 128,
                         frame_stride: int = 2, val_fraction: float = 0.1, seed: int = 0, progress: bool = True,
                         config_text: str | None = None):
    """`robalign reward encoder`: a SceneCNN pretrained on the frames of `demos` (LeRobotDatasets
    of one task, written by `robalign demos`), saved with its held-out errors and a plot."""
    import json
    import time

    from robalign.data.demos import recorded_env
    from robalign.data.outputs import atomic_output_dir, check_output_dir
    from robalign.data.plots import pyplot
    from robalign.policies.data import DemoWindows

    check_output_dir(output_dir)
    if not demos:
        raise RobalignError("demos=PATH is required: one or more `robalign demos` runs with camera=true "
                            "(or a list [A,B] of them)")
    for name, value, low in (("epochs", epochs, 1), ("batch", batch, 2), ("frame_stride", frame_stride, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise RobalignError(f"{name} must be an int >= {low}; got {value!r}")
    if not 0 < val_fraction < 1:
        raise RobalignError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
    envs = {str(d): recorded_env(d) for d in demos}
    if None in envs.values() or len(set(envs.values())) != 1:
        raise RobalignError(f"demos must be `robalign demos` runs of one task (each names its env in config.yaml); "
                            f"got {envs}")
    env_name = next(iter(envs.values()))
    frames, targets, episode = [], [], []
    for k, path in enumerate(demos):
        windows = DemoWindows(path, ("image", "state", "environment_state"), n_obs_steps=1, horizon=1)
        keep = (np.arange(len(windows.arrays["state"])) - windows.episode_start.numpy()) % frame_stride == 0
        frames.append(windows.arrays["image"].numpy()[keep])
        y, names = scene_targets(windows.arrays["state"].numpy()[keep], windows.arrays["environment_state"].numpy()[keep],
                                 env_name)
        targets.append(y)
        episode.append(windows.episode_start.numpy()[keep] + k * 10**9)  # one id per episode across datasets
    frames, targets, episode = np.concatenate(frames), np.concatenate(targets), np.concatenate(episode)
    ids = np.unique(episode)
    held = np.isin(episode, np.random.default_rng(seed).choice(ids, max(1, round(val_fraction * len(ids))),
                                                                replace=False))
    if held.all() or (~held).sum() < batch:
        raise RobalignError(f"{len(ids)} episodes ({len(frames)} frames at frame_stride={frame_stride}) are too few "
                            f"to pretrain on with batch={batch}; record more demos")
    start = time.perf_counter()
    net, names, error, spread = pretrain_on_arrays(frames, targets, names, held, epochs=epochs, batch=batch, lr=lr,
                                                   seed=seed, progress=progress)
    with atomic_output_dir(output_dir) as tmp:
        if config_text is not None:
            (tmp / "config.yaml").write_text(config_text)
        save_scene_encoder(net, tmp / "encoder.safetensors", names)
        summary = {"env": env_name, "demos": [str(d) for d in demos], "episodes": len(ids),
                   "frames": int(len(frames)), "held_out_episodes": int(len(np.unique(episode[held]))),
                   "epochs": epochs, "seconds": round(time.perf_counter() - start, 1),
                   "targets": names, "held_out_rmse": {n: float(e) for n, e in zip(names, error)},
                   "spread": {n: float(s) for n, s in zip(names, spread)}}
        (tmp / "encoder.json").write_text(json.dumps(summary, indent=2))
        plt = pyplot()
        # metres and radians on one axis would hide the positions: error as a share of the
        # value's spread instead (1 = no better than always guessing its mean)
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 3.5))
        ax.bar(np.arange(len(names)), error / spread)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right")
        ax.set_ylabel("held-out RMSE / spread")
        ax.set_title(f"scene encoder on {env_name}: {summary['held_out_episodes']} held-out episodes")
        fig.tight_layout()
        fig.savefig(tmp / "errors.png", dpi=100)
        plt.close(fig)
    return summary
