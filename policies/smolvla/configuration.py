"""Settings of the `smolvla` policy: lerobot 0.4.4's SmolVLA (a SmolVLM backbone plus a
flow-matching action expert) behind robalign's policy contract.

Every field is commented; an unknown field is an error (`config_from_dict`). The defaults
are the CPU config: a tiny random SmolVLM-shaped backbone built in-process (no model hub),
short chunks and few integration steps. To start from the published model, point `vlm_dir`
at a local copy of HuggingFaceTB/SmolVLM2-500M-Video-Instruct (config.json and its tokenizer
files), `weights_path` at lerobot/smolvla_base's model.safetensors, and use its sizes:
num_vlm_layers=16, chunk_size=50, max_state_dim=32, max_action_dim=32.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from robalign.errors import RobalignError

ATTENTION_MODES = ("cross_attn", "self_attn")


@dataclasses.dataclass
class SmolVLAPolicyConfig:
    # ---- data shapes (filled in from the dataset by `robalign pretrain`) ----
    state_dim: int = 16            # S: proprioception values per step
    action_dim: int = 7            # A: action values per step
    image_size: int = 96           # H = W of the agentview image (resized with padding to the backbone's side)
    # ---- backbone and weights ----
    vlm_dir: str | None = None     # local SmolVLM folder (config.json + tokenizer files); null: tiny backbone below
    weights_path: str | None = None  # lerobot SmolVLA weights to load strictly (.safetensors or lerobot ckpt dir)
    init_from: str | None = None   # provenance only, never read: the weights_path started from (recorded on save)
    num_vlm_layers: int = 2        # backbone text layers used (the first ones; smolvla_base: 16 of SmolVLM2's 32)
    tokenizer_max_length: int = 48  # instruction tokens kept (longer instructions are cut)
    # ---- the built-in tiny backbone (vlm_dir null; ignored otherwise): random, frozen by default ----
    tiny_hidden_size: int = 64     # text width of the tiny SmolVLM (Llama-style layers)
    tiny_heads: int = 4            # its attention heads
    tiny_kv_heads: int = 2         # its key/value heads (grouped-query attention; divides tiny_heads)
    tiny_vision_hidden_size: int = 32  # width of its SigLIP-style vision encoder
    tiny_vision_layers: int = 1    # vision encoder layers
    tiny_vision_heads: int = 2     # vision encoder attention heads
    tiny_vision_image_size: int = 32  # image side the vision encoder reads (images are resized with padding to it)
    tiny_patch_size: int = 8       # vision patch side; (side / patch) must be even (pixel shuffle by 2)
    # ---- the action expert (lerobot's names) ----
    expert_width_multiplier: float = 0.75  # expert width as a fraction of the backbone's text width
    num_expert_layers: int = 0     # expert layers (0: one per backbone layer; else a divisor of num_vlm_layers)
    self_attn_every_n_layers: int = 2  # every n-th expert layer self-attends, the others cross-attend (0: never)
    attention_mode: str = "cross_attn"  # cross_attn: the expert attends to the backbone's keys/values | self_attn
    # ---- chunking ----
    n_obs_steps: int = 1           # To: SmolVLA conditions on the current observation only (must be 1)
    chunk_size: int = 8            # K: actions predicted per chunk (smolvla_base: 50)
    n_action_steps: int = 8        # actions executed from each chunk before planning again (<= chunk_size)
    # ---- flow matching ----
    num_steps: int = 10            # Euler integration steps from noise (t=1) to actions (t=0) at inference
    # ---- padding to the backbone's input widths (smolvla_base: 32 and 32) ----
    max_state_dim: int | None = None   # state is zero-padded to this width (null: state_dim, no padding)
    max_action_dim: int | None = None  # actions are zero-padded to this width (null: action_dim, no padding)
    # ---- what trains (lerobot's switches) ----
    train_expert_only: bool = True     # freeze the whole backbone; train the expert and projections
    freeze_vision_encoder: bool = True  # freeze the vision encoder (when the backbone trains)
    train_state_proj: bool = True      # train the state projection into the backbone

    def __post_init__(self):
        problems = []
        for name in ("state_dim", "action_dim", "image_size", "num_vlm_layers", "tokenizer_max_length", "chunk_size",
                     "num_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (>= 1)")
        if self.n_obs_steps != 1:
            problems.append(f"n_obs_steps={self.n_obs_steps} (SmolVLA reads the current observation only: 1)")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            problems.append(f"n_action_steps={self.n_action_steps} (1 .. chunk_size={self.chunk_size})")
        if self.max_state_dim is not None and self.max_state_dim < self.state_dim:
            problems.append(f"max_state_dim={self.max_state_dim} (null or >= state_dim={self.state_dim})")
        if self.max_action_dim is not None and self.max_action_dim < self.action_dim:
            problems.append(f"max_action_dim={self.max_action_dim} (null or >= action_dim={self.action_dim})")
        if self.attention_mode not in ATTENTION_MODES:
            problems.append(f"attention_mode={self.attention_mode!r} ({' | '.join(ATTENTION_MODES)})")
        if not 0 < self.expert_width_multiplier <= 4:
            problems.append(f"expert_width_multiplier={self.expert_width_multiplier} (0 < x <= 4)")
        if self.num_expert_layers < 0 or (self.num_expert_layers and self.num_vlm_layers % self.num_expert_layers):
            problems.append(f"num_expert_layers={self.num_expert_layers} (0, or a divisor of num_vlm_layers="
                            f"{self.num_vlm_layers})")
        if self.self_attn_every_n_layers < 0:
            problems.append(f"self_attn_every_n_layers={self.self_attn_every_n_layers} (>= 0)")
        if self.vlm_dir is None:
            problems += self._tiny_problems()
        elif not (Path(self.vlm_dir) / "config.json").is_file():
            problems.append(f"vlm_dir={self.vlm_dir!r} (a local folder with the backbone's config.json and tokenizer "
                            f"files; nothing is downloaded)")
        if self.weights_path is not None and not Path(self.weights_path).exists():
            problems.append(f"weights_path={self.weights_path!r} does not exist (a .safetensors file or a lerobot "
                            f"checkpoint dir holding model.safetensors)")
        if problems:
            raise RobalignError("bad smolvla policy setting: " + "; ".join(problems))

    def _tiny_problems(self) -> list[str]:
        problems = []
        hidden, heads, kv = self.tiny_hidden_size, self.tiny_heads, self.tiny_kv_heads
        if min(hidden, heads, kv, self.tiny_vision_hidden_size, self.tiny_vision_layers, self.tiny_vision_heads,
               self.tiny_vision_image_size, self.tiny_patch_size) < 1:
            problems.append("tiny_* sizes (each >= 1)")
            return problems
        if hidden % heads or (hidden // heads) % 2 or heads % kv:
            problems.append(f"tiny_hidden_size={hidden}, tiny_heads={heads}, tiny_kv_heads={kv} (an even head width "
                            f"hidden/heads, and kv_heads dividing heads)")
        if self.tiny_vision_hidden_size % self.tiny_vision_heads:
            problems.append(f"tiny_vision_hidden_size={self.tiny_vision_hidden_size} (a multiple of "
                            f"tiny_vision_heads={self.tiny_vision_heads})")
        side = self.tiny_vision_image_size
        if side % self.tiny_patch_size or (side // self.tiny_patch_size) % 2:
            problems.append(f"tiny_vision_image_size={side}, tiny_patch_size={self.tiny_patch_size} (an even "
                            f"number of patches per side)")
        if int(hidden * self.expert_width_multiplier) % 2:
            problems.append(f"expert width int(tiny_hidden_size * expert_width_multiplier)="
                            f"{int(hidden * self.expert_width_multiplier)} (even: it carries a sine-cosine time code)")
        return problems

    @property
    def state_width(self) -> int:
        """Width the state is padded to inside the model."""
        return self.max_state_dim or self.state_dim

    @property
    def action_width(self) -> int:
        """Width actions (and their noise) are padded to inside the model."""
        return self.max_action_dim or self.action_dim
