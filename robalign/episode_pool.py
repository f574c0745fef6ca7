"""Episodes in worker processes, delivered in the order asked, the same as run one by one.

An episode depends on its seed alone (the env's placement, the expert's plan and noise,
a policy's sampling noise), so which process runs it does not change what it records:
`robalign demos` and `robalign rollouts` keep both cores busy rendering and stepping while
this process writes the dataset or the store.

    with EpisodePool("reach-around", {"camera": True}, workers=2) as pool:
        for trajectory in pool.ordered([pool.expert_job("left", seed) for seed in range(10)]):
            ...

Each worker builds one env (and loads the policy, when given a checkpoint) once, runs
torch on one thread, and returns whole Trajectories through a pipe. With workers=1
nothing is spawned: each episode runs in this process when its result is asked for.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Iterator

import numpy as np

from robalign.errors import RobalignError
from robalign.types import Trajectory

# in a worker: the env (and policy) its episodes run in, or the error that building them raised
_WORKER: dict = {}


@dataclasses.dataclass(frozen=True)
class Job:
    """One episode: `kind` "expert" (mode, noise, drift, perturb) or "policy"; `video`: also
    keep the 256 px frames env.render() draws, one per step."""

    kind: str
    seed: int
    mode: str | None = None
    noise: float = 0.0
    drift: float = 0.0
    perturb: float = 0.0
    video: bool = False
    noise_seed: int | None = None  # "best-of-n": the policy's sampling noise (the pool's settings do the rest)


class EpisodePool:
    """`workers` processes, each with its own `envs.make(env_name, **env_options)`, and the
    policy at `policy_dir` for policy jobs; `best_of_n` (scorer, n, lookahead, unfinished)
    for best-of-n jobs, whose results are (trajectory, choices). The scorer travels to each
    worker pickled (a reward scorer as its checkpoint path: it loads it there)."""

    def __init__(self, env_name: str, env_options: dict, workers: int = 2, policy_dir: str | None = None,
                 episodes: int | None = None, best_of_n: dict | None = None):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise RobalignError(f"num_envs must be an int >= 1 (processes running episodes); got {workers!r}")
        if episodes is not None:
            workers = max(1, min(workers, episodes))  # no process without an episode to run
        self.workers, self._args = workers, (env_name, dict(env_options), policy_dir, best_of_n)
        self._pool = None

    def __enter__(self) -> "EpisodePool":
        if self.workers == 1:
            _init_worker(*self._args, threads=None)
        else:
            import multiprocessing

            # spawn: a fork would copy this process's EGL context and torch thread pools
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(*self._args, 1))
        return self

    def __exit__(self, *exc) -> bool:
        if self._pool is not None:
            # terminate, not close: on an error or SIGTERM the queued episodes are not wanted
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        else:
            _close_worker()
        return False

    def expert_job(self, mode: str, seed: int, noise: float = 0.0, drift: float = 0.0, perturb: float = 0.0,
                   video: bool = False) -> Job:
        return Job("expert", int(seed), mode, noise, drift, perturb, video)

    def policy_job(self, seed: int, video: bool = False) -> Job:
        return Job("policy", int(seed), video=video)

    def best_of_n_job(self, seed: int, noise_seed: int) -> Job:
        return Job("best-of-n", int(seed), noise_seed=int(noise_seed))

    def submit(self, job: Job):
        """A handle whose .get() returns the job's Trajectory, (Trajectory, choices) for a
        best-of-n job (raising what the episode raised)."""
        if self._pool is None:
            return _Later(job)
        return self._pool.apply_async(_run_job, (job,))

    def ordered(self, jobs: Iterable[Job], ahead: int | None = None) -> Iterator[Trajectory]:
        """Each job's Trajectory in order, with at most `ahead` (default 2 per worker) in flight,
        so a long list of video episodes does not pile up in memory."""
        ahead = ahead or 2 * self.workers
        window: collections.deque = collections.deque()
        jobs = iter(jobs)
        for job in jobs:
            window.append(self.submit(job))
            if len(window) >= ahead:
                break
        while window:
            result = window.popleft().get()
            nxt = next(jobs, None)
            if nxt is not None:
                window.append(self.submit(nxt))
            yield result

    def expert_demos(self, modes: list[str], first_seed: int, perturb: float = 0.0, require_success: bool = True,
                     max_attempts: int | None = None) -> Iterator[Trajectory]:
        """One successful expert episode per entry of `modes`, in order, with the seeds a serial
        run gives them: each takes the next seed, and a failed one retries with the one after.

        Later episodes run ahead on the guess that those before them succeed; a failure voids
        that guess, and they are asked for again with their seeds shifted by one."""
        n, ahead = len(modes), 2 * self.workers
        max_attempts = max_attempts or 3 * n + 10
        i, seed, attempts = 0, first_seed, 0  # the next demo to deliver and the seed it tries
        window: collections.deque = collections.deque()  # (demo index, seed, handle), consecutive
        while i < n:
            nxt_i, nxt_seed = (window[-1][0] + 1, window[-1][1] + 1) if window else (i, seed)
            while len(window) < ahead and nxt_i < n:
                window.append((nxt_i, nxt_seed, self.submit(self.expert_job(modes[nxt_i], nxt_seed,
                                                                             perturb=perturb))))
                nxt_i, nxt_seed = nxt_i + 1, nxt_seed + 1
            _, tried, handle = window.popleft()
            trajectory = handle.get()
            attempts += 1
            seed = tried + 1
            if trajectory.success or not require_success:
                i += 1
                yield trajectory
                continue
            if attempts > max_attempts:
                raise RobalignError(f"the {self._args[0]} expert keeps failing in mode {modes[i]!r}")
            window.clear()  # every episode after it was asked for with a seed one too low


class _Later:
    """workers=1: the episode runs in this process when its result is first asked for."""

    def __init__(self, job: Job):
        self._job, self._done = job, None

    def get(self) -> Trajectory:
        if self._done is None:
            self._done = _run_job(self._job)
        return self._done


def _init_worker(env_name: str, env_options: dict, policy_dir: str | None, best_of_n: dict | None,
                 threads: int | None) -> None:
    # An error here is kept and raised by the first job: a multiprocessing.Pool whose
    # initializer raises restarts the worker for ever instead of reporting it.
    import robalign.envs as envs

    _close_worker()
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)  # the workers share the cores between them
        _WORKER["policy"], _WORKER["best_of_n"] = None, best_of_n
        if policy_dir is not None:
            from robalign.policies import load_policy

            _WORKER["policy"] = load_policy(policy_dir)
        _WORKER["env"] = envs.make(env_name, **env_options)
    except Exception as err:  # kept, and raised with its type by every job of this worker
        _WORKER["error"] = err


def _close_worker() -> None:
    env = _WORKER.pop("env", None)
    if env is not None:
        env.close()
    _WORKER.clear()


def _run_job(job: Job) -> Trajectory | tuple[Trajectory, list[dict]]:
    from robalign.rollout import expert_episode, record_episode

    if "error" in _WORKER:
        raise _WORKER["error"]
    env, frames = _WORKER["env"], [] if job.video else None
    if job.kind == "expert":
        trajectory = expert_episode(env, job.mode, job.seed, video=frames, noise=job.noise, drift=job.drift,
                                    perturb=job.perturb)
    elif job.kind == "policy":
        policy = _WORKER["policy"]
        if policy is None:
            raise RobalignError("a policy episode needs the pool to be given a policy checkpoint (policy_dir)")
        trajectory = record_episode(env, policy.actor(job.seed).act, job.seed, video=frames,
                                    provenance={"actor": f"policy:{policy.name}"})
    elif job.kind == "best-of-n":
        from robalign.alignment.best_of_n import best_of_n_episode

        settings, policy = _WORKER["best_of_n"], _WORKER["policy"]
        if settings is None or policy is None:
            raise RobalignError("a best-of-n episode needs the pool to be given a policy checkpoint and best_of_n")
        return best_of_n_episode(policy, env, settings["scorer"], job.seed, job.noise_seed, settings["n"],
                                 settings["lookahead"], settings["unfinished"])
    else:
        raise RobalignError(f"unknown episode kind {job.kind!r}; valid: expert, policy, best-of-n")
    if frames:
        # render() runs after reset and after every action: the last frame follows the last step
        trajectory = dataclasses.replace(trajectory, frames=np.stack(frames[: len(trajectory)]))
    return trajectory
