"""Settings of the `diffusion` policy (Diffusion Policy, Chi et al. 2023, on lerobot's U-Net).

Every field is commented; an unknown field is an error (`config_from_dict`). The defaults
are the small CPU config (state route, see the README); `configs/policy/diffusion-paper.yaml`
overrides them with the published sizes for GPU workstations.
"""

from __future__ import annotations

import dataclasses

from robalign.errors import RobalignError


@dataclasses.dataclass
class DiffusionPolicyConfig:
    # ---- data shapes (filled in from the dataset by `robalign pretrain`) ----
    state_dim: int = 16            # S: proprioception values per step
    env_state_dim: int = 0         # E: task-object state values per step (0: not read)
    action_dim: int = 7            # A: action values per step
    image_size: int = 96           # H = W of the agentview image (read only when use_image)
    # ---- what the policy conditions on ----
    use_state: bool = True         # read `state` (lerobot's model always needs it)
    use_env_state: bool = True     # read `environment_state`: the low-dim state route (fast on CPU)
    use_image: bool = False        # read `image` through lerobot's ResNet-18 + spatial-softmax encoder
    crop_size: int = 84            # random crop side in training, centre crop at inference (use_image)
    # ---- chunking ----
    n_obs_steps: int = 2           # To: observations the policy conditions on (current and previous)
    horizon: int = 16              # actions denoised per chunk (a multiple of 2 ** len(down_dims))
    n_action_steps: int = 8        # K: actions executed from each chunk before planning again
    # ---- the conditional 1D U-Net (lerobot's DiffusionConditionalUnet1d) ----
    down_dims: tuple = (32, 64, 128)  # channels per U-Net level (paper: 512, 1024, 2048)
    kernel_size: int = 5           # temporal convolution width
    n_groups: int = 8              # group-norm groups
    diffusion_step_embed_dim: int = 128  # sinusoidal timestep embedding size
    # ---- diffusion ----
    num_train_timesteps: int = 100  # DDPM noise levels in training
    num_inference_steps: int = 10   # DDIM steps per chunk at inference
    beta_schedule: str = "squaredcos_cap_v2"  # diffusers beta schedule
    prediction_type: str = "epsilon"  # the U-Net predicts the noise ("epsilon") or the clean chunk ("sample")
    clip_sample: bool = True        # clip the predicted clean chunk to [-1, 1] (actions are min-max scaled)
    # ---- inference ----
    trace_inference: bool = True    # sample through a TorchScript trace of the U-Net on CPU (~3x at batch 1)

    def __post_init__(self):
        self.down_dims = tuple(int(d) for d in self.down_dims)
        problems = []
        if self.n_obs_steps < 1:
            problems.append(f"n_obs_steps={self.n_obs_steps} (>= 1)")
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            problems.append(f"n_action_steps={self.n_action_steps} (1 .. horizon - n_obs_steps + 1)")
        if self.horizon % (2 ** len(self.down_dims)) != 0:
            problems.append(f"horizon={self.horizon} (a multiple of 2 ** len(down_dims) = {2 ** len(self.down_dims)})")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            problems.append(f"num_inference_steps={self.num_inference_steps} (1 .. num_train_timesteps)")
        if self.prediction_type not in ("epsilon", "sample"):
            problems.append(f"prediction_type={self.prediction_type!r} (epsilon | sample)")
        if not (self.use_env_state or self.use_image):
            problems.append("use_env_state=false and use_image=false (lerobot's model needs one of them)")
        if self.use_image and not 16 <= self.crop_size <= self.image_size:
            problems.append(f"crop_size={self.crop_size} (16 .. image_size={self.image_size})")
        if not self.use_state:
            problems.append("use_state=false (lerobot's diffusion model always reads the state)")
        if problems:
            raise RobalignError("bad diffusion policy setting: " + "; ".join(problems))

