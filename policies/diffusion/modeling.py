"""Diffusion Policy on lerobot 0.4.4's conditional 1D U-Net, plus what alignment needs.

lerobot's `DiffusionModel` supplies the observation encoder (state, task-object state,
optionally a ResNet-18 image encoder) and the U-Net; diffusers' DDIM scheduler supplies the
noise levels. Added here, because lerobot lacks them:
  - `denoise_loss(obs, actions, noise, timesteps)`: per-sample denoising losses with the
    caller's noise and timesteps, so a policy and its frozen reference (Diffusion-DPO), or a
    winner and a loser, are scored on the same corruption;
  - `sample_chain`: stochastic DDIM sampling that returns every denoising step and its
    Gaussian log-probability (std floored at `min_std`), and `chain_log_prob` to re-score a
    stored chain under current weights (DPPO's policy ratio).

Glossary of tensor dimensions:
    B   batch                         To  observation steps (n_obs_steps)
    Hz  horizon: actions denoised     K   actions executed per chunk (n_action_steps)
    A   action size                   N   denoising steps at inference (DDIM)
Actions inside the model are min-max scaled to [-1, 1]; everything returned to callers is in
env units.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F

from robalign.errors import RobalignError

from .. import register_policy
from ..pretrained import ChunkSample, Policy
from .configuration import DiffusionPolicyConfig

LOG_2PI = float(torch.log(torch.tensor(2 * torch.pi)))


@dataclasses.dataclass
class DenoisingChain:
    """One stochastic sampling pass: chain (B, N+1, Hz, A) from pure noise to the clean
    chunk (model units), log_probs (B, N) of each step x_k -> x_{k+1}, actions (B, K, A)."""

    chain: torch.Tensor
    log_probs: torch.Tensor
    actions: torch.Tensor


@register_policy("diffusion")
class DiffusionPolicy(Policy):
    config_class = DiffusionPolicyConfig

    def __init__(self, config: DiffusionPolicyConfig, stats):
        super().__init__(config, stats)
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionModel

        self.model = DiffusionModel(_lerobot_config(config))
        scheduler = self.model.noise_scheduler
        scheduler.set_timesteps(config.num_inference_steps)
        # alpha-bar at each inference timestep and at the one after it (1.0 past the last)
        t = scheduler.timesteps.long()
        prev = t - config.num_train_timesteps // config.num_inference_steps
        abar = scheduler.alphas_cumprod.float()
        self.register_buffer("ddim_t", t, persistent=False)
        self.register_buffer("ddim_abar", abar[t], persistent=False)
        self.register_buffer("ddim_abar_prev", torch.where(prev >= 0, abar[prev.clamp(min=0)],
                                                           torch.tensor(float(scheduler.final_alpha_cumprod))),
                             persistent=False)
        self.register_buffer("train_abar", abar, persistent=False)
        self._trace = _TraceCache()

    @staticmethod
    def input_keys(config):
        return ("state",) + (("environment_state",) if config.use_env_state else ()) + \
            (("image",) if config.use_image else ())

    # ---- conditioning ------------------------------------------------------------------
    def conditioning(self, obs: dict) -> torch.Tensor:
        """(B, To * per-step features) global conditioning of the U-Net."""
        self.check_observation(obs)
        dev = self.device
        batch = {"observation.state": self.normalizer.normalize("state", obs["state"].to(dev).float())}
        if self.config.use_env_state:
            batch["observation.environment_state"] = self.normalizer.normalize(
                "environment_state", obs["environment_state"].to(dev).float())
        if self.config.use_image:
            # (B, To, H, W, 3) uint8 -> (B, To, cameras=1, 3, H, W) in [0, 1]
            batch["observation.images"] = obs["image"].to(dev).permute(0, 1, 4, 2, 3)[:, :, None].float() / 255.0
        return self.model._prepare_global_conditioning(batch)

    # ---- training ----------------------------------------------------------------------
    def denoise_loss(self, obs: dict, actions: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     action_is_pad: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) mean squared denoising error per sample.

        actions (B, Hz, A) in env units; noise (B, Hz, A) standard normal; timesteps (B,)
        ints in [0, num_train_timesteps); action_is_pad (B, Hz) marks steps past the
        episode's end, left out of the mean.
        """
        c = self.config
        if actions.shape[1:] != (c.horizon, c.action_dim) or noise.shape != actions.shape:
            raise RobalignError(f"denoise_loss: actions and noise must be (B, {c.horizon}, {c.action_dim}); "
                                f"got {tuple(actions.shape)} and {tuple(noise.shape)}")
        cond = self.conditioning(obs)
        clean = self.normalizer.normalize("action", actions.to(cond.device).float(), clip=False)
        noisy = self.model.noise_scheduler.add_noise(clean, noise, timesteps)
        pred = self.model.unet(noisy, timesteps, global_cond=cond)
        target = noise if c.prediction_type == "epsilon" else clean
        err = F.mse_loss(pred, target, reduction="none").mean(-1)  # (B, Hz)
        if action_is_pad is None:
            return err.mean(-1)
        keep = (~action_is_pad).float()
        return (err * keep).sum(-1) / keep.sum(-1).clamp(min=1)

    def compute_loss(self, batch: dict, timestep_floor: float = 0.0) -> torch.Tensor:
        """Mean denoising loss at timesteps drawn uniformly from [timestep_floor x T, T).

        A floor > 0 trains the coarser denoising steps (where the arm goes) on this batch and
        not the last, fine ones: for the policy's own episodes, whose fine structure the
        pretrained denoiser reads as noise (expert-iteration's method.kept_timestep_floor)."""
        actions = batch["action"]
        noise = torch.randn_like(actions, dtype=torch.float32)
        T = self.config.num_train_timesteps
        t = torch.randint(min(int(round(timestep_floor * T)), T - 1), T, (actions.shape[0],), device=actions.device)
        return self.denoise_loss(batch, actions, noise, t, batch.get("action_is_pad")).mean()

    # ---- sampling ----------------------------------------------------------------------
    def _ddim_step(self, x: torch.Tensor, k: int, cond: torch.Tensor, eta: float, min_std: float):
        """Mean and std of x_{k+1} given x_k at inference step k (DDIM, Song et al. 2021)."""
        c = self.config
        t = self.ddim_t[k]
        abar, abar_prev = self.ddim_abar[k], self.ddim_abar_prev[k]
        out = self._denoise(x, t.expand(x.shape[0]), cond)
        if c.prediction_type == "epsilon":
            eps, x0 = out, (x - (1 - abar).sqrt() * out) / abar.sqrt()
        else:
            x0, eps = out, (x - abar.sqrt() * out) / (1 - abar).sqrt()
        if c.clip_sample:
            x0 = x0.clamp(-1, 1)  # as diffusers: eps is kept, only the clean estimate is clipped
        var = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
        sigma = eta * var.clamp(min=0).sqrt()
        mean = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
        return mean, torch.clamp(sigma, min=min_std)

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The U-Net's output (B, Hz, A); when sampling without gradients on CPU, through its
        TorchScript trace.

        At batch 1 the small U-Net is bound by eager PyTorch's per-op overhead, not arithmetic:
        the trace runs a DDIM-10 chunk of the default config about 3x faster (README, Figures ->
        Policies). A trace shares the module's parameters, so optimiser steps, EMA copies and
        `load_state_dict` reach it; it is rebuilt only if a parameter is replaced or moved.
        """
        unet = self.model.unet
        if torch.is_grad_enabled() or x.device.type != "cpu" or not self.config.trace_inference:
            return unet(x, t, global_cond=cond)
        key = tuple(p.data_ptr() for p in unet.parameters())
        if self._trace.key != key:
            with warnings.catch_warnings():
                # torch.jit is deprecated in favour of torch.compile, which compiled this U-Net
                # for ~40 s and ran it at half the trace's speed (torch 2.14, CPU); the tracer's
                # notes concern group_norm's shape checks, constant for a fixed config.
                warnings.simplefilter("ignore")
                self._trace.module = torch.jit.trace(unet, (x[:1], t[:1], cond[:1]), check_trace=False)
            self._trace.key = key
        return self._trace.module(x, t, cond)

    def _chunk(self, clean: torch.Tensor) -> torch.Tensor:
        """(B, K, A) env-unit actions from the (B, Hz, A) clean chunk: the K from now on."""
        start = self.config.n_obs_steps - 1
        return self.normalizer.unnormalize("action", clean[:, start:start + self.config.n_action_steps])

    def predict_action_chunk(self, obs: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, K, A) actions by deterministic DDIM (eta = 0) from seeded noise."""
        return self.sample_chunk(obs, generator).executed

    def sample_chunk(self, obs: dict, generator: torch.Generator | None = None, stochastic: bool = False,
                     eta: float = 1.0, min_std: float = 0.1) -> ChunkSample:
        """Deterministic DDIM (what `predict_action_chunk` acts), or with `stochastic` the DPPO
        sampler (`sample_chain`); `sample` is the whole (B, Hz, A) window `denoise_loss` takes."""
        if stochastic:
            out = self.sample_chain(obs, generator, eta, min_std)
            full = self.normalizer.unnormalize("action", out.chain[:, -1].clamp(-1, 1))
            return ChunkSample(out.actions, full, out.chain, out.log_probs)
        cond = self.conditioning(obs)
        c = self.config
        x = torch.randn((cond.shape[0], c.horizon, c.action_dim), generator=generator, device=cond.device)
        for k in range(c.num_inference_steps):
            x, _ = self._ddim_step(x, k, cond, eta=0.0, min_std=0.0)
        return ChunkSample(self._chunk(x), self.normalizer.unnormalize("action", x))

    def sample_chain(self, obs: dict, generator: torch.Generator | None = None, eta: float = 1.0,
                     min_std: float = 0.1) -> DenoisingChain:
        """Stochastic DDIM; each step x_{k+1} ~ N(mean, max(sigma, min_std)^2) with its log-prob."""
        cond = self.conditioning(obs)
        c = self.config
        x = torch.randn((cond.shape[0], c.horizon, c.action_dim), generator=generator, device=cond.device)
        chain, log_probs = [x], []
        for k in range(c.num_inference_steps):
            mean, std = self._ddim_step(x, k, cond, eta, min_std)
            z = torch.randn(x.shape, generator=generator, device=x.device)
            x = mean + std * z
            chain.append(x)
            log_probs.append(_gaussian_log_prob(x, mean, std))
        return DenoisingChain(torch.stack(chain, 1), torch.stack(log_probs, 1), self._chunk(x.clamp(-1, 1)))

    def chain_moments(self, obs: dict, chain: torch.Tensor, eta: float = 1.0, min_std: float = 0.1,
                      steps: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, n, Hz, A) and std (n,) of each step x_k -> x_{k+1} of stored chains under
        the current weights (`steps` picks n of the N): two policies' Gaussian steps give an
        exact KL."""
        cond = self.conditioning(obs)
        means, stds = [], []
        for k in range(self.config.num_inference_steps)[steps or slice(None)]:
            mean, std = self._ddim_step(chain[:, k], k, cond, eta, min_std)
            means.append(mean)
            stds.append(std)
        return torch.stack(means, 1), torch.stack(stds)

    def chain_log_prob(self, obs: dict, chain: torch.Tensor, eta: float = 1.0, min_std: float = 0.1,
                       steps: slice | None = None) -> torch.Tensor:
        """(B, N) log-prob of each stored step under the current weights (`steps` picks a subset)."""
        means, stds = self.chain_moments(obs, chain, eta, min_std, steps)
        ks = range(self.config.num_inference_steps)[steps or slice(None)]
        return torch.stack([_gaussian_log_prob(chain[:, k + 1], means[:, j], stds[j]) for j, k in enumerate(ks)], 1)


class _TraceCache:
    """Holds the U-Net's trace outside the module tree (no state_dict keys); a copy of the
    policy (the EMA, a frozen reference) starts empty and traces its own parameters."""

    def __init__(self):
        self.key, self.module = None, None

    def __deepcopy__(self, memo):
        return _TraceCache()


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Sum over (Hz, A) of log N(x; mean, std^2) with a scalar std."""
    n = x[0].numel()
    return -0.5 * ((x - mean) / std).pow(2).flatten(1).sum(1) - n * (std.log() + 0.5 * LOG_2PI)


def _lerobot_config(c: DiffusionPolicyConfig):
    """lerobot's DiffusionConfig for our settings; built offline (no pretrained backbone)."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    inputs = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(c.state_dim,))}
    if c.use_env_state:
        inputs["observation.environment_state"] = PolicyFeature(type=FeatureType.ENV, shape=(c.env_state_dim,))
    if c.use_image:
        inputs["observation.image"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, c.image_size, c.image_size))
    return DiffusionConfig(
        input_features=inputs,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(c.action_dim,))},
        n_obs_steps=c.n_obs_steps, horizon=c.horizon, n_action_steps=c.n_action_steps,
        crop_shape=(c.crop_size, c.crop_size) if c.use_image else None, pretrained_backbone_weights=None,
        down_dims=c.down_dims, kernel_size=c.kernel_size, n_groups=c.n_groups,
        diffusion_step_embed_dim=c.diffusion_step_embed_dim, noise_scheduler_type="DDIM",
        num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
        prediction_type=c.prediction_type, clip_sample=c.clip_sample, num_inference_steps=c.num_inference_steps,
        device="cpu",
    )
