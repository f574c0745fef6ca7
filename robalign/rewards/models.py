"""Reward models: a frozen backbone, a small trainable head, and a way to score a video.

    rapl         OT feature matching against preferred demos in a head-aligned space (RAPL)
    imagenet-ot  the same OT reward on the unaligned backbone features (no training)
    rlhf         a per-frame scalar head summed over the video (standard RLHF reward)
    oracle       the simulated person's own objective (an upper bound; reads privileged info)

Every model scores *backbone features*, (N, F) per trajectory, so training and evaluation
run on cached features; `reward(trajectory)` computes them from the frames when needed.
Frames are used every `frame_stride` steps; a per-step reward is spread back over the
steps it stands for, so the trajectory reward (its sum) is the same either way.

Glossary: B batch, T steps, N used frames (T / frame_stride), F backbone features,
D embedding size, K demos, P keypoints (C x h x w: a spatial feature map).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robalign.errors import RobalignError
from robalign.registry import Registry
from robalign.rewards.sinkhorn import ot_step_costs, pad_sequences
from robalign.types import Trajectory

REWARDS: Registry = Registry("reward method")
CONFIG_FILE, WEIGHTS_FILE = "reward_config.json", "reward.safetensors"


@dataclasses.dataclass
class RewardConfig:
    method: str  # rapl | imagenet-ot | rlhf | oracle
    encoder: str = "efficientnet-lite0"  # backbone name (robalign.rewards.encoders.BACKBONES)
    encoder_weights: str | None = None  # weights file; None: the backbone's default
    encoder_sha: str = ""  # sha256 of the weights the head was trained on (checked on load)
    features: str = "pooled"  # pooled (last stage, averaged over space) | spatial (stride-16 stage, flattened) |
    # spatial8 (stride-8 stage, flattened) | offsets (scene-cnn only: its read-out's gripper-to-object offsets,
    # lifted by fixed random Fourier features)
    feature_dim: int = 1280  # F, the backbone's feature size (set from the backbone when a reward is trained)
    feature_shape: list[int] | None = None  # (C, h, w) of a spatial kind's map (set from the backbone)
    offset_lift: dict | None = None  # features=offsets: the random Fourier lift's {features, bandwidth, seed}
    # (set when a reward is trained; load refuses a robalign whose lift differs). None: saved before it was
    # recorded, with scene_encoder.FIRST_OFFSET_LIFT
    keypoints: int = 0  # > 0: a spatial-softmax head that reads this many keypoints off a spatial map
    # (needs features=spatial or spatial8); 0: a head on the flat features
    embed_dim: int = 32  # D, the aligned embedding (OT rewards)
    hidden_dim: int = 0  # head's hidden layer; 0: a single linear projection (fast: the head runs on every frame)
    frame_stride: int = 4  # use every n-th frame (20 Hz control -> 5 Hz; OT cost grows with frames squared)
    image_size: int = 96  # frames are resized to this square size before the backbone
    relative: bool = True  # features minus the first frame's: removes what never moves (table, distractors' colours)
    sinkhorn_eps: float = 0.1  # entropic regularisation of the OT reward (costs are in [0, 2])
    sinkhorn_iters: int = 25
    anchor: str = "demos"  # rapl triplets: "best" (RAPL: middle beats worst measured against the best video) or
    # "demos" (every implied pair measured against the demos, as the reward is used)
    objective: str | None = None  # the objective the preferences came from (oracle scores with it)
    env: str | None = None
    robot_meshes: str | None = None  # how the frames it learnt from drew the robot ($ROBALIGN_ROBOT_MESHES);
    # frames drawn otherwise are refused. None: not recorded


class KeypointHead(nn.Module):
    """Spatial softmax (Levine et al. 2016): a 1x1 convolution makes P attention maps, each
    map's softmax over the h x w cells gives the expected (x, y) of what it attends to, and
    a linear layer (or MLP) maps the 2P coordinates to the output. Where things are (the
    gripper against the vase) is all that passes; what a distractor looks like does not.

    (..., C * h * w) flat map -> (..., out).
    """

    def __init__(self, cfg: RewardConfig, out: int):
        super().__init__()
        C, h, w = cfg.feature_shape
        self.shape, P = (C, h, w), cfg.keypoints
        self.attend = nn.Linear(C, P)  # the 1x1 convolution, applied per cell
        # How sharply each map picks its cells: learnt on a log scale, as Adam's steps on the
        # 1x1 weights alone sharpen a map too slowly for a few hundred answers.
        self.log_sharpness = nn.Parameter(torch.zeros(()))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], -1), persistent=False)  # (hw, 2)
        self.out = head(dataclasses.replace(cfg, keypoints=0, feature_dim=2 * P), out)

    def points(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C * h * w) -> (M, P, 2): each keypoint's expected (x, y), in [-1, 1] across the map."""
        C, h, w = self.shape
        cells = x.reshape(-1, C, h * w).transpose(1, 2)  # (M, hw, C)
        attention = (self.attend(cells) * self.log_sharpness.exp()).softmax(1)  # (M, hw, P), sums to 1 over cells
        return torch.einsum("mck,cd->mkd", attention, self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.points(x).flatten(1)).view(*x.shape[:-1], -1)


def head(cfg: RewardConfig, out: int) -> nn.Module:
    if cfg.keypoints:
        return KeypointHead(cfg, out)
    if cfg.hidden_dim == 0:
        return nn.Linear(cfg.feature_dim, out)
    return nn.Sequential(nn.Linear(cfg.feature_dim, cfg.hidden_dim), nn.ReLU(), nn.Linear(cfg.hidden_dim, out))


class RewardModel(nn.Module):
    """Base: scores padded feature batches; subclasses define `step_rewards`."""

    trainable = True
    visual = True  # scores frames (every reward but the oracle, which reads privileged info)

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.cfg = cfg
        self._frozen: dict = {}  # the backbone, kept out of the state dict: a checkpoint holds only what was learnt
        self.demos: list[torch.Tensor] = []  # K x (N_k, F) features of preferred demos

    # ---- features ----------------------------------------------------------------------
    @property
    def backbone(self):
        if "backbone" not in self._frozen:
            from robalign.rewards.encoders import make_backbone

            backbone = make_backbone(self.cfg.encoder, self.cfg.encoder_weights)
            if self.cfg.encoder_sha and backbone.weights_sha != self.cfg.encoder_sha:
                raise RobalignError(
                    f"this reward was trained on {self.cfg.encoder} weights with sha256 {self.cfg.encoder_sha[:12]}..., "
                    f"but the weights found have {backbone.weights_sha[:12]}...; give encoder_weights= the file "
                    f"it was trained with")
            self.cfg.encoder_sha = backbone.weights_sha
            self._frozen["backbone"] = backbone
        return self._frozen["backbone"]

    def frame_features(self, trajectory: Trajectory) -> torch.Tensor:
        """(T, H, W, 3) frames of a trajectory -> (N, F) backbone features of the used frames."""
        if trajectory.frames is None:
            raise RobalignError("the trajectory has no frames; visual rewards need its video (record with video=true)")
        frames = torch.as_tensor(trajectory.frames[:: self.cfg.frame_stride])
        if frames.shape[1:3] != (self.cfg.image_size, self.cfg.image_size):
            size = (self.cfg.image_size, self.cfg.image_size)
            frames = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", antialias=True)
            frames = frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return self.backbone.features(frames, kind=self.cfg.features)

    def prepare(self, feats: torch.Tensor) -> torch.Tensor:
        """(..., N, F) -> (..., N, F): what the head sees (relative to the first frame)."""
        return feats - feats[..., :1, :] if self.cfg.relative else feats

    def embed(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 -> (B, T, D) embeddings the reward compares."""
        frames = torch.as_tensor(np.asarray(frames))
        if frames.ndim != 5:
            raise RobalignError(f"embed takes (B, T, H, W, 3) frames; got {tuple(frames.shape)}")
        feats = torch.stack([self.backbone.features(v) for v in frames])
        return self.embed_features(feats)

    def embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.prepare(feats)

    # ---- scoring -----------------------------------------------------------------------
    def step_rewards(self, feats: torch.Tensor, mask: torch.Tensor, prefix: bool = False) -> torch.Tensor:
        """(B, N, F) features, (B, N) mask -> (B, N) per-frame rewards (0 on padding).

        `prefix`: the videos are unfinished episodes, their first N frames (only rewards
        that compare whole videos, the OT rewards, score a prefix differently)."""
        raise NotImplementedError

    @torch.no_grad()
    def reward(self, trajectory: Trajectory, features: torch.Tensor | None = None, prefix: bool = False) -> np.ndarray:
        """Per-step reward of one trajectory, (T,) float; sums to its trajectory reward.
        `prefix=True` scores an unfinished episode (best-of-n's lookaheads) as far as it got."""
        feats = self.frame_features(trajectory) if features is None else features
        x, mask = pad_sequences([feats])
        per_frame = self.step_rewards(x, mask, prefix)[0].numpy().astype(np.float64)
        # Used frame k stands for steps [k * stride, (k + 1) * stride), the last maybe fewer.
        owner = np.arange(len(trajectory)) // self.cfg.frame_stride
        return per_frame[owner] / np.bincount(owner)[owner]

    # ---- persistence -------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write reward_config.json and reward.safetensors (head, demo features) to `directory`."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": v.detach().contiguous() for k, v in self.state_dict().items()}
        tensors.update({f"demo.{i}": d.contiguous() for i, d in enumerate(self.demos)})
        save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": "robalign-reward", "version": "1"})
        (directory / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2, sort_keys=True))
        return directory


class OTReward(RewardModel):
    """Reward = minus the per-frame OT cost against the closest demo (or a given anchor)."""

    def __init__(self, cfg: RewardConfig, learn_head: bool = True):
        super().__init__(cfg)
        self.head = head(cfg, cfg.embed_dim) if learn_head else None
        self.log_scale = nn.Parameter(torch.zeros(()))  # Bradley-Terry temperature, learnt

    def embed_features(self, feats):
        x = self.prepare(feats)
        return self.head(x) if self.head is not None else x

    def step_rewards(self, feats, mask, prefix=False):
        """Against the closest of the demos (training also scores against anchors: embedded_step_rewards)."""
        return self.embedded_step_rewards(self.embed_features(feats), mask, prefix=prefix)

    def embedded_step_rewards(self, x: torch.Tensor, mask: torch.Tensor,
                              anchors: list[torch.Tensor] | None = None, prefix: bool = False) -> torch.Tensor:
        """step_rewards on embeddings: (B, N, D), (B, N), (B) list of (M, D) or None -> (B, N).

        With uniform marginals OT spreads a video's frames over the whole of each demo, so an
        unfinished episode would be judged against demo frames it has not reached yet; with
        `prefix` each video is matched against the demos' first N frames instead (a demo
        shorter than that, whole), the demos as far as they had got at the same step."""
        eps, iters = self.cfg.sinkhorn_eps, self.cfg.sinkhorn_iters
        if anchors is not None:
            y, mask_y = pad_sequences(anchors)
            return -ot_step_costs(x, y, mask, mask_y, eps, iters)
        if not self.demos:
            raise RobalignError("this OT reward has no demos to compare with; give demos= when training it")
        demos = [self.embed_features(d) for d in self.demos]
        B, K = x.shape[0], len(demos)
        if prefix:  # row b * K + k: demo k cut to video b's length
            y, mask_y = pad_sequences([d[:n] for n in mask.sum(1).tolist() for d in demos])
        else:
            y, mask_y = pad_sequences(demos)
            y, mask_y = y.repeat(B, 1, 1), mask_y.repeat(B, 1)
        costs = ot_step_costs(x.repeat_interleave(K, 0), y, mask.repeat_interleave(K, 0), mask_y,
                              eps, iters).view(B, K, -1)
        best = costs.sum(-1).argmin(1)  # the closest demo per rollout
        return -costs[torch.arange(B), best]

    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp()


class ImageNetOTReward(OTReward):
    """The OT reward on the backbone's own features: nothing is learnt."""

    trainable = False

    def __init__(self, cfg: RewardConfig):
        super().__init__(cfg, learn_head=False)


class RLHFReward(RewardModel):
    """A scalar per frame from a head on the backbone features; the video's reward is the sum."""

    def __init__(self, cfg: RewardConfig):
        super().__init__(cfg)
        self.head = head(cfg, 1)

    def step_rewards(self, feats, mask, prefix=False):
        # each frame's reward depends on that frame alone: a prefix scores as it stands
        return self.head(self.prepare(feats)).squeeze(-1) * mask

    def logit_scale(self) -> torch.Tensor:
        return torch.ones(())


class OracleReward(RewardModel):
    """The simulated person's objective itself: per step where it has a per-step form,
    otherwise its trajectory value spread evenly over the steps."""

    trainable = False
    visual = False

    def __init__(self, cfg: RewardConfig):
        super().__init__(cfg)
        if cfg.objective is None:
            raise RobalignError("the oracle reward needs objective=NAME (the simulated person's objective)")
        from robalign.envs.objectives import get_objective

        self.objective = get_objective(cfg.objective)

    def reward(self, trajectory: Trajectory, features=None, prefix=False) -> np.ndarray:
        total = self.objective(trajectory)  # a prefix: the objective as far as it got
        if getattr(self.objective, "per_step", None) is None:
            return np.full(len(trajectory), total / len(trajectory))
        steps = self.objective.steps(trajectory)
        # The oracle's trajectory reward is the objective; its per-step reward ranks the
        # steps as the per-step form does, shifted so the steps sum to the objective.
        return steps - steps.mean() + total / len(trajectory)


for _name, _cls in (("rapl", OTReward), ("imagenet-ot", ImageNetOTReward), ("rlhf", RLHFReward),
                    ("oracle", OracleReward)):
    REWARDS.register(_name)(_cls)


def fit_to_backbone(cfg: RewardConfig) -> RewardConfig:
    """`cfg` with feature_dim and encoder_sha read from its backbone (built offline)."""
    if cfg.method == "oracle":
        return cfg
    from robalign.rewards.encoders import make_backbone

    backbone = make_backbone(cfg.encoder, cfg.encoder_weights)
    shape = backbone.feature_shape(cfg.features, cfg.image_size)
    return dataclasses.replace(cfg, feature_dim=int(np.prod(shape)), encoder_sha=backbone.weights_sha,
                               feature_shape=list(shape) if len(shape) == 3 else None, offset_lift=lift_of(cfg))


def lift_of(cfg: RewardConfig) -> dict | None:
    """The offsets lift this robalign computes for `cfg`'s features (None for other kinds)."""
    from robalign.rewards.scene_encoder import offset_lift

    return offset_lift() if cfg.features == "offsets" else None


def make_reward(cfg: RewardConfig) -> RewardModel:
    for key, ok, allowed in (("frame_stride", cfg.frame_stride >= 1, ">= 1"), ("image_size", 16 <= cfg.image_size <= 1024,
                             "in [16, 1024]"), ("embed_dim", cfg.embed_dim >= 1, ">= 1"),
                             ("hidden_dim", cfg.hidden_dim >= 0, ">= 0"), ("sinkhorn_eps", cfg.sinkhorn_eps > 0, "> 0"),
                             ("sinkhorn_iters", cfg.sinkhorn_iters >= 1, ">= 1"), ("anchor", cfg.anchor in ("best", "demos"),
                             "best or demos"), ("keypoints", cfg.keypoints >= 0, ">= 0")):
        if not ok:
            raise RobalignError(f"reward setting {key}={getattr(cfg, key)!r} is not allowed; it must be {allowed}")
    if cfg.keypoints and cfg.method in ("rapl", "rlhf"):
        shape = cfg.feature_shape
        if cfg.features == "pooled" or shape is None or len(shape) != 3 or int(np.prod(shape)) != cfg.feature_dim:
            raise RobalignError(f"keypoints={cfg.keypoints} reads places off a feature map: it needs features=spatial "
                                f"or spatial8 and the map's shape (feature_shape, set from the backbone); "
                                f"got features={cfg.features!r}, feature_shape={shape}")
    return REWARDS.get(cfg.method)(cfg)


def load_reward(directory: str | Path) -> RewardModel:
    """A reward saved by `save_pretrained`; refuses missing, partial or mismatched files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise RobalignError(f"{str(directory)!r} is not a reward checkpoint: {path.name} is missing "
                                f"(expected {CONFIG_FILE} and {WEIGHTS_FILE}, written by `robalign reward`)")
    try:
        raw = json.loads(config_path.read_text())
        cfg = RewardConfig(**raw)
    except (json.JSONDecodeError, TypeError) as err:
        raise RobalignError(f"{config_path}: not a valid reward config ({err})") from None
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError) as err:
        raise RobalignError(f"{weights_path}: unreadable or truncated ({err})") from None
    # the lift's random frequencies are not in the checkpoint: they are redrawn from these
    if cfg.features == "offsets":
        from robalign.rewards.scene_encoder import FIRST_OFFSET_LIFT

        trained = cfg.offset_lift or FIRST_OFFSET_LIFT
        if trained != lift_of(cfg):
            raise RobalignError(f"{config_path}: trained on features=offsets lifted with {trained}, but this "
                                f"robalign lifts with {lift_of(cfg)}; train the reward again")
    model = make_reward(cfg)
    head_state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    try:
        model.load_state_dict(head_state, strict=True)
    except RuntimeError as err:
        raise RobalignError(f"{weights_path}: the weights do not fit a {cfg.method} reward with this config "
                            f"({str(err).splitlines()[0]})") from None
    demo_keys = sorted((k for k in tensors if k.startswith("demo.")), key=lambda k: int(k.split(".")[1]))
    model.demos = [tensors[k] for k in demo_keys]
    for i, d in enumerate(model.demos):
        if d.ndim != 2 or d.shape[1] != cfg.feature_dim:
            raise RobalignError(f"{weights_path}: demo {i} has shape {tuple(d.shape)}; expected (N, {cfg.feature_dim})")
    return model
