"""Frozen pretrained image backbones: frames in, one feature vector per frame out.

Rewards put a small trainable head on top (see heads.py). A frozen backbone's features
depend only on the frame, so they are computed once per trajectory and cached; training a
head then costs milliseconds a step instead of a backbone pass per frame.

    backbone = make_backbone("efficientnet-lite0")   # ImageNet weights, offline
    feats = backbone.features(frames)                 # (T, H, W, 3) uint8 -> (T, 1280)

Glossary: T frames, H x W image, F backbone feature size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robalign.errors import RobalignError
from robalign.registry import Registry

BACKBONES: Registry = Registry("encoder")
FEATURE_KINDS = ("pooled", "spatial", "spatial8")
# Input normalisation each network was trained with: torchvision's ImageNet statistics;
# EfficientNet-Lite's TensorFlow (x - 127) / 128, which is what its stem's batch-norm
# statistics match on our frames (squared error of the means 6.3 against 37.5).
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TF_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def load_state_dict_file(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, sha256 of the file) from a .safetensors or torch .pth/.pt file.

    Torch files are read with `weights_only=True`: torch's restricted loader rebuilds only
    tensors and plain containers and refuses any other object, so a weights file cannot run
    code. robalign's own checkpoints are always safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise RobalignError(f"encoder weights file {str(path)!r} does not exist; "
                            f"give a state dict as .safetensors or .pth")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path), sha
    if path.suffix not in (".pth", ".pt"):
        raise RobalignError(f"encoder weights {str(path)!r}: unknown format {path.suffix!r}; "
                            f"allowed: .safetensors, .pth, .pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises bare RuntimeError/UnpicklingError on bad files
        raise RobalignError(f"encoder weights {str(path)!r} are not a readable state dict: {err}") from None
    if not isinstance(state, dict):
        raise RobalignError(f"encoder weights {str(path)!r} hold a {type(state).__name__}, not a state dict")
    return state, sha


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load every tensor of `state` into `net`; any missing, extra or mis-shaped key is an error."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RobalignError(f"{what}: the weights do not fit the network: {str(err).splitlines()[0]} "
                            f"({str(err).count(chr(10))} lines of detail)") from None


class Backbone(nn.Module):
    """A frozen ImageNet network that maps frames to pooled features.

    Attributes:
        name: registry name; dim: F; weights_sha: sha256 of the weights file (a reward
        checkpoint records it, and refuses to load over different weights).
    """

    mean_std = IMAGENET_MEAN_STD

    def __init__(self, name: str, net: nn.Module, dim: int, weights_sha: str):
        super().__init__()
        self.name, self.net, self.dim, self.weights_sha = name, net, dim, weights_sha
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in self.mean_std)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Backbone":
        return super().train(False)  # frozen: batch-norm statistics stay ImageNet's

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, F, h, w), the last stage."""
        raise NotImplementedError

    def middle_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H/16, W/16), a stage that still says where things are."""
        raise NotImplementedError

    def fine_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H/8, W/8), the stride-8 stage: finer places, simpler features."""
        raise NotImplementedError

    def spatial_map(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        return self.middle_map(x) if kind == "spatial" else self.fine_map(x)

    def feature_shape(self, kind: str, image_size: int) -> tuple[int, ...]:
        """(F,) for pooled features; (C, h, w) of the map a spatial kind flattens."""
        if kind == "pooled":
            return (self.dim,)
        with torch.no_grad():
            return tuple(self.spatial_map(torch.zeros(1, 3, image_size, image_size), kind).shape[1:])

    @torch.no_grad()
    def features(self, frames: np.ndarray | torch.Tensor, batch: int = 64, kind: str = "pooled") -> torch.Tensor:
        """(T, H, W, 3) uint8 frames -> (T, F) float32 features.

        kind: "pooled", the last stage averaged over space (F = 1280 / 512); "spatial", the
        stride-16 stage flattened (F = C * H/16 * W/16): where the gripper is relative to
        the objects survives, which global pooling averages away; "spatial8", the stride-8
        stage flattened (F = C * H/8 * W/8).
        """
        if kind not in FEATURE_KINDS:
            raise RobalignError(f"unknown feature kind {kind!r} for encoder {self.name}; valid choices: "
                                f"{', '.join(FEATURE_KINDS)} (offsets: encoder=scene-cnn only)")
        frames = torch.as_tensor(np.asarray(frames))
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise RobalignError(f"frames must be (T, H, W, 3) uint8; got {tuple(frames.shape)} {frames.dtype}")
        out = []
        for chunk in frames.split(batch):
            x = chunk.permute(0, 3, 1, 2).float().div(255)
            x = (x - self.mean) / self.std
            out.append(self.feature_map(x).mean((2, 3)) if kind == "pooled" else self.spatial_map(x, kind).flatten(1))
        return torch.cat(out)


class EfficientNetBackbone(Backbone):
    mean_std = TF_LITE_MEAN_STD

    def feature_map(self, x):
        return self.net.feature_map(x)

    def middle_map(self, x):
        return self.net.middle_map(x)

    def fine_map(self, x):
        from robalign.rewards.efficientnet import FINE

        return self.net.middle_map(x, blocks=FINE)


class ResNetBackbone(Backbone):
    def feature_map(self, x):
        return self.net.layer4(self.middle_map(x))

    def middle_map(self, x):
        return self.net.layer3(self.fine_map(x))

    def fine_map(self, x):
        n = self.net
        return n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))


@BACKBONES.register("efficientnet-lite0")
def efficientnet_lite0(weights: str | None = None) -> Backbone:
    """ImageNet EfficientNet-Lite0 (1280 features); weights default to the packaged ones."""
    from robalign.rewards.efficientnet import FEATURES, EfficientNetLite0, packaged_weights_path

    net = EfficientNetLite0()
    state, sha = load_state_dict_file(weights or packaged_weights_path())
    load_strict(net, state, "efficientnet-lite0")
    return EfficientNetBackbone("efficientnet-lite0", net, FEATURES, sha)


@BACKBONES.register("resnet18")
def resnet18(weights: str | None = None) -> Backbone:
    """torchvision ResNet-18 (512 features) with ImageNet weights from a file you provide."""
    import torchvision

    if weights is None:
        raise RobalignError("encoder resnet18 needs weights=PATH: an ImageNet state dict (.safetensors or .pth, "
                            "torchvision's resnet18 keys); nothing is downloaded at run time")
    net = torchvision.models.resnet18(weights=None)
    state, sha = load_state_dict_file(weights)
    load_strict(net, state, "resnet18")
    return ResNetBackbone("resnet18", net, 512, sha)


class SceneBackbone(Backbone):
    """robalign's own SceneCNN (scene_encoder.py). features=pooled: its 128 features (already
    positions read off the image, not a map); features=offsets: its read-out's gripper-to-
    object offsets through a fixed random Fourier lift (scene_encoder.offset_features)."""

    mean_std = TF_LITE_MEAN_STD  # the [-1, 1] range it was pretrained on
    kinds = ("pooled", "offsets")

    def __init__(self, name, net, dim, weights_sha, target_names: list[str] | None):
        super().__init__(name, net, dim, weights_sha)
        self.target_names = target_names

    def feature_map(self, x):
        return self.net(x)[:, :, None, None]

    def check_kind(self, kind: str) -> None:
        """Both entry points (feature_shape, features) check here, so no map is ever asked for."""
        if kind not in self.kinds:
            raise RobalignError(f"encoder scene-cnn gives features={' or '.join(self.kinds)} only "
                                f"(its features are positions, not a map); got features={kind!r}")
        if kind == "offsets" and self.target_names is None:
            raise RobalignError("features=offsets reads the gripper's and objects' positions by name, and this "
                                "scene-cnn weights file records no target names (written before 2026-12-07); "
                                "pretrain it again with `robalign reward encoder`")

    def feature_shape(self, kind, image_size):
        from robalign.rewards.scene_encoder import OFFSET_FEATURES

        self.check_kind(kind)
        return (OFFSET_FEATURES,) if kind == "offsets" else (self.dim,)

    @torch.no_grad()
    def features(self, frames, batch: int = 64, kind: str = "pooled") -> torch.Tensor:
        self.check_kind(kind)
        feats = super().features(frames, batch, "pooled")
        if kind == "pooled":
            return feats
        from robalign.rewards.scene_encoder import offset_features

        return offset_features(self.net.read_out(feats), self.target_names)


@BACKBONES.register("scene-cnn")
def scene_cnn(weights: str | None = None) -> Backbone:
    """A SceneCNN pretrained on a task's episodes (`robalign reward encoder`); weights=PATH required."""
    import json

    from safetensors import safe_open

    from robalign.rewards.scene_encoder import FEATURES, SceneCNN

    if weights is None:
        raise RobalignError("encoder scene-cnn needs encoder_weights=PATH: a .safetensors file written by "
                            "`robalign reward encoder`")
    state, sha = load_state_dict_file(weights)
    if "readout.weight" not in state:
        raise RobalignError(f"{weights!r} is not a scene-cnn weights file (no readout.weight); "
                            f"make one with `robalign reward encoder`")
    net = SceneCNN(int(state["readout.weight"].shape[0]))
    load_strict(net, state, "scene-cnn")
    names = None
    if str(weights).endswith(".safetensors"):
        with safe_open(weights, "pt") as f:
            names = json.loads((f.metadata() or {}).get("targets", "null"))
    if names is not None and len(names) != net.readout.out_features:
        raise RobalignError(f"{weights!r} names {len(names)} targets for a read-out of {net.readout.out_features}")
    return SceneBackbone("scene-cnn", net, FEATURES, sha, names)


def make_backbone(name: str, weights: str | None = None) -> Backbone:
    return BACKBONES.get(name)(weights)
