import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco first renders

import gymnasium as gym  # noqa: E402
import pytest  # noqa: E402

import envs  # noqa: E402, F401


@functools.cache
def gl_available() -> bool:
    try:
        env = gym.make("FetchReach-v0", render_mode="rgb_array", width=32, height=24)
        env.reset(seed=0)
        env.render()
        env.close()
        return True
    except Exception:  # no EGL/OSMesa on this machine
        return False


requires_gl = pytest.mark.skipif(not gl_available(), reason="no OpenGL for headless rendering (MUJOCO_GL)")
