"""Run one episode of an env with any actor and record it as a Trajectory.

Every producer of trajectories (scripted experts for demos, policies for rollouts and
evaluation) goes through `record_episode`, so they all record the same fields the same way.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from robalign.types import Trajectory

# DART's push per action dimension, as a share of `perturb`: rotation at half, because a
# full push on the wrist turns the gripper off the cube's faces (pick-place-lang's expert
# then succeeded 5 of 10 times at 0.3; translation 0.2 with rotation at half: 10 of 10)
PUSH_SHARE = np.array([1, 1, 1, 0.5, 0.5, 0.5])


class EpisodeRecorder:
    """Collects one episode step by step into a Trajectory.

    `add(obs, info, action)` records the observation and privileged info seen before
    `action`; `finish(success, ...)` builds the Trajectory. Both the serial `record_episode`
    and the vector-env evaluator feed their episodes through it.
    """

    def __init__(self):
        self.frames, self.states, self.env_states, self.actions, self.privileged = [], [], [], [], []

    def add(self, obs: dict, info: dict, action: np.ndarray) -> None:
        if "image" in obs:
            self.frames.append(obs["image"])
        self.states.append(obs["state"])
        self.env_states.append(obs["environment_state"])
        self.privileged.append(info["privileged"])
        self.actions.append(np.asarray(action, dtype=np.float32))

    def copy(self) -> "EpisodeRecorder":
        """A recorder holding the same steps so far, which adding to leaves this one as it is."""
        twin = EpisodeRecorder()
        twin.frames, twin.states, twin.env_states = list(self.frames), list(self.states), list(self.env_states)
        twin.actions, twin.privileged = list(self.actions), list(self.privileged)
        return twin

    def finish(self, success: bool, instruction: str, mode: str | None, provenance: dict) -> Trajectory:
        return Trajectory(
            frames=np.stack(self.frames) if self.frames else None,
            state=np.stack(self.states),
            action=np.stack(self.actions),
            env_state=np.stack(self.env_states),
            instruction=instruction,
            success=bool(success),
            info={k: np.stack([np.asarray(p[k], dtype=np.float32) for p in self.privileged]) for k in self.privileged[0]},
            mode=mode,
            provenance=provenance,
        )


def record_episode(
    env,
    act: Callable[[dict], np.ndarray],
    seed: int,
    mode: str | None = None,
    provenance: dict | None = None,
    on_reset: Callable[[], None] | None = None,
    video: list | None = None,
    execute: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Trajectory:
    """Reset `env` with `seed`, step `act(obs)` until the episode ends, return the record.

    With `execute`, the env steps `execute(action)` while the record keeps `action`: how a
    perturbed expert (DART) records its corrective label for a state it was pushed into.

    The recorded step t holds the observation before action t; the final observation
    (after the last action) is not a step of its own. `on_reset` runs right after reset
    (a scripted expert plans from the initial state there). With `video` given (a list) and
    an env made with render_mode="rgb_array", every rendered frame is appended to it.
    """
    obs, info = env.reset(seed=seed)
    if on_reset is not None:
        on_reset()
    if video is not None:
        video.append(env.render())
    recorder = EpisodeRecorder()
    while True:
        action = np.asarray(act(obs), dtype=np.float32)
        recorder.add(obs, info, action)
        obs, _, terminated, truncated, info = env.step(action if execute is None else execute(action))
        if video is not None:
            video.append(env.render())
        if terminated or truncated:
            break
    return recorder.finish(info["is_success"], env.instruction, mode, episode_provenance(env, seed, provenance))


def episode_provenance(env, seed: int, extra: dict | None = None) -> dict:
    """What every recorded episode says of where it came from: env and its revision, seed, scene
    and robot look."""
    # the layout is named only when not the default, as records made before layouts existed
    layout = {"layout": env.layout} if env.layout != "default" else {}
    return {"env": env.name, "env_revision": env.revision, "seed": int(seed), "distractors": env.distractors,
            **layout, "robot_meshes": env.robot_meshes, **(extra or {})}


def expert_episode(env, mode: str, seed: int, video: list | None = None, noise: float = 0.0,
                   drift: float = 0.0, perturb: float = 0.0) -> Trajectory:
    """One episode by the task's scripted expert in `mode`.

    For more varied behaviour to compare: `noise` > 0 adds white Gaussian noise of that std
    to every action; `drift` > 0 adds smooth AR(1) noise (coefficient 0.9, stationary std
    `drift`) to the translation, which bends the path (white noise mostly averages out in
    the OSC controller). Both are clipped to the action box and drawn from their own seeded
    streams, and recorded as the actions taken.

    `perturb` > 0 is DART (Laskey et al. 2017) for imitation data: the same smooth noise on
    the executed translation and rotation pushes the arm off the expert's path, while the
    record keeps the expert's own action, which steers back. Without it a cloned policy
    never sees a state off the path, so it can learn to replay the path's actions rather
    than to correct toward the object (measured on pick-place-lang: README).
    """
    from robalign.envs import ScriptedExpert

    holder: dict = {"drift": np.zeros(3), "push": np.zeros(6)}
    noise_rng, drift_rng = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 3])
    push_rng = np.random.default_rng([seed, 4])

    def plan() -> None:
        holder["expert"] = ScriptedExpert(env, mode, np.random.default_rng([seed, 1]))

    def act(obs) -> np.ndarray:
        action = holder["expert"].act()
        if noise > 0:
            action = np.clip(action + noise_rng.normal(0, noise, action.shape), -1, 1)
        if drift > 0:
            holder["drift"] = _ar1_step(holder["drift"], drift, drift_rng)
            action[:3] = np.clip(action[:3] + holder["drift"], -1, 1)
        return action

    def pushed(action: np.ndarray) -> np.ndarray:
        holder["push"] = _ar1_step(holder["push"], perturb, push_rng)
        out = np.array(action, copy=True)
        out[:6] = np.clip(out[:6] + holder["push"] * PUSH_SHARE, -1, 1)
        return out

    provenance = {"actor": f"expert:{mode}", **({"noise": float(noise)} if noise > 0 else {}),
                  **({"drift": float(drift)} if drift > 0 else {}), **({"perturb": float(perturb)} if perturb > 0 else {})}
    return record_episode(env, act, seed, mode=mode, provenance=provenance, on_reset=plan, video=video,
                          execute=pushed if perturb > 0 else None)


def _ar1_step(previous: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """One step of AR(1) noise with coefficient 0.9 and stationary std `std` (drift and DART's push)."""
    return 0.9 * previous + np.sqrt(1 - 0.9**2) * std * rng.normal(size=previous.shape)
