"""The `smolvla` policy: lerobot's SmolVLA (SmolVLM backbone + flow-matching action expert),
built offline, with per-sample flow-matching losses for alignment."""

from .configuration import SmolVLAPolicyConfig
from .modeling import SmolVLAPolicy

__all__ = ["SmolVLAPolicy", "SmolVLAPolicyConfig"]
