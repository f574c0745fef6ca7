"""Demonstrations as training windows: what every policy's training loop samples from.

A LeRobotDataset written by `robalign demos` is read once into memory (low-dim columns
straight from its parquet files; video frames decoded only when a policy reads `image`).
Sample i is frame t of some episode with, as lerobot's delta timestamps give it,
    observations t-To+1 .. t           (before the episode start: the first frame repeated)
    actions      t-To+1 .. t-To+Hz     (past the end: the last action repeated, flagged in
                                        `action_is_pad`)
Batches are gathered with tensor indexing rather than one item at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robalign.data.demos import dataset_root, recorded_env
from robalign.errors import RobalignError

# env observation key -> dataset column
COLUMNS = {"state": "observation.state", "environment_state": "observation.environment_state",
           "image": "observation.image", "instruction": "task_index", "action": "action"}


class DemoWindows:
    """Every frame of every demo episode, ready to be gathered into training batches.

    Attributes: arrays {key: (F, ...) tensor over all F frames}, episode_start / episode_end
    (F,) frame index bounds of each frame's episode, modes (episodes,), instructions.
    """

    def __init__(self, path: str | Path, keys: tuple[str, ...], n_obs_steps: int, horizon: int,
                 max_episodes: int | None = None):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        root = dataset_root(path)
        ds = LeRobotDataset("robalign/demos", root=root)
        missing = [COLUMNS[k] for k in (*keys, "action") if COLUMNS[k] not in ds.meta.features]
        if missing:
            raise RobalignError(f"dataset {str(root)!r} lacks {', '.join(missing)}; it has "
                                f"{', '.join(sorted(ds.meta.features))}")
        table = ds.hf_dataset.with_format("numpy")
        episode = np.asarray(table["episode_index"])
        keep = np.ones_like(episode, dtype=bool) if max_episodes is None else np.isin(episode, np.unique(episode)[:max_episodes])
        self.arrays = {k: torch.as_tensor(np.stack(table[COLUMNS[k]])[keep]).float()
                       for k in (*keys, "action") if k not in ("image", "instruction")}
        # Instructions (lerobot's `task`): the distinct strings and each frame's index into them
        self.tasks = list(ds.meta.tasks.sort_values("task_index").index)
        self.task_index = torch.as_tensor(np.asarray(table["task_index"])[keep]).long()
        if "image" in keys:
            self.arrays["image"] = _decode_frames(ds, np.flatnonzero(keep))
        episode = episode[keep]
        self.modes = [str(m) for m in np.asarray(table["mode"])[keep]]
        if len(episode) == 0:
            raise RobalignError(f"dataset {str(root)!r} has no frames")
        self._index_episodes(episode, n_obs_steps, horizon)
        self.root, self.keys = root, tuple(keys)

    @classmethod
    def from_trajectories(cls, trajectories: list, keys: tuple[str, ...], n_obs_steps: int,
                          horizon: int) -> "DemoWindows":
        """Windows over in-memory episodes (robalign.types.Trajectory), the same way as over
        a dataset: what an alignment method imitates from its own rollouts."""
        if not trajectories:
            raise RobalignError("no episodes to build training windows from")
        source = {"state": "state", "environment_state": "env_state", "image": "frames", "action": "action"}
        self = cls.__new__(cls)
        self.arrays = {}
        for key in (*keys, "action"):
            if key == "instruction":
                continue
            parts = [getattr(t, source[key]) for t in trajectories]
            if any(p is None for p in parts):
                raise RobalignError(f"the policy reads {key!r} but some episodes were recorded without it "
                                    f"(Trajectory.{source[key]} is None)")
            value = torch.as_tensor(np.concatenate(parts))
            self.arrays[key] = value if key == "image" else value.float()  # frames stay uint8, as decoded demos
        self.tasks = sorted({t.instruction for t in trajectories})
        lengths = [len(t) for t in trajectories]
        self.task_index = torch.as_tensor(np.repeat([self.tasks.index(t.instruction) for t in trajectories],
                                                    lengths)).long()
        self.modes = [str(t.mode) for t, n in zip(trajectories, lengths) for _ in range(n)]
        self._index_episodes(np.repeat(np.arange(len(trajectories)), lengths), n_obs_steps, horizon)
        self.root, self.keys = None, tuple(keys)
        return self

    def _index_episodes(self, episode: np.ndarray, n_obs_steps: int, horizon: int) -> None:
        """Each frame's episode bounds, from (F,) episode labels in which every episode is contiguous."""
        change = np.flatnonzero(np.diff(episode)) + 1
        starts, ends = np.r_[0, change], np.r_[change, len(episode)] - 1
        lengths = ends - starts + 1
        self.episode_start = torch.as_tensor(np.repeat(starts, lengths))
        self.episode_end = torch.as_tensor(np.repeat(ends, lengths))
        self.episode_modes = [self.modes[s] for s in starts]
        self.n_obs_steps, self.horizon = n_obs_steps, horizon

    def __len__(self) -> int:
        return len(self.episode_start)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_modes)

    def stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """Min and max per dimension of each low-dim key (images are scaled by 1/255 instead)."""
        return {k: {"min": v.min(0).values, "max": v.max(0).values} for k, v in self.arrays.items() if k != "image"}

    def shapes(self) -> dict[str, int]:
        """Data sizes a policy config needs: state_dim, env_state_dim, action_dim, image_size, and
        env_state_layout (the recording task's objects) when the demos name their task."""
        out = {"state_dim": self.arrays["state"].shape[1], "action_dim": self.arrays["action"].shape[1]}
        if "environment_state" in self.arrays:
            out["env_state_dim"] = self.arrays["environment_state"].shape[1]
            layout = recorded_env_state_objects(self.root) if self.root is not None else None
            if layout is not None:
                out["env_state_layout"] = layout
        if "image" in self.arrays:
            out["image_size"] = self.arrays["image"].shape[1]
        return out

    def window_starts(self, steps: int) -> torch.Tensor:
        """Indices of the frames in each episode's first `steps` steps (all of a shorter one)."""
        return torch.nonzero(torch.arange(len(self)) - self.episode_start < steps)[:, 0]

    def batch(self, index: torch.Tensor, device=None) -> dict[str, torch.Tensor]:
        """Training batch for frames `index` (B,): obs (B, To, ...), action (B, Hz, A), action_is_pad (B, Hz),
        and `instruction` (B strings) when the policy reads it; tensors on `device` when given."""
        To = self.n_obs_steps
        start, end = self.episode_start[index, None], self.episode_end[index, None]
        obs_idx = torch.maximum(index[:, None] + torch.arange(1 - To, 1), start)
        act_raw = index[:, None] + torch.arange(1 - To, 1 - To + self.horizon)
        act_idx = act_raw.clamp(min=start, max=end)
        out = {k: v[obs_idx] for k, v in self.arrays.items() if k != "action"}
        out["action"] = self.arrays["action"][act_idx]
        out["action_is_pad"] = (act_raw > end) | (act_raw < start)
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        if "instruction" in self.keys:
            out["instruction"] = [self.tasks[i] for i in self.task_index[index].tolist()]
        return out


class ChunkStartWindows:
    """The windows of a policy's own episodes that start where it sampled a chunk, with the
    loss on the steps up to the last one that chunk executed.

    A rollout switches chunks every n_action_steps; a window cut elsewhere joins the tail of
    one chunk to the head of the next, sampled from another observation, a target no single
    sample of the policy ever was. Episodes start with a chunk, so chunk starts are the
    frames n_action_steps apart from each episode's first. Same interface as DemoWindows
    (len, batch); the steps after the executed ones are marked as padding.
    """

    def __init__(self, windows: DemoWindows, n_action_steps: int):
        self.windows = windows
        self.executed = windows.n_obs_steps - 1 + n_action_steps  # window steps up to the chunk's last executed
        phase = torch.arange(len(windows)) - windows.episode_start
        self.starts = torch.nonzero(phase % n_action_steps == 0)[:, 0]  # (W,) frame index of each chunk start

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, index: torch.Tensor, device=None) -> dict[str, torch.Tensor]:
        out = self.windows.batch(self.starts[index], device)
        out["action_is_pad"][:, self.executed:] = True
        return out


def recorded_env_state_objects(root: Path) -> list[list[int]] | None:
    """[[values, starts with xyz (0/1)[, heading symmetry n]], ...] per object of
    environment_state, from the task that recorded these demos (see FrankaTaskEnv's
    env_state_objects); None when the demos do not say which task they are of."""
    name = recorded_env(root)
    if name is None:
        return None
    from robalign.envs import env_class

    return [[size, int(has_position), *heading] for _, size, has_position, *heading in env_class(name).env_state_objects]


def _decode_frames(ds, rows: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 frames of the chosen rows, decoded once through lerobot."""
    from tqdm.auto import tqdm

    frames = []
    for i in tqdm(rows, desc="decode demo video", unit="frame", leave=False):
        chw = ds[int(i)]["observation.image"]
        frames.append((chw.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.stack(frames)
