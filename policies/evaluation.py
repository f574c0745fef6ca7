"""Evaluate a policy: seeded episodes in parallel, metrics with intervals, videos, a plot.

Episode i runs on env seed `seed + i` with the policy's sampling noise seeded by the same
number, and the policy always acts on one episode at a time (batch 1), so an episode's
result depends on its seed alone: the serial run, the vector-env run and the Ray run of the
same seeds record the same trajectories.

Launchers:
    serial  one env in this process
    vector  gymnasium's AsyncVectorEnv: `num_envs` env processes step in parallel while this
            process runs the policy for all of them (the default; both cores busy here)
    ray     a Ray cluster (a local one unless RAY_ADDRESS is set): seeds are split across
            `num_envs` tasks, each running serial episodes
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from pathlib import Path

import numpy as np

from robalign.errors import RobalignError, UnknownNameError
from robalign.types import Trajectory

LAUNCHERS = ("serial", "vector", "ray")


@dataclasses.dataclass
class EvalConfig:
    episodes: int = 50          # episodes to run (> 0)
    seed: int = 100000          # episode i uses env seed seed + i (demos use 0, 1, ...: these are held out)
    launcher: str = "vector"    # serial | vector | ray
    num_envs: int = 2           # parallel envs (vector) or tasks (ray)
    videos: int = 2             # how many of the first episodes to also render as mp4 (256 px)
    distractors: bool = False   # random colours, distractor objects and camera jitter
    max_steps: int | None = None  # episode length limit; null: the task's default
    instructions: str = "train"  # train | held-out: instruction wordings (held-out: none the demos use)
    layout: str = "default"     # the task's scene layout (pick-place-lang: default | dense)
    # policy config fields changed for this evaluation, e.g. {"temperature": 0} (vla: greedy tokens)
    policy_overrides: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.episodes, int) or self.episodes <= 0:
            raise RobalignError(f"episodes must be a positive int; got {self.episodes!r}")
        if self.launcher not in LAUNCHERS:
            raise UnknownNameError("launcher", self.launcher, list(LAUNCHERS))
        if not isinstance(self.num_envs, int) or self.num_envs < 1:
            raise RobalignError(f"num_envs must be an int >= 1; got {self.num_envs!r}")
        if not isinstance(self.videos, int) or self.videos < 0:
            raise RobalignError(f"videos must be an int >= 0; got {self.videos!r}")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.episodes)]


def env_options(policy, distractors: bool = False, max_steps: int | None = None, instructions: str = "train",
                layout: str = "default") -> dict:
    """Env settings a policy needs: a camera only when it reads images."""
    shapes = policy.input_shapes()
    opts = {"distractors": distractors, "camera": "image" in shapes, "max_steps": max_steps}
    if instructions != "train":
        opts["instructions"] = instructions
    if layout != "default":
        opts["layout"] = layout
    if "image" in shapes:
        opts["image_size"] = int(shapes["image"][0])
    return opts


# ---- launchers -----------------------------------------------------------------------------
def run_serial(policy, env_name: str, seeds: list[int], options: dict, progress=None,
               videos: dict[int, list] | None = None, make_actor=None) -> list[Trajectory]:
    """Episodes one after another in this process; `videos` {seed: []} collects 256 px frames.

    `make_actor(i, seed)` gives episode i's actor (default: `policy.actor(seed)`); seeds may
    repeat (several rollouts from one initial state)."""
    import robalign.envs as envs
    from robalign.rollout import record_episode

    make_actor = make_actor or (lambda i, seed: policy.actor(seed))
    out = []
    env = envs.make(env_name, render_mode="rgb_array" if videos else None, **options)
    try:
        for i, seed in enumerate(seeds):
            out.append(record_episode(env, make_actor(i, seed).act, seed,
                                      provenance={"actor": f"policy:{policy.name}"}, video=(videos or {}).get(seed)))
            if progress is not None:
                progress.update(1)
    finally:
        env.close()
    return out


def run_vector(policy, env_name: str, seeds: list[int], options: dict, num_envs: int, progress=None,
               make_actor=None) -> list[Trajectory]:
    """Episodes on a gymnasium AsyncVectorEnv; each slot takes the next episode when it
    finishes. `make_actor` as in `run_serial`."""
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode

    import robalign.envs as envs
    from robalign.envs.scene import robot_meshes
    from robalign.rollout import EpisodeRecorder, episode_provenance

    make_actor = make_actor or (lambda i, seed: policy.actor(seed))
    # what the worker envs' own provenance would say (their processes draw the same look)
    scene = types.SimpleNamespace(name=env_name, revision=envs.env_class(env_name).revision,
                                  distractors=bool(options.get("distractors")), robot_meshes=robot_meshes(),
                                  layout=options.get("layout", "default"))
    n = min(num_envs, len(seeds))
    # shared_memory=False: gymnasium 1.4.0 never writes Text observations into shared memory,
    # so every instruction would read back as "aaaa..." (200 times the first character).
    # Observations then travel through pipes; they are small (a 96 px frame at most).
    vec = AsyncVectorEnv([lambda: envs.make(env_name, **options) for _ in range(n)],
                         autoreset_mode=AutoresetMode.DISABLED, context="spawn", shared_memory=False)
    results: dict[int, Trajectory] = {}  # by episode index: seeds may repeat
    try:
        queue = list(range(len(seeds)))
        slot_episode = queue[:n]
        del queue[:n]
        slot_seed = [seeds[e] for e in slot_episode]
        obs, info = vec.reset(seed=slot_seed)
        actors = [make_actor(e, seeds[e]) for e in slot_episode]
        recorders = [EpisodeRecorder() for _ in range(n)]
        active = np.ones(n, dtype=bool)
        while active.any():
            actions = np.zeros((n, *vec.single_action_space.shape), dtype=np.float32)
            for i in np.flatnonzero(active):
                obs_i, info_i = _slot(obs, i), {"privileged": _slot(info["privileged"], i)}
                actions[i] = actors[i].act(obs_i)
                recorders[i].add(obs_i, info_i, actions[i])
            obs, _, terminated, truncated, info = vec.step(actions)
            done = active & (terminated | truncated)
            for i in np.flatnonzero(done):
                results[slot_episode[i]] = recorders[i].finish(
                    bool(info["is_success"][i]), str(obs["instruction"][i]), None,
                    episode_provenance(scene, slot_seed[i], {"actor": f"policy:{policy.name}"}))
                if progress is not None:
                    progress.update(1)
                if queue:
                    slot_episode[i] = queue.pop(0)
                    slot_seed[i] = seeds[slot_episode[i]]
                    actors[i], recorders[i] = make_actor(slot_episode[i], slot_seed[i]), EpisodeRecorder()
                else:
                    active[i] = False
            restart = done & active
            if restart.any():
                new_obs, new_info = vec.reset(seed=[int(s) for s in slot_seed], options={"reset_mask": restart})
                for i in np.flatnonzero(restart):
                    _set_slot(obs, new_obs, i)
                    _set_slot(info["privileged"], new_info["privileged"], i)
    finally:
        vec.close()
    return [results[e] for e in range(len(seeds))]


def _slot(batched: dict, i: int) -> dict:
    return {k: v[i] for k, v in batched.items() if not k.startswith("_")}


def _set_slot(batched: dict, new: dict, i: int) -> None:
    for k, v in new.items():
        if not k.startswith("_"):
            batched[k] = np.array(batched[k], copy=True) if not isinstance(batched[k], tuple) else list(batched[k])
            batched[k][i] = v[i]


def run_ray(policy_dir: str, env_name: str, seeds: list[int], options: dict, num_tasks: int,
            policy_overrides: dict | None = None) -> list[Trajectory]:
    """Seeds split across `num_tasks` Ray tasks, each loading the policy and running serially."""
    try:
        import ray
    except ImportError:
        raise RobalignError("launcher=ray needs Ray: pip install 'ray==2.60.0'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_tasks, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(_ray_episodes)
        parts = [seeds[i::num_tasks] for i in range(num_tasks) if seeds[i::num_tasks]]
        done = ray.get([task.remote(policy_dir, env_name, part, options, policy_overrides) for part in parts])
    finally:
        if started:
            ray.shutdown()
    by_seed = {t.provenance["seed"]: t for part in done for t in part}
    return [by_seed[s] for s in seeds]


def _ray_episodes(policy_dir: str, env_name: str, seeds: list[int], options: dict,
                  policy_overrides: dict | None) -> list[Trajectory]:
    import torch

    from robalign.policies import load_policy

    torch.set_num_threads(1)
    return run_serial(load_policy(policy_dir, overrides=policy_overrides), env_name, seeds, options)


# ---- metrics -------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0 and n successes, unlike p ± z se)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def episode_records(trajectories: list[Trajectory], env_name: str) -> list[dict]:
    """Each episode's success, length, behaviour mode, instruction and every objective of its
    task: what episodes.json keeps and what metrics.json averages."""
    import robalign.envs as envs

    objectives = {name: envs.get_objective(name) for name in envs.objectives_for(env_name)}
    classify = envs.env_class(env_name).behaviour_mode
    return [{"success": t.success, "length": len(t), "mode": classify(t), "instruction": t.instruction,
             "objectives": {k: obj(t) for k, obj in objectives.items()}} for t in trajectories]


def episode_metrics(records: list[dict], env_name: str) -> dict:
    """metrics.json's figures from the episodes' `episode_records`: success with its interval,
    objective means (and the share meeting each objective's threshold), behaviour-mode
    shares, episode length."""
    import robalign.envs as envs

    n = len(records)
    wins = sum(r["success"] for r in records)
    objectives, satisfied = {}, {}
    for name in envs.objectives_for(env_name):
        values = [r["objectives"][name] for r in records]
        objectives[name] = float(np.mean(values))
        objective = envs.get_objective(name)
        if objective.threshold is not None:
            satisfied[name] = float(np.mean([objective.meets(v) for v in values]))
    counts: dict[str, int] = {m: 0 for m in envs.env_class(env_name).modes}
    for r in records:
        counts[r["mode"] or "unclassified"] = counts.get(r["mode"] or "unclassified", 0) + 1
    lengths = [r["length"] for r in records]
    by_instruction: dict[str, list[bool]] = {}
    for r in records:
        by_instruction.setdefault(r["instruction"], []).append(r["success"])
    return {
        "env": env_name,
        "episodes": n,
        "success_rate": wins / n,
        "success_ci95": list(wilson_interval(wins, n)),
        "objectives": objectives,
        "objective_satisfied": satisfied,
        "mode_share": {m: c / n for m, c in counts.items()},
        "episode_length": float(np.mean(lengths)),
        "episode_length_std": float(np.std(lengths)),
        # instruction -> [successes, episodes]: language generalisation, colour by colour
        "success_by_instruction": {k: [sum(v), len(v)] for k, v in sorted(by_instruction.items())},
    }


def evaluate(policy_dir: str | Path, env_name: str, output_dir: str | Path, cfg: EvalConfig,
             progress: bool = True, config_text: str | None = None) -> dict:
    """Run cfg.episodes episodes of the policy at `policy_dir` on `env_name`; write
    metrics.json, episodes.json, videos/*.mp4 and summary.png into `output_dir`."""
    import torch
    from tqdm.auto import tqdm

    import robalign.envs as envs
    from robalign.data.outputs import atomic_output_dir
    from robalign.data.videos import write_mp4

    from . import load_policy

    envs.check_layout(env_name, cfg.layout)  # unknown env or layout: fail before loading anything
    policy = load_policy(policy_dir, overrides=cfg.policy_overrides)
    options = env_options(policy, cfg.distractors, cfg.max_steps, cfg.instructions, cfg.layout)
    seeds = cfg.seeds
    torch.set_num_threads(1)  # the policy shares the cores with the env processes
    with atomic_output_dir(output_dir) as tmp:
        if config_text is not None:
            (tmp / "config.yaml").write_text(config_text)
        bar = tqdm(total=len(seeds), desc=f"eval {env_name}", unit="ep", disable=not progress)
        if cfg.launcher == "serial":
            trajectories = run_serial(policy, env_name, seeds, options, bar)
        elif cfg.launcher == "vector":
            trajectories = run_vector(policy, env_name, seeds, options, cfg.num_envs, bar)
        else:
            trajectories = run_ray(str(Path(policy_dir).absolute()), env_name, seeds, options, cfg.num_envs,
                                   cfg.policy_overrides)
            bar.update(len(seeds))
        bar.close()
        records = episode_records(trajectories, env_name)
        metrics = episode_metrics(records, env_name)
        metrics.update({"policy": str(Path(policy_dir).absolute()), "seeds": [seeds[0], seeds[-1]],
                        "launcher": cfg.launcher, "distractors": cfg.distractors, "instructions": cfg.instructions,
                        "layout": cfg.layout,
                        "policy_overrides": dict(cfg.policy_overrides)})
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        per_episode = [{"seed": t.provenance["seed"], **r} for t, r in zip(trajectories, records)]
        (tmp / "episodes.json").write_text(json.dumps(per_episode, indent=1))
        # Videos replay the first seeds serially at 256 px: the same episodes, since each
        # depends on its seed alone.
        frames = {s: [] for s in seeds[:cfg.videos]}
        replayed = run_serial(policy, env_name, list(frames), options, videos=frames)
        for traj in replayed:
            seed = traj.provenance["seed"]
            tag = "success" if traj.success else "failure"
            write_mp4(tmp / "videos" / f"seed{seed}-{tag}.mp4", frames[seed])
        plot_summary(metrics, per_episode, tmp / "summary.png")
    return metrics


def plot_summary(metrics: dict, per_episode: list[dict], path: Path) -> None:
    """Success with its 95% interval, behaviour-mode shares, and episode lengths, side by side."""
    from robalign.data.plots import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    lo, hi = metrics["success_ci95"]
    rate = metrics["success_rate"]
    axes[0].bar(["success"], [rate], yerr=[[max(0.0, rate - lo)], [max(0.0, hi - rate)]], capsize=8, color="tab:green")
    axes[0].set_ylim(0, 1)
    axes[0].set_title(f"success {rate:.0%} (95% CI {lo:.0%}-{hi:.0%})")
    modes = metrics["mode_share"]
    axes[1].bar(list(modes), list(modes.values()), color="tab:blue")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("behaviour modes")
    lengths = [e["length"] for e in per_episode]
    axes[2].hist(lengths, bins=min(20, max(5, len(lengths) // 3)), color="tab:gray")
    axes[2].set_title(f"episode length (mean {np.mean(lengths):.0f})")
    axes[2].set_xlabel("steps")
    fig.suptitle(f"{metrics['env']}: {metrics['episodes']} episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
