"""Policies: one folder per policy with its config and model, registered by name.

    >>> from robalign.policies import make_policy, load_policy
    >>> policy = make_policy("diffusion", stats, state_dim=16, env_state_dim=10, action_dim=7)
    >>> policy.save_pretrained("runs/p")          # config.json, model.safetensors, stats.safetensors
    >>> policy = load_policy("runs/p")            # verified against the recorded sha256

Every policy subclasses `robalign.policies.pretrained.Policy`, which enforces the
contract (observation checks, chunked acting, checkpoints without pickle).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from robalign.registry import Registry

from .pretrained import CheckpointError, ObservationError, Policy, config_from_dict, load_weights, read_checkpoint

POLICIES: Registry[type[Policy]] = Registry("policy")


def register_policy(name: str):
    def add(cls):
        cls.name = name
        return POLICIES.register(name)(cls)

    return add


def available() -> list[str]:
    return POLICIES.names()


def policy_class(name: str) -> type[Policy]:
    """The class registered as `name`; an unknown name raises UnknownNameError listing the valid ones."""
    return POLICIES.get(name)


def make_policy(name: str, stats: dict, overrides: dict | None = None, **shapes) -> Policy:
    """A new `name` policy with its default config, `overrides` applied and data `shapes`
    (state_dim, env_state_dim, action_dim, image_size...) filled in."""
    cls = policy_class(name)
    # A data size the config has no field for is one this policy does not read (only a vla
    # tokenises environment_state object by object, so only it has env_state_layout).
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    shapes = {k: v for k, v in shapes.items() if k in fields}
    config = config_from_dict(cls.config_class, {**(overrides or {}), **shapes}, f"{name} policy config")
    return cls(config, stats)


def load_policy(directory: str | Path, device: str | None = None, overrides: dict | None = None) -> Policy:
    """A policy saved by `save_pretrained`; refuses missing, partial, tampered or mismatched files.

    `overrides` change config fields at load time, meant for inference settings (a `vla`'s
    `temperature`, `n_action_steps`); an unknown field is an error, and a field that changes
    the network's shape fails the strict weight load."""
    name, raw, weights, stats = read_checkpoint(directory)
    cls = policy_class(name)
    config = config_from_dict(cls.config_class, {**cls.saved_config(raw), **(overrides or {})},
                              f"{directory}/config.json")
    policy = cls(config, stats)
    load_weights(policy, weights, str(directory))
    policy.eval()
    return policy.to(device) if device else policy


from . import diffusion, smolvla, vla  # noqa: E402,F401  (registers the policies)

__all__ = ["POLICIES", "CheckpointError", "ObservationError", "Policy", "available", "load_policy", "make_policy",
           "policy_class", "register_policy"]
