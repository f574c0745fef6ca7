"""robalign: align robot policies with what a person wants.

The loop: envs -> demos -> policy -> rollouts -> preferences -> reward -> aligned policy ->
eval -> deploy. Each arrow is one CLI verb (`robalign VERB key=value`) and one function.
"""

__version__ = "0.1.0"

import os as _os

# Offscreen MuJoCo rendering uses EGL (software Mesa on CPU, the GPU's driver on a
# workstation); it has to be chosen before anything imports mujoco.
_os.environ.setdefault("MUJOCO_GL", "egl")
