"""Scripted experts: Cartesian waypoints followed with a clipped P-controller.

A task's `plan(mode, rng)` returns a list of Waypoints; `ScriptedExpert` turns the plan
into OSC_POSE actions step by step. A waypoint's target may be a callable evaluated when
the segment starts, so a plan can react to where objects are by then (a pushed cube, a
lifted mug). Randomised per-episode parameters inside `plan` make demonstrations vary
within a mode; the mode itself is the coarse, nameable choice.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from robalign.errors import UnknownNameError

# OSC_POSE scales an action of 1 to 5 cm / 0.5 rad of goal offset (robosuite's default).
POS_SCALE, ROT_SCALE = 0.05, 0.5

Target = np.ndarray | Sequence[float] | Callable[[], np.ndarray]


@dataclasses.dataclass
class Waypoint:
    """Move the gripper site to `pos` with yaw `yaw` (radians about world z, gripper down).

    gripper: -1 open, +1 closed, held while moving.
    tol: position tolerance, metres, to call the waypoint reached.
    speed: largest action magnitude for translation, in [0, 1].
    settle: extra steps to stay once reached (lets the gripper close or the object settle).
    until: instead of counting settle steps, stay once reached until this returns True
        (read from what the policy observes, so the demos never wait at a still observation).
    timeout: steps after which the expert moves on anyway.
    """

    pos: Target
    gripper: float = -1.0
    yaw: float = 0.0
    tol: float = 0.01
    speed: float = 1.0
    settle: int = 0
    until: Callable[[], bool] | None = None
    timeout: int = 80


class ScriptedExpert:
    """Follows a task's plan for one mode. `act(env)` -> (7,) action in [-1, 1]."""

    def __init__(self, env, mode: str, rng: np.random.Generator, gain: float = 1.5):
        if mode not in env.modes:
            raise UnknownNameError(f"mode of {env.name}", mode, list(env.modes))
        self.env, self.mode, self.gain = env, mode, gain
        self.plan: list[Waypoint] = env.plan(mode, rng)
        self._index, self._target, self._steps, self._settled = 0, None, 0, 0

    @property
    def done(self) -> bool:
        return self._index >= len(self.plan)

    def act(self) -> np.ndarray:
        env = self.env
        if not self.done and self._until_holds():  # act on the next waypoint at once
            self._next_waypoint()
        if self.done:  # plan finished: hold still with the last gripper command
            last = self.plan[-1].gripper if self.plan else -1.0
            return np.array([0, 0, 0, 0, 0, 0, last], dtype=np.float32)
        wp = self.plan[self._index]
        if self._target is None:
            self._target = np.asarray(wp.pos() if callable(wp.pos) else wp.pos, dtype=np.float64)
        error = self._target - env.eef_pos()
        move = np.clip(self.gain * error / POS_SCALE, -wp.speed, wp.speed)
        turn = np.clip(self.gain * _yaw_down_error(env.eef_mat(), wp.yaw) / ROT_SCALE, -1, 1)
        self._steps += 1
        if np.linalg.norm(error) < wp.tol:
            self._settled += 1
        if (wp.until is None and self._settled > wp.settle) or self._steps >= wp.timeout:
            self._next_waypoint()
        return np.concatenate([move, turn, [wp.gripper]]).astype(np.float32)

    def _until_holds(self) -> bool:
        """The current waypoint was reached and its `until` holds in the present state."""
        wp = self.plan[self._index]
        return wp.until is not None and self._settled > 0 and bool(wp.until())

    def _next_waypoint(self) -> None:
        self._index += 1
        self._target, self._steps, self._settled = None, 0, 0


def _yaw_down_error(current: np.ndarray, yaw: float) -> np.ndarray:
    """Axis-angle (world frame) that rotates `current` to gripper-down with heading `yaw`.

    yaw 0 is the Panda's home orientation in robosuite (fingers open along world y);
    positive yaw turns the hand counter-clockwise seen from above.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    desired = np.array([[-s, c, 0.0], [c, s, 0.0], [0.0, 0.0, -1.0]])
    delta = desired @ current.T
    angle = np.arccos(np.clip((np.trace(delta) - 1) / 2, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([delta[2, 1] - delta[1, 2], delta[0, 2] - delta[2, 0], delta[1, 0] - delta[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # a half turn: any perpendicular axis will do
        return np.array([np.pi, 0.0, 0.0])
    return axis / norm * angle
