"""Franka Panda tasks in robosuite behind gymnasium, with scripted experts and objectives.

    >>> import robalign.envs as envs
    >>> envs.available()
    ['cube-group', 'mug-grasp', 'pick-place-lang', 'reach-around']
    >>> env = envs.make("reach-around", distractors=True)
    >>> obs, info = env.reset(seed=0)
"""

from __future__ import annotations

import os

# Offscreen software rendering: EGL (Mesa llvmpipe on CPU). It must be chosen before
# anything imports mujoco; glfw needs a display and fails here.
os.environ.setdefault("MUJOCO_GL", "egl")

from .base import ACTION_SIZE, STATE_SIZE, FrankaTaskEnv
from .experts import ScriptedExpert, Waypoint
from .objectives import OBJECTIVES, Objective, get_objective, objective, objectives_for
from .registry import ENVS
from . import tasks  # noqa: F401  (registers every task)

__all__ = ["ACTION_SIZE", "OBJECTIVES", "Objective", "STATE_SIZE", "FrankaTaskEnv", "ScriptedExpert", "Waypoint", "get_objective", "objective", "objectives_for", "available", "make", "env_class", "check_layout"]


def available() -> list[str]:
    """Names of every registered task."""
    return ENVS.names()


def env_class(name: str) -> type[FrankaTaskEnv]:
    """The task class for `name`; an unknown name raises UnknownNameError listing the valid ones."""
    return ENVS.get(name)


def make(name: str, **options) -> FrankaTaskEnv:
    """A new gymnasium env for task `name` (options: see FrankaTaskEnv)."""
    return env_class(name)(**options)


def check_layout(name: str, layout: str) -> None:
    """Refuse an unknown task, or a layout task `name` does not have (before anything slow is
    loaded or run)."""
    env_class(name).check_layout(layout)
