"""The data every stage of the loop passes along.

Glossary of dimensions:
    T  time steps in one episode (frames, states and actions are aligned: step t shows
       frame t, is in state t and then takes action t)
    H, W  image height and width (96 x 96 by default)
    S  proprioception size, E environment-state size, A action size (7: OSC delta pose + gripper)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from robalign.errors import RobalignError


@dataclasses.dataclass
class Trajectory:
    """One episode of one task, as recorded for people, rewards and metrics.

    Attributes:
        frames: (T, H, W, 3) uint8 agentview images, or None when the env ran without a camera.
        state: (T, S) float32 proprioception.
        action: (T, A) float32 actions taken.
        instruction: the task's language instruction for this episode.
        success: whether the episode ended in success.
        info: privileged per-step values, each an array with leading dim T (object poses,
            clearances, contacts); simulated people and metrics read these, policies never do.
        env_state: (T, E) float32 task-object state (what a low-dim state policy sees).
        mode: the behaviour mode a scripted expert used, when known.
        provenance: where it came from: env, seed, policy or expert, options.
    """

    state: np.ndarray
    action: np.ndarray
    instruction: str
    success: bool
    info: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    frames: np.ndarray | None = None
    env_state: np.ndarray | None = None
    mode: str | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        T = len(self.state)
        if T == 0:
            raise RobalignError("a Trajectory needs at least one step; got an empty state array")
        if self.state.ndim != 2 or self.action.ndim != 2:
            raise RobalignError(
                f"state and action must be (T, S) and (T, A); got {self.state.shape} and {self.action.shape}"
            )
        if len(self.action) != T:
            raise RobalignError(f"state has {T} steps but action has {len(self.action)}")
        if self.frames is not None:
            if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
                raise RobalignError(
                    f"frames must be (T, H, W, 3) uint8; got {self.frames.shape} {self.frames.dtype}"
                )
            if len(self.frames) != T:
                raise RobalignError(f"state has {T} steps but frames has {len(self.frames)}")
        if self.env_state is not None and len(self.env_state) != T:
            raise RobalignError(f"state has {T} steps but env_state has {len(self.env_state)}")
        for key, value in self.info.items():
            if len(value) != T:
                raise RobalignError(f"info[{key!r}] has {len(value)} steps; the trajectory has {T}")

    def __len__(self) -> int:
        return len(self.state)

    @property
    def env_name(self) -> str | None:
        return self.provenance.get("env")
