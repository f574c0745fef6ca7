import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

import robalign.envs as envs  # noqa: E402

ENV_NAMES = envs.available()


@pytest.fixture(params=ENV_NAMES)
def env_name(request):
    return request.param
