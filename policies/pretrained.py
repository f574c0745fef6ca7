"""The contract every policy keeps, enforced here in code rather than by convention.

Glossary of tensor dimensions:
    B  batch                      To  observations conditioned on (n_obs_steps)
    K  actions per chunk          A   action size (7: OSC delta pose 6 + gripper)
    S  proprioception size (16)   E   task-object state size (per env)
    H, W image side (pixels)

Observations are dicts keyed like the env's (`state`, `environment_state`, `image`), each
value batched with an observation history: state (B, To, S), environment_state (B, To, E),
image (B, To, H, W, 3) uint8. A policy declares which keys it reads and their per-step
shapes (`input_shapes`); `check_observation` refuses anything else with the key and shape
that were wrong.

A checkpoint directory holds exactly:
    config.json        {"policy": NAME, "format": 1, "config": {...}, "sha256": {file: hex}}
    model.safetensors  the weights
    stats.safetensors  normalisation statistics (min and max per input and the action)
`from_pretrained` refuses a missing or partial directory, a file whose sha256 differs from
the one recorded (tampered or truncated), unknown config keys, and weights that do not fit.
Nothing is ever read through pickle.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from robalign.errors import RobalignError

CONFIG_FILE, WEIGHTS_FILE, STATS_FILE = "config.json", "model.safetensors", "stats.safetensors"
FORMAT = 1
# Normalised inputs are clipped here: a state far outside what the demos showed (a toppled
# vase) should not become a huge conditioning value.
INPUT_CLIP = 5.0
# A dimension that barely moves in the demos (a quaternion of an upright object) would
# otherwise be divided by ~0 and turn noise into large inputs.
MIN_RANGE = 1e-2
# Inputs without min-max statistics: images are scaled by 1/255, instructions are text.
UNSCALED_KEYS = ("image", "instruction")
# Inputs that are text: one string per sample (B,), not a tensor with an observation history.
TEXT_KEYS = ("instruction",)


class ObservationError(RobalignError):
    """An observation missing a key the policy reads, or with the wrong shape."""


class CheckpointError(RobalignError):
    """A policy checkpoint that is missing, partial, tampered with or does not fit."""


def config_from_dict(config_class: type, raw: dict, where: str) -> Any:
    """`config_class(**raw)` where an unknown key is an error naming the valid ones."""
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise RobalignError(f"{where}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return config_class(**values)


class Normalizer(nn.Module):
    """Min-max scaling of each key to [-1, 1] (Diffusion Policy's choice for every low-dim key).

    Stats live in buffers so they move with the module (`.to(device)`) and save with it.
    """

    def __init__(self, stats: dict[str, dict[str, torch.Tensor]]):
        super().__init__()
        self.keys = sorted(stats)
        # The stats as given, for saving: (c - h, c + h) from the buffers is not bit for bit
        # (lo, hi), so a saved and reloaded policy would act a last bit differently.
        self._given = {}
        for key in self.keys:
            lo, hi = stats[key]["min"].float(), stats[key]["max"].float()
            self._given[key] = (lo.detach().cpu().clone(), hi.detach().cpu().clone())
            centre, half = (hi + lo) / 2, torch.clamp((hi - lo) / 2, min=MIN_RANGE / 2)
            self.register_buffer(f"{key}_centre", centre)
            self.register_buffer(f"{key}_half", half)

    def normalize(self, key: str, x: torch.Tensor, clip: bool = True) -> torch.Tensor:
        y = (x - getattr(self, f"{key}_centre")) / getattr(self, f"{key}_half")
        return y.clamp(-INPUT_CLIP, INPUT_CLIP) if clip else y

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        return y * getattr(self, f"{key}_half") + getattr(self, f"{key}_centre")

    def stats(self) -> dict[str, torch.Tensor]:
        """Flat tensors for stats.safetensors: `key.min`, `key.max`, exactly as given (a
        reloaded policy normalises bit for bit as this one)."""
        out = {}
        for key in self.keys:
            lo, hi = self._given[key]
            out[f"{key}.min"], out[f"{key}.max"] = lo.contiguous(), hi.contiguous()
        return out


def stats_from_flat(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    stats: dict[str, dict[str, torch.Tensor]] = collections.defaultdict(dict)
    for name, value in flat.items():
        key, which = name.rsplit(".", 1)
        stats[key][which] = value
    return dict(stats)


@dataclasses.dataclass
class ChunkSample:
    """One sampled action chunk with what alignment needs to score it again later.

    executed (B, K, A): the actions run on the robot, env units.
    sample (B, Hz, A): the whole sampled chunk in the layout the policy's alignment losses
        take (`denoise_loss`'s window for diffusion, `log_prob`'s chunk for token policies).
    chain (B, N+1, Hz, A): the denoising chain (stochastic diffusion sampling only).
    log_probs: each denoising step's (B, N) or each action token's (B, Hz, A) log-probability.
    """

    executed: torch.Tensor
    sample: torch.Tensor
    chain: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None


class Policy(nn.Module):
    """Base of every policy: observation checks, chunked acting, checkpoints.

    Subclasses set `name` and `config_class`, build their network in `__init__(config,
    stats)`, and implement `compute_loss(batch)` and `predict_action_chunk(obs,
    generator)`; alignment adds `denoise_loss` (diffusion) or `log_prob` (token policies).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    # pretrain's train.episode_start_share when the run leaves it null (policies/training.py)
    episode_start_share: ClassVar[float] = 0.0
    # sample_chunk takes temperature= (token policies): alignment's explore_chunks needs it
    samples_at_temperature: ClassVar[bool] = False

    @classmethod
    def saved_config(cls, raw: dict) -> dict:
        """A checkpoint's config as saved -> as this version reads it (fields added since)."""
        return raw

    def __init__(self, config, stats: dict[str, dict[str, torch.Tensor]]):
        super().__init__()
        if "environment_state" in self.input_keys(config) and config.env_state_dim <= 0:
            raise RobalignError(f"{self.name} policy: use_env_state needs env_state_dim > 0; got {config.env_state_dim}")
        scaled = [k for k in (*self.input_keys(config), "action") if k not in UNSCALED_KEYS]
        missing = [k for k in scaled if k not in stats]
        if missing:
            raise RobalignError(f"{self.name}: normalisation stats lack {', '.join(missing)}")
        self.config = config
        self.normalizer = Normalizer({k: stats[k] for k in scaled})
        self._actor: ChunkActor | None = None

    # ---- what the policy reads and writes ----------------------------------------------
    @staticmethod
    def input_keys(config) -> tuple[str, ...]:
        """Observation keys this config reads."""
        raise NotImplementedError

    @staticmethod
    def window_horizon(config) -> int:
        """Actions per training window, counted from the oldest observation (DemoWindows)."""
        return config.horizon

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-step shape of each tensor key read (without batch and history), from the
        config's data sizes (state_dim, env_state_dim, image_size)."""
        c = self.config
        sizes = {"state": lambda: (c.state_dim,), "environment_state": lambda: (c.env_state_dim,),
                 "image": lambda: (c.image_size, c.image_size, 3)}
        return {k: sizes[k]() for k in self.input_keys(c) if k not in TEXT_KEYS}

    def text_inputs(self) -> tuple[str, ...]:
        """Text keys this policy reads (e.g. `instruction`): a list of B strings each."""
        return tuple(k for k in self.input_keys(self.config) if k in TEXT_KEYS)

    @property
    def n_obs_steps(self) -> int:
        return self.config.n_obs_steps

    @property
    def n_action_steps(self) -> int:
        return self.config.n_action_steps

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_observation(self, obs: dict) -> int:
        """Raise ObservationError unless `obs` has every key read with shape (B, To, *shape).

        Returns B.
        """
        batch = None
        for key in self.text_inputs():
            texts = obs.get(key)
            if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ObservationError(f"{self.name} policy: observation {key!r} must be a list of B non-empty "
                                       f"strings; got {_describe(texts)}")
            batch = len(texts)
        for key, shape in self.input_shapes().items():
            if key not in obs:
                raise ObservationError(f"{self.name} policy: observation lacks {key!r}; it reads "
                                       + ", ".join(f"{k} (B, {self.n_obs_steps}, {', '.join(map(str, s))})"
                                                   for k, s in self.input_shapes().items()))
            got = tuple(obs[key].shape)
            want = (self.n_obs_steps, *shape)
            if len(got) != len(want) + 1 or got[1:] != want or (batch is not None and got[0] != batch):
                raise ObservationError(f"{self.name} policy: observation {key!r} has shape {got}; expected "
                                       f"(B, {', '.join(map(str, want))})" + (f" with B={batch}" if batch else ""))
            batch = got[0]
        return batch

    # ---- training and inference contract ----------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss on a batch of observation windows and action chunks."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: `forward` so that wrappers (DDP under accelerate) see the call."""
        return self.compute_loss(batch)

    def predict_action_chunk(self, obs: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, n_action_steps, A) unnormalised actions for a batch of observation windows."""
        raise NotImplementedError

    def sample_chunk(self, obs: dict, generator: torch.Generator | None = None, stochastic: bool = False) -> ChunkSample:
        """A chunk as `predict_action_chunk` would act it, with the sample alignment re-scores;
        `stochastic` asks diffusion policies for a denoising chain with per-step log-probs (DPPO);
        `temperature=` overrides the config's where `samples_at_temperature`."""
        raise NotImplementedError(f"the {self.name} policy cannot be aligned: it has no sample_chunk")

    def actor(self, seed: int | None = None) -> "ChunkActor":
        """A per-episode actor: observation history, action queue and its own noise stream."""
        return ChunkActor(self, seed)

    def reset(self, seed: int | None = None) -> None:
        """Forget the history and queued actions of `select_action`'s episode."""
        self._actor = self.actor(seed)

    def select_action(self, obs: dict) -> np.ndarray:
        """(A,) the next action for one env observation (unbatched, as the env returns it)."""
        if self._actor is None:
            self.reset()
        return self._actor.act(obs)

    # ---- checkpoints -------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors and stats.safetensors into `directory`."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                   if not k.startswith("normalizer.")}
        save_file(weights, directory / WEIGHTS_FILE, metadata={"format": "robalign-policy", "policy": self.name})
        save_file({k: v.cpu() for k, v in self.normalizer.stats().items()}, directory / STATS_FILE)
        sha = {f: _sha256(directory / f) for f in (WEIGHTS_FILE, STATS_FILE)}
        meta = {"policy": self.name, "format": FORMAT, "config": dataclasses.asdict(self.config), "sha256": sha}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory


class ChunkActor:
    """Acts one episode with a chunked policy: keeps the last To observations (the first
    repeated at the start, as in training) and executes n_action_steps of each chunk.

    Its noise comes from a generator seeded per episode, so an episode's actions depend on
    its seed only, not on which worker or process ran it.
    """

    def __init__(self, policy: Policy, seed: int | None = None):
        self.policy = policy
        self.generator = torch.Generator(device=policy.device)
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()
        self.history: collections.deque = collections.deque(maxlen=policy.n_obs_steps)
        self.queue: collections.deque = collections.deque()

    def act(self, obs: dict) -> np.ndarray:
        self.observe(obs)
        if not self.queue:
            with torch.no_grad():
                chunk = self.plan(self.window(obs))[0]
            self.queue.extend(chunk.cpu().numpy())
        return self.queue.popleft().astype(np.float32)

    def observe(self, obs: dict) -> None:
        """Add one env observation to the history (the first fills it, as in training)."""
        step = {k: torch.as_tensor(np.asarray(obs[k])) for k in self.policy.input_shapes() if k in obs}
        if not self.history:
            self.history.extend([step] * self.policy.n_obs_steps)
        else:
            self.history.append(step)

    def window(self, obs: dict) -> dict:
        """The policy's batch (B = 1) of the last To observations, with `obs`'s text inputs."""
        window = {k: torch.stack([h[k] for h in self.history])[None].to(self.policy.device)
                  for k in self.history[-1]}
        window.update({k: [obs[k]] for k in self.policy.text_inputs() if k in obs})
        self.policy.check_observation(window)  # names a missing key or a wrong shape
        return window

    def plan(self, window: dict) -> torch.Tensor:
        """(1, K, A) actions for one observation window (B = 1); subclasses record more."""
        return self.policy.predict_action_chunk(window, generator=self.generator)


def _describe(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}: {[v for v in value[:3]]!r}"
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_checkpoint(directory: str | Path) -> tuple[str, dict, dict[str, torch.Tensor], dict]:
    """(policy name, raw config, weights, stats) of a checkpoint, verified file by file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"policy checkpoint {str(directory)!r} does not exist; give the `policy` "
                              f"directory written by `robalign pretrain` (or `align`)")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, STATS_FILE) if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"policy checkpoint {str(directory)!r} is partial: {', '.join(missing)} missing "
                              f"(a checkpoint holds {CONFIG_FILE}, {WEIGHTS_FILE} and {STATS_FILE})")
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
        name, raw, sha = meta["policy"], meta["config"], meta["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: not a robalign policy config ({err!r})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{directory / CONFIG_FILE}: checkpoint format {meta.get('format')!r}; "
                              f"this robalign reads format {FORMAT}")
    for f in (WEIGHTS_FILE, STATS_FILE):
        if sha.get(f) != _sha256(directory / f):
            raise CheckpointError(f"{directory / f} does not match the sha256 recorded in {CONFIG_FILE}: "
                                  f"the file was changed or truncated after saving")
    try:
        weights, stats = load_file(directory / WEIGHTS_FILE), load_file(directory / STATS_FILE)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{directory}: unreadable weights ({err})") from None
    return name, raw, weights, stats_from_flat(stats)


def load_weights(policy: Policy, weights: dict[str, torch.Tensor], where: str) -> None:
    """Every tensor of `weights` into `policy` (its normaliser aside); any mismatch is an error."""
    expected = {k for k in policy.state_dict() if not k.startswith("normalizer.")}
    missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or extra:
        raise CheckpointError(f"{where}: the weights do not fit a {policy.name} policy with this config "
                              f"({len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]})")
    try:
        policy.load_state_dict({**weights, **{k: v for k, v in policy.state_dict().items()
                                               if k.startswith("normalizer.")}}, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{where}: the weights do not fit a {policy.name} policy with this config "
                              f"({str(err).splitlines()[-1].strip()})") from None
