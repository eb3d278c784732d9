"""Rotations, vectorised over leading dimensions, in the conventions of the canonical `rotations.py`
(gymnasium-robotics 1.4.2): unit quaternions (w, x, y, z) and MuJoCo's intrinsic 'xyz' Euler angles.

Shared by the hand tasks (goals are poses) and the Fetch tasks (the object's Euler angles in the observation, over a
batch of simulations). Each takes numpy arrays (or lists) or torch tensors and computes in float64 with the namespace
of its inputs (envs.goal_env.array_namespace): numpy gives numpy, a tensor a float64 tensor on its device, with no
host-device synchronisation (no data-dependent branch or shape), so that a CUDA graph can capture it. They keep the
canonical formulas, so that they round exactly as the canonical code does; tests/test_hand_envs.py checks them
against MuJoCo's own quaternion functions.
"""

import functools
import itertools

import numpy as np

from envs.goal_env import array_namespace

_EPS = float(np.finfo(np.float64).eps)
_EPS4 = _EPS * 4.0


# ---- rotations -------------------------------------------------------------------------------------------------------
# Vectorised over leading dimensions, in the conventions (and with the formulas) of the canonical `rotations.py`:
# MuJoCo has no matrix-to-Euler conversion and its quaternion functions take one quaternion at a time.
# Each takes numpy arrays (or lists) or torch tensors and computes in float64 with the namespace of its inputs
# (envs.goal_env.array_namespace): numpy gives numpy, a tensor a float64 tensor on its device, with no host-device
# synchronisation (no data-dependent branch or shape), so that a CUDA graph can capture it.
def euler2quat(euler):
    """Quaternions of intrinsic 'xyz' Euler angles; equals `mujoco.mju_euler2Quat(q, euler, "xyz")`."""
    xp = array_namespace(euler)
    euler = xp.asarray(euler, dtype=xp.float64)
    ai, aj, ak = euler[..., 2] / 2, -euler[..., 1] / 2, euler[..., 0] / 2
    si, sj, sk = xp.sin(ai), xp.sin(aj), xp.sin(ak)
    ci, cj, ck = xp.cos(ai), xp.cos(aj), xp.cos(ak)
    cc, cs, sc, ss = ci * ck, ci * sk, si * ck, si * sk
    return xp.stack([cj * cc + sj * ss, cj * cs - sj * sc, -(cj * ss + sj * cc), cj * sc - sj * cs], axis=-1)


def _matrix(xp, rows):
    """3x3 matrices over leading dimensions, from their nine entries row by row (one copy: a stack, then a view)."""
    entries = xp.stack([entry for row in rows for entry in row], axis=-1)
    return xp.reshape(entries, tuple(entries.shape[:-1]) + (3, 3))


def euler2mat(euler):
    """Rotation matrices of intrinsic 'xyz' Euler angles (used only to enumerate the parallel rotations)."""
    xp = array_namespace(euler)
    euler = xp.asarray(euler, dtype=xp.float64)
    ai, aj, ak = -euler[..., 2], -euler[..., 1], -euler[..., 0]
    si, sj, sk = xp.sin(ai), xp.sin(aj), xp.sin(ak)
    ci, cj, ck = xp.cos(ai), xp.cos(aj), xp.cos(ak)
    cc, cs, sc, ss = ci * ck, ci * sk, si * ck, si * sk
    return _matrix(
        xp,
        [
            [cj * ci, cj * si, -sj],
            [sj * cs - sc, sj * ss + cc, cj * sk],
            [sj * cc + ss, sj * sc - cs, cj * ck],
        ],
    )


def quat2mat(quat):
    """Rotation matrices of (not necessarily unit) quaternions; equals `mujoco.mju_quat2Mat` on unit ones."""
    xp = array_namespace(quat)
    quat = xp.asarray(quat, dtype=xp.float64)
    w, x, y, z = quat[..., 0], quat[..., 1], quat[..., 2], quat[..., 3]
    norm2 = xp.sum(quat * quat, axis=-1)
    # A zero quaternion (an unfilled buffer row, say) maps to the identity, as in the canonical code. (The inner
    # `where` keeps the division away from zero: no warning, no inf.)
    nonzero = norm2 > _EPS
    s = xp.where(nonzero, 2.0 / xp.where(nonzero, norm2, 1.0), 0.0)
    X, Y, Z = x * s, y * s, z * s
    wX, wY, wZ, xX, xY, xZ, yY, yZ, zZ = w * X, w * Y, w * Z, x * X, x * Y, x * Z, y * Y, y * Z, z * Z
    return _matrix(
        xp,
        [
            [1.0 - (yY + zZ), xY - wZ, xZ + wY],
            [xY + wZ, 1.0 - (xX + zZ), yZ - wX],
            [xZ - wY, yZ + wX, 1.0 - (xX + yY)],
        ],
    )


def mat2euler(mat):
    """Intrinsic 'xyz' Euler angles of rotation matrices (x and z in [-pi, pi], y in [-pi/2, pi/2])."""
    xp = array_namespace(mat)
    mat = xp.asarray(mat, dtype=xp.float64)
    cy = xp.sqrt(mat[..., 2, 2] * mat[..., 2, 2] + mat[..., 1, 2] * mat[..., 1, 2])
    regular = cy > _EPS4  # otherwise gimbal lock: x is set to 0 and z takes the whole rotation
    euler_z = xp.where(
        regular, -xp.atan2(mat[..., 0, 1], mat[..., 0, 0]), -xp.atan2(-mat[..., 1, 0], mat[..., 1, 1])
    )
    euler_y = -xp.atan2(-mat[..., 0, 2], cy)
    euler_x = xp.where(regular, -xp.atan2(mat[..., 1, 2], mat[..., 2, 2]), 0.0)
    return xp.stack([euler_x, euler_y, euler_z], axis=-1)


def quat2euler(quat):
    return mat2euler(quat2mat(quat))


def quat_mul(quat_a, quat_b):
    """Quaternion products quat_a * quat_b; equals `mujoco.mju_mulQuat` (to the last bit or so)."""
    xp = array_namespace(quat_a, quat_b)
    quat_a, quat_b = xp.asarray(quat_a, dtype=xp.float64), xp.asarray(quat_b, dtype=xp.float64)
    w0, x0, y0, z0 = quat_a[..., 0], quat_a[..., 1], quat_a[..., 2], quat_a[..., 3]
    w1, x1, y1, z1 = quat_b[..., 0], quat_b[..., 1], quat_b[..., 2], quat_b[..., 3]
    return xp.stack(
        [
            w0 * w1 - x0 * x1 - y0 * y1 - z0 * z1,
            w0 * x1 + x0 * w1 + y0 * z1 - z0 * y1,
            w0 * y1 + y0 * w1 + z0 * x1 - x0 * z1,
            w0 * z1 + z0 * w1 + x0 * y1 - y0 * x1,
        ],
        axis=-1,
    )


def quat_from_angle_and_axis(angle: float, axis: np.ndarray) -> np.ndarray:
    """The unit quaternion of a rotation by `angle` about `axis` (any length); as `mujoco.mju_axisAngle2Quat`."""
    axis = axis / np.linalg.norm(axis)
    quat = np.concatenate([[np.cos(angle / 2.0)], np.sin(angle / 2.0) * axis])
    return quat / np.linalg.norm(quat)


def rotation_distance(quat_a, quat_b, ignore_z_rotation: bool = False, canonical: bool = False):
    """Angle in radians of the rotation between orientations a and b, over leading dimensions.

    `ignore_z_rotation` (the pen) first gives orientation a the z Euler angle of b, so that rotation about the
    object's own z axis does not count (paper 1.2, footnote 6; manipulate.py `_goal_distance`). With intrinsic
    'xyz' angles, R(e0, e1, e2_b) = R_a Rz(e2_b - e2_a): a rotation of a about its own z axis.

    By default this is the true angle, `2 atan2(|v|, |w|)` of quat_a * conj(quat_b): q and -q are one orientation,
    and atan2 stays exact near 0 where arccos near 1 loses eight digits. `canonical=True` is the canonical
    `2 arccos(w)` without |w|, after the canonical Euler round trip for the pen: it counts an orientation as up to
    2 pi away from itself when the two quaternions' signs differ (docs/environments.md).

    numpy arrays (or lists) give numpy, torch tensors a float64 tensor on their device (see "rotations" above).
    """
    xp = array_namespace(quat_a, quat_b)
    quat_a, quat_b = xp.asarray(quat_a, dtype=xp.float64), xp.asarray(quat_b, dtype=xp.float64)
    conj_b = xp.stack([quat_b[..., 0], -quat_b[..., 1], -quat_b[..., 2], -quat_b[..., 3]], axis=-1)
    if canonical:
        if ignore_z_rotation:
            euler_a, euler_b = xp.broadcast_arrays(quat2euler(quat_a), quat2euler(quat_b))
            quat_a = euler2quat(xp.stack([euler_a[..., 0], euler_a[..., 1], euler_b[..., 2]], axis=-1))
        diff = quat_mul(quat_a, conj_b)
        return 2.0 * xp.acos(xp.clip(diff[..., 0], -1.0, 1.0))
    if ignore_z_rotation:
        # (The canonical code writes `euler_a[2] = euler_b[2]`, which on a batch overwrites row 2 of the batch.)
        half = (quat2euler(quat_b)[..., 2] - quat2euler(quat_a)[..., 2]) / 2.0
        zeros = xp.zeros_like(half)
        quat_a = quat_mul(quat_a, xp.stack([xp.cos(half), zeros, zeros, xp.sin(half)], axis=-1))
    diff = quat_mul(quat_a, conj_b)
    v = diff[..., 1:]  # |v|: what np.linalg.norm(v, axis=-1) computes, to the last bit
    return 2.0 * xp.atan2(xp.sqrt(xp.sum(v * v, axis=-1)), xp.abs(diff[..., 0]))


@functools.cache
def parallel_quats() -> np.ndarray:
    """The 24 axis-aligned rotations of a cube, in the canonical order (`rotations.get_parallel_rotations`).

    The order matters: a seeded goal indexes into this list. Computed once; the array is read-only.
    """
    multiples_of_90 = [0.0, np.pi / 2, -np.pi / 2, np.pi]
    found = []
    for euler in itertools.product(multiples_of_90, repeat=3):
        rounded = np.round(mat2euler(euler2mat(np.array(euler))) / (np.pi / 2))
        rounded[0] = 2.0 if rounded[0] == -2.0 else rounded[0]  # +-pi about x (or z) are one rotation: keep +pi
        rounded[2] = 2.0 if rounded[2] == -2.0 else rounded[2]
        rounded *= np.pi / 2
        if all((rounded != r).any() for r in found):
            found.append(rounded)
    assert len(found) == 24
    quats = euler2quat(np.array(found))
    quats.setflags(write=False)
    return quats
