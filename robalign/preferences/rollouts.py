"""Roll a policy out and register every episode in a preference store.

Each episode goes through `robalign.rollout.expert_episode` or `record_episode`, the recorder
demos and evaluation use, so what people compare is exactly what metrics and rewards see;
`num_envs` worker processes run them (robalign.episode_pool).
"""

from __future__ import annotations

from tqdm import tqdm

from robalign.errors import RobalignError, UnknownNameError
from robalign.preferences.store import PreferenceStore


def record_rollouts(store: PreferenceStore, env_name: str, n: int, policy: str = "expert", noise: float = 0.0,
                    seed: int = 0, drift: float = 0.0, video: bool = True, distractors: bool = False, image_size: int = 96,
                    progress: bool = True, max_steps: int | None = None, num_envs: int = 2) -> list[str]:
    """Record `n` episodes of `policy` in `env_name`, register them, return their ids.

    `policy`: "expert" (modes take turns), "expert:MODE", or a policy checkpoint directory
    (`robalign pretrain`'s policy/; its sampling noise is seeded by the episode's seed).
    `noise`: std of Gaussian noise added to every expert action; `drift`: std of smooth
    AR(1) noise on the translation, which bends paths (see `robalign.rollout.expert_episode`);
    both for more varied expert behaviour. `num_envs` processes run the episodes
    (robalign.episode_pool) while this one stores them; the episodes are the same for any number.
    """
    import robalign.envs as envs
    from robalign.episode_pool import EpisodePool

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
    env_cls = envs.env_class(env_name)
    modes = list(env_cls.modes)
    _, _, only = policy.partition(":") if learnt is None else ("", "", "")
    if only:
        if only not in modes:
            raise UnknownNameError(f"mode of {env_name}", only, modes)
        modes = [only]
    options = dict(distractors=distractors, camera=reads_image,
                   image_size=int(learnt.input_shapes()["image"][0]) if reads_image else image_size,
                   render_mode="rgb_array" if video else None, max_steps=max_steps)
    ids: list[str] = []
    with EpisodePool(env_name, options, workers=num_envs, policy_dir=policy if learnt else None,
                     episodes=n) as pool:
        if learnt is not None:
            jobs = [pool.policy_job(seed + i, video=video) for i in range(n)]
        else:
            jobs = [pool.expert_job(modes[i % len(modes)], seed + i, noise=noise, drift=drift, video=video)
                    for i in range(n)]
        for traj in tqdm(pool.ordered(jobs), total=n, desc=f"rollouts {env_name}", unit="episode",
                         disable=not progress):
            if learnt is not None:
                traj.provenance["policy"] = str(policy)
            ids.append(store.add_trajectory(traj))
    return ids
