"""Roll a policy out and register every episode in a preference store.

Each episode goes through `robalign.rollout.expert_episode` (and so `record_episode`), the recorder demos and
evaluation use, so what people compare is exactly what metrics and rewards see.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from robalign.errors import RobalignError, UnknownNameError
from robalign.preferences.store import PreferenceStore
from robalign.types import Trajectory


def record_rollouts(store: PreferenceStore, env_name: str, n: int, policy: str = "expert", noise: float = 0.0,
                    seed: int = 0, drift: float = 0.0, video: bool = True, distractors: bool = False, image_size: int = 96,
                    progress: bool = True) -> list[str]:
    """Record `n` episodes of `policy` in `env_name`, register them, return their ids.

    `policy`: "expert" (modes take turns) or "expert:MODE". `noise`: std of Gaussian noise
    added to every action; `drift`: std of smooth AR(1) noise on the translation, which
    bends paths (see `robalign.rollout.expert_episode`); both for more varied behaviour.
    """
    import robalign.envs as envs
    from robalign.rollout import expert_episode

    if not isinstance(n, int) or n <= 0:
        raise RobalignError(f"n must be an int > 0; got {n!r}")
    for name, value in (("noise", noise), ("drift", drift)):
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise RobalignError(f"{name} must be a number in [0, 1] (action std); got {value!r}")
    if not isinstance(policy, str) or not (policy == "expert" or policy.startswith("expert:")):
        # Checkpoint policies (issue #2) plug in here through robalign.policies.from_pretrained.
        raise RobalignError(f"policy must be `expert` or `expert:MODE`; got {policy!r}")
    env = envs.make(env_name, distractors=distractors, camera=False, image_size=image_size,
                    render_mode="rgb_array" if video else None)
    ids: list[str] = []
    try:
        modes = list(env.modes)
        _, _, only = policy.partition(":")
        if only:
            if only not in modes:
                raise UnknownNameError(f"mode of {env.name}", only, modes)
            modes = [only]
        for i in tqdm(range(n), desc=f"rollouts {env_name}", unit="episode", disable=not progress):
            frames: list | None = [] if video else None
            traj = expert_episode(env, modes[i % len(modes)], seed + i, video=frames, noise=noise, drift=drift)
            if frames:
                # render() runs before each action and once after the last: drop the final frame
                traj = Trajectory(**{**traj.__dict__, "frames": np.stack(frames[: len(traj)])})
            ids.append(store.add_trajectory(traj))
    finally:
        env.close()
    return ids
