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
                    progress: bool = True, max_steps: int | None = None) -> list[str]:
    """Record `n` episodes of `policy` in `env_name`, register them, return their ids.

    `policy`: "expert" (modes take turns), "expert:MODE", or a policy checkpoint directory
    (`robalign pretrain`'s policy/; its sampling noise is seeded by the episode's seed).
    `noise`: std of Gaussian noise added to every expert action; `drift`: std of smooth
    AR(1) noise on the translation, which bends paths (see `robalign.rollout.expert_episode`);
    both for more varied expert behaviour.
    """
    import robalign.envs as envs
    from robalign.rollout import expert_episode, record_episode

    if not isinstance(n, int) or n <= 0:
        raise RobalignError(f"n must be an int > 0; got {n!r}")
    for name, value in (("noise", noise), ("drift", drift)):
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise RobalignError(f"{name} must be a number in [0, 1] (action std); got {value!r}")
    learnt = None
    if isinstance(policy, str) and not (policy == "expert" or policy.startswith("expert:")):
        from pathlib import Path

        from robalign.policies import load_policy

        if not Path(policy).is_dir():
            raise RobalignError(f"policy must be `expert`, `expert:MODE` or a policy checkpoint directory; "
                                f"got {policy!r}")
        if noise or drift:
            raise RobalignError("noise and drift perturb the scripted expert; a policy checkpoint samples its own "
                                "variety (leave noise=0 and drift=0)")
        learnt = load_policy(policy)
    elif not isinstance(policy, str):
        raise RobalignError(f"policy must be `expert`, `expert:MODE` or a policy checkpoint directory; got {policy!r}")
    reads_image = learnt is not None and "image" in learnt.input_shapes()
    env = envs.make(env_name, distractors=distractors, camera=reads_image,
                    image_size=int(learnt.input_shapes()["image"][0]) if reads_image else image_size,
                    render_mode="rgb_array" if video else None, max_steps=max_steps)
    ids: list[str] = []
    try:
        modes = list(env.modes)
        _, _, only = policy.partition(":") if learnt is None else ("", "", "")
        if only:
            if only not in modes:
                raise UnknownNameError(f"mode of {env.name}", only, modes)
            modes = [only]
        for i in tqdm(range(n), desc=f"rollouts {env_name}", unit="episode", disable=not progress):
            frames: list | None = [] if video else None
            if learnt is not None:
                traj = record_episode(env, learnt.actor(seed + i).act, seed + i, video=frames,
                                      provenance={"actor": f"policy:{learnt.name}", "policy": str(policy)})
            else:
                traj = expert_episode(env, modes[i % len(modes)], seed + i, video=frames, noise=noise, drift=drift)
            if frames:
                # render() runs before each action and once after the last: drop the final frame
                traj = Trajectory(**{**traj.__dict__, "frames": np.stack(frames[: len(traj)])})
            ids.append(store.add_trajectory(traj))
    finally:
        env.close()
    return ids
