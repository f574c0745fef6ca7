"""MP4 videos a person can watch (H.264 through imageio's bundled ffmpeg)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import imageio.v2 as imageio
import numpy as np


def write_mp4(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: int = 20) -> Path:
    """Write (T, H, W, 3) uint8 frames as an H.264 mp4 playable in browsers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=1 keeps odd sizes; yuv420p is what browsers play
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1,
                            ffmpeg_params=["-pix_fmt", "yuv420p"], ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame, dtype=np.uint8))
    return path


def preview_episode(env_name: str, mode: str, seed: int, path: str | Path, distractors: bool = False,
                    perturb: float = 0.0) -> Path:
    """Replay expert episode (env_name, mode, seed) at 256 px and write it as an mp4.

    Episodes are deterministic per seed, so this shows exactly the recorded demo, rendered
    larger than the 96 px the policy sees.
    """
    import robalign.envs as envs
    from robalign.rollout import expert_episode

    env = envs.make(env_name, distractors=distractors, camera=False, render_mode="rgb_array")
    frames: list[np.ndarray] = []
    try:
        expert_episode(env, mode, seed, video=frames, perturb=perturb)
    finally:
        env.close()
    return write_mp4(path, frames)
