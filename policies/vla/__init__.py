"""The `vla` policy: instruction + observations -> discretised action tokens (exact log-probs)."""

from .configuration import VLAPolicyConfig
from .modeling import VLAPolicy

__all__ = ["VLAPolicy", "VLAPolicyConfig"]
