"""Task registry: `register_env(name)` on a FrankaTaskEnv subclass, `make(name, **options)`."""

from __future__ import annotations

from robalign.registry import Registry

ENVS: Registry = Registry("env")


def register_env(name: str):
    return ENVS.register(name)
