"""`diffusion`: Diffusion Policy on lerobot's conditional U-Net (see modeling.py)."""

from .configuration import DiffusionPolicyConfig
from .modeling import DenoisingChain, DiffusionPolicy

__all__ = ["DenoisingChain", "DiffusionPolicy", "DiffusionPolicyConfig"]
