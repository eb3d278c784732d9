import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco first renders

import mujoco  # noqa: E402
import pytest  # noqa: E402

import envs  # noqa: E402, F401


@functools.cache
def gl_available() -> bool:
    """Whether MuJoCo can open an OpenGL context here (MUJOCO_GL: egl, osmesa or glfw).

    Probed with MuJoCo's own GL context, not with an environment's render(): a render() that is broken must make the
    rendering tests fail, not skip.
    """
    try:
        context = mujoco.GLContext(16, 16)
    except Exception:  # no EGL/OSMesa/display on this machine (or MUJOCO_GL names a backend that is missing)
        return False
    try:
        context.make_current()
        return True
    except Exception:
        return False
    finally:
        context.free()


requires_gl = pytest.mark.skipif(not gl_available(), reason="no OpenGL for headless rendering (MUJOCO_GL)")
