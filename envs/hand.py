"""The Shadow Dexterous Hand tasks of the paper (section 1.2): HandReach and block, egg and pen manipulation.

Numbers and semantics follow the paper and, where it is silent or disagrees, the canonical implementation that
produced its figures: `gymnasium_robotics/envs/shadow_dexterous_hand/{hand_env,reach,manipulate,manipulate_block,
manipulate_egg,manipulate_pen}.py` and `gymnasium_robotics/utils/rotations.py` (gymnasium-robotics 1.4.2, the
`HandReach-v3` and `HandManipulate*-v1` environments). Differences from that code are listed in
docs/environments.md.

Rotations are unit quaternions (w, x, y, z) and Euler angles are MuJoCo's intrinsic 'xyz' sequence, the
convention of the canonical `rotations.py`. The arithmetic is the small vectorised routines below (HER
relabels hundreds of goals in one call), written once against the array namespace of their inputs (numpy arrays
or torch tensors), with a scalar twin for the one goal pair of each step; both are tested against MuJoCo's own
quaternion functions. They keep the canonical formulas, so that they round exactly as the canonical code does:
after the contact-rich settling at reset, a one-bit difference grows to 1e-6.
"""

import functools
import itertools
import math

import mujoco
import numpy as np

from envs.goal_env import _UNSTABLE, NUMPY, GoalEnv, array_namespace, goal_distance

# ---- shared by every hand task ---------------------------------------------------------------------------------------
N_ACTIONS = 20  # paper 1.2: absolute position targets for the 20 non-coupled joints (hand_env.py: n_actions=20)
# hand_env.py DEFAULT_CAMERA_CONFIG
CAMERA_CONFIG = {"distance": 0.5, "azimuth": 55.0, "elevation": -25.0, "lookat": np.array([1.0, 0.96, 0.14])}
# hand_env.py `_set_action` (relative_control=True only): each finger's J1 actuator drives the sum of the J1 and J0
# angles, the distal joint J0 being coupled to J1 by a tendon.
COUPLED_FINGERS = ("FF", "MF", "RF", "LF")

# ---- HandReach (reach.py) --------------------------------------------------------------------------------------------
FINGERTIP_SITES = ("robot0:S_fftip", "robot0:S_mftip", "robot0:S_rftip", "robot0:S_lftip", "robot0:S_thtip")
THUMB = 4  # index of the thumb in FINGERTIP_SITES
# Paper 1.2 says "mean fingertip distance below 1 cm"; the code thresholds the norm of the whole 15-d difference.
REACH_DISTANCE_THRESHOLD = 0.01
MEETING_POINT_OFFSET = np.array([0.0, -0.09, 0.05])  # `_sample_goal`: meeting point of thumb and finger, from the palm
MEETING_POINT_NOISE = 0.005  # `_sample_goal`: std of the Gaussian noise on the meeting point
FINGERTIP_GAP = 0.005  # `_sample_goal`: each of the two tips stops this far short of the meeting point
INITIAL_GOAL_PROBABILITY = 0.1  # `_sample_goal`: the goal is the initial fingertip positions this often
REACH_INITIAL_QPOS = {  # reach.py DEFAULT_INITIAL_QPOS
    "robot0:WRJ1": -0.16514339750464327,
    "robot0:WRJ0": -0.31973286565062153,
    "robot0:FFJ3": 0.14340512546557435,
    "robot0:FFJ2": 0.32028208333591573,
    "robot0:FFJ1": 0.7126053607727917,
    "robot0:FFJ0": 0.6705281001412586,
    "robot0:MFJ3": 0.000246444303701037,
    "robot0:MFJ2": 0.3152655251085491,
    "robot0:MFJ1": 0.7659800313729842,
    "robot0:MFJ0": 0.7323156897425923,
    "robot0:RFJ3": 0.00038520700007378114,
    "robot0:RFJ2": 0.36743546201985233,
    "robot0:RFJ1": 0.7119514095008576,
    "robot0:RFJ0": 0.6699446327514138,
    "robot0:LFJ4": 0.0525442258033891,
    "robot0:LFJ3": -0.13615534724474673,
    "robot0:LFJ2": 0.39872030433433003,
    "robot0:LFJ1": 0.7415570009679252,
    "robot0:LFJ0": 0.704096378652974,
    "robot0:THJ4": 0.003673823825070126,
    "robot0:THJ3": 0.5506291436028695,
    "robot0:THJ2": -0.014515151997119306,
    "robot0:THJ1": -0.0015229223564485414,
    "robot0:THJ0": -0.7894883021600622,
}

# ---- manipulation (manipulate.py and its block/egg/pen subclasses) ---------------------------------------------------
POSITION_THRESHOLD = 0.01  # paper 1.2: 1 cm (Full variants only)
PEN_POSITION_THRESHOLD = 0.05  # paper 1.2 / manipulate_pen.py: 5 cm for the pen
ROTATION_THRESHOLD = 0.1  # paper 1.2: 0.1 rad
DENSE_POSITION_WEIGHT = 10.0  # manipulate.py `compute_reward`: dense reward -(10 * d_pos + d_rot)
# manipulate_{block,egg,pen}.py: target position = object position after reset + uniform offset in this box (metres)
TARGET_POSITION_RANGE = np.array([(-0.04, 0.04), (-0.06, 0.02), (0.0, 0.06)])
INITIAL_POSITION_NOISE = 0.005  # manipulate.py `_reset_sim`: std of the Gaussian noise on the object's start position
N_SETTLE_STEPS = 10  # manipulate.py `_reset_sim`: 10 steps of zero action let the hand and object settle
MIN_OBJECT_HEIGHT = 0.04  # manipulate.py `_reset_sim`: an object centre below this has fallen off the palm: redraw
IGNORED_POSITION_SHOW_OFFSET = 0.15  # manipulate.py `_render_callback`: target drawn beside the object (Rotate tasks)
TARGET_POSITIONS = ("ignore", "fixed", "random")  # manipulate.py
TARGET_ROTATIONS = ("ignore", "fixed", "xyz", "z", "parallel")  # manipulate.py

_EPS = float(np.finfo(np.float64).eps)
_EPS4 = _EPS * 4.0
_Z_AXIS = np.array([0.0, 0.0, 1.0])


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


# The scalar twins call numpy's transcendental functions on floats: numpy's (SIMD) arctan2 differs from libm's in
# the last bit, and the step reward must equal `compute_reward` on a batch exactly.
_atan2, _cos, _sin = np.arctan2, np.cos, np.sin


def _rotation_distance_one(quat_a: list, quat_b: list, ignore_z_rotation: bool) -> float:
    """`rotation_distance` of one pair, in scalar math: the same operations, without numpy's array overhead."""
    w0, x0, y0, z0 = quat_a
    w1, x1, y1, z1 = quat_b[0], -quat_b[1], -quat_b[2], -quat_b[3]  # conj(quat_b)
    if ignore_z_rotation:
        half = (_z_euler_one(*quat_b) - _z_euler_one(*quat_a)) / 2.0
        c, s = float(_cos(half)), float(_sin(half))
        w0, x0, y0, z0 = w0 * c - z0 * s, x0 * c + y0 * s, y0 * c - x0 * s, w0 * s + z0 * c  # quat_a * (c, 0, 0, s)
    dw = w0 * w1 - x0 * x1 - y0 * y1 - z0 * z1
    dx = w0 * x1 + x0 * w1 + y0 * z1 - z0 * y1
    dy = w0 * y1 + y0 * w1 + z0 * x1 - x0 * z1
    dz = w0 * z1 + z0 * w1 + x0 * y1 - y0 * x1
    return 2.0 * float(_atan2(math.sqrt(dx * dx + dy * dy + dz * dz), abs(dw)))


def _z_euler_one(w: float, x: float, y: float, z: float) -> float:
    """`quat2euler(quat)[2]` of one quaternion, in scalar math."""
    norm2 = w * w + x * x + y * y + z * z
    s = 2.0 / norm2 if norm2 > _EPS else 0.0
    X, Y, Z = x * s, y * s, z * s
    m12, m22 = y * Z - w * X, 1.0 - (x * X + y * Y)
    if math.sqrt(m22 * m22 + m12 * m12) > _EPS4:
        return -float(_atan2(x * Y - w * Z, 1.0 - (y * Y + z * Z)))  # -atan2(m01, m00)
    return -float(_atan2(-(x * Y + w * Z), 1.0 - (x * X + z * Z)))  # gimbal lock: -atan2(-m10, m11)


class HandEnv(GoalEnv):
    """The Shadow hand driven by absolute joint-position targets: 20-d actions mapped onto the actuators' ranges."""

    camera_config = CAMERA_CONFIG

    def __init__(self, model_xml: str, reward_type: str = "sparse", relative_control: bool = False, **kwargs):
        self.relative_control = relative_control  # canonical option, off in every registered task (paper 1.2)
        super().__init__(model_xml, n_actions=N_ACTIONS, reward_type=reward_type, **kwargs)

    def _setup_hand(self):
        """Ids and arrays the action and observation need; called first by each task's `_setup`."""
        m = self.model
        ctrlrange = m.actuator_ctrlrange
        self._ctrl_low, self._ctrl_high = ctrlrange[:, 0].copy(), ctrlrange[:, 1].copy()
        self._ctrl_center = (ctrlrange[:, 1] + ctrlrange[:, 0]) / 2.0  # hand_env.py `_set_action`
        self._ctrl_half_range = (ctrlrange[:, 1] - ctrlrange[:, 0]) / 2.0
        # Relative control centres each actuator on its joint's angle: "robot0:A_FFJ1" drives "robot0:FFJ1".
        joint_id = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)  # noqa: E731
        actuator_id = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)  # noqa: E731
        actuators = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(m.nu)]
        self._actuated_qpos = m.jnt_qposadr[[joint_id(name.replace(":A_", ":")) for name in actuators]]
        self._coupled_actuators = np.array([actuator_id(f"robot0:A_{f}J1") for f in COUPLED_FINGERS])
        self._coupled_qpos = m.jnt_qposadr[[joint_id(f"robot0:{f}J0") for f in COUPLED_FINGERS]]
        # The observed joints are the robot's (names "robot0:..."): 24 hinges, first in qpos and qvel.
        joint_names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) for j in range(m.njnt)]
        robot_joints = [j for j, name in enumerate(joint_names) if name.startswith("robot")]
        assert list(m.jnt_qposadr[robot_joints]) == list(range(len(robot_joints))), "robot joints not first in qpos"
        assert list(m.jnt_dofadr[robot_joints]) == list(range(len(robot_joints))), "robot joints not first in qvel"
        self._n_robot_joints = len(robot_joints)

    def _set_action(self, action):
        if self.relative_control:
            center = self.data.qpos[self._actuated_qpos]
            center[self._coupled_actuators] += self.data.qpos[self._coupled_qpos]
        else:
            center = self._ctrl_center
        np.clip(center + action * self._ctrl_half_range, self._ctrl_low, self._ctrl_high, out=self.data.ctrl)


class HandReachEnv(HandEnv):
    """HandReach: bring the five fingertips to 15-d target positions (a thumb meets one finger above the palm)."""

    def __init__(self, reward_type="sparse", distance_threshold=REACH_DISTANCE_THRESHOLD, **kwargs):
        self.distance_threshold = distance_threshold
        super().__init__("hand/reach.xml", reward_type=reward_type, **kwargs)

    # ---- the goal-env API ------------------------------------------------------------------------------------
    def compute_reward(self, achieved_goal, desired_goal, info):
        """Sparse: float32 -1 beyond the threshold, else 0 (-0.0); dense: minus the distance, in the goals' dtype.

        numpy arrays give numpy, torch tensors a tensor on their device (capturable in a CUDA graph)."""
        xp = array_namespace(achieved_goal, desired_goal)
        d = goal_distance(achieved_goal, desired_goal, xp)
        if self.reward_type == "sparse":
            return -xp.astype(d > self.distance_threshold, xp.float32)
        return -d

    def _is_success(self, achieved_goal, desired_goal):
        xp = array_namespace(achieved_goal, desired_goal)
        d = goal_distance(achieved_goal, desired_goal, xp)
        return xp.astype(d < self.distance_threshold, xp.float32)

    # ---- set-up, once ----------------------------------------------------------------------------------------
    def _setup(self):
        self._setup_hand()
        m, d = self.model, self.data
        name2id = lambda kind, name: mujoco.mj_name2id(m, kind, name)  # noqa: E731
        for name, value in REACH_INITIAL_QPOS.items():
            d.qpos[m.jnt_qposadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, name)]] = value
        mujoco.mj_forward(m, d)
        self._fingertip_sites = np.array([name2id(mujoco.mjtObj.mjOBJ_SITE, n) for n in FINGERTIP_SITES])
        self._target_sites = np.array([name2id(mujoco.mjtObj.mjOBJ_SITE, f"target{i}") for i in range(5)])
        self._finger_sites = np.array([name2id(mujoco.mjtObj.mjOBJ_SITE, f"finger{i}") for i in range(5)])
        self.initial_goal = d.site_xpos[self._fingertip_sites].ravel().copy()
        self.palm_xpos = d.xpos[name2id(mujoco.mjtObj.mjOBJ_BODY, "robot0:palm")].copy()
        n = self._n_robot_joints
        self._obs = np.zeros(2 * n + 15)
        self._obs_qpos, self._obs_qvel, self._obs_tips = slice(0, n), slice(n, 2 * n), slice(2 * n, 2 * n + 15)

    # ---- every episode ---------------------------------------------------------------------------------------
    def _sample_goal(self):
        # RNG calls in the canonical order (choice, normal, uniform), so that a seed gives the canonical goal.
        finger = self.np_random.choice(THUMB)  # one of the four fingers (not the thumb)
        meeting_pos = self.palm_xpos + MEETING_POINT_OFFSET + self.np_random.normal(scale=MEETING_POINT_NOISE, size=3)
        goal = self.initial_goal.reshape(5, 3).copy()
        for tip in (THUMB, finger):
            direction = meeting_pos - goal[tip]
            direction /= np.linalg.norm(direction)
            goal[tip] = meeting_pos - FINGERTIP_GAP * direction
        if self.np_random.uniform() < INITIAL_GOAL_PROBABILITY:
            return self.initial_goal.copy()  # keeps the thumb from learning to stay near the meeting point
        return goal.ravel()

    def _show_goal(self):
        # The target spheres are sites of the static body "floor0": moving them changes nothing in the physics.
        self._move_sites(self._target_sites, self.goal.reshape(5, 3))

    def _move_sites(self, sites, positions):
        body_xpos = self.data.xpos[self.model.site_bodyid[sites]]  # "floor0" is not rotated
        self.model.site_pos[sites] = positions - body_xpos
        self.data.site_xpos[sites] = positions

    def render(self):
        if self.render_mode is not None:  # the translucent spheres mark where the fingertips are now
            self._move_sites(self._finger_sites, self.data.site_xpos[self._fingertip_sites])
        return super().render()

    # ---- every step ------------------------------------------------------------------------------------------
    def _get_obs(self):
        # Paper 1.2 / reach.py: joint positions and velocities (not scaled by dt, unlike Fetch), fingertip positions.
        d, obs = self.data, self._obs
        obs[self._obs_qpos] = d.qpos[self._obs_qpos]
        obs[self._obs_qvel] = d.qvel[: self._n_robot_joints]
        obs[self._obs_tips] = d.site_xpos[self._fingertip_sites].ravel()
        achieved_goal = obs[self._obs_tips].copy()
        return {"observation": obs.copy(), "achieved_goal": achieved_goal, "desired_goal": self.goal.copy()}


class HandManipulateEnv(HandEnv):
    """In-hand manipulation: bring an object on the palm to a 7-d target pose (position and quaternion)."""

    def __init__(
        self,
        model_xml: str,
        target_position: str,
        target_rotation: str,
        reward_type: str = "sparse",
        randomize_initial_position: bool = True,
        randomize_initial_rotation: bool = True,
        ignore_z_target_rotation: bool = False,
        distance_threshold: float = POSITION_THRESHOLD,
        rotation_threshold: float = ROTATION_THRESHOLD,
        target_position_range=TARGET_POSITION_RANGE,
        canonical_rotation_distance: bool = False,
        **kwargs,
    ):
        if target_position not in TARGET_POSITIONS:
            raise ValueError(f"unknown target_position {target_position!r}; valid ones are {TARGET_POSITIONS}")
        if target_rotation not in TARGET_ROTATIONS:
            raise ValueError(f"unknown target_rotation {target_rotation!r}; valid ones are {TARGET_ROTATIONS}")
        self.target_position = target_position
        self.target_rotation = target_rotation
        self.randomize_initial_position = randomize_initial_position
        self.randomize_initial_rotation = randomize_initial_rotation
        self.ignore_z_target_rotation = ignore_z_target_rotation
        self.distance_threshold = distance_threshold
        self.rotation_threshold = rotation_threshold
        self.target_position_range = np.asarray(target_position_range, dtype=np.float64)
        # True: the canonical rotation distance, sign bug included, for comparisons with the paper's curves.
        self.canonical_rotation_distance = canonical_rotation_distance
        self.parallel_quats = parallel_quats()
        super().__init__(model_xml, reward_type=reward_type, **kwargs)

    # ---- the goal-env API ------------------------------------------------------------------------------------
    def _goal_distance(self, goal_a, goal_b):
        """Position distance (m) and rotation distance (rad) between 7-d goals, over leading dimensions (the two
        broadcast); float64 numpy, or float64 tensors on the goals' device."""
        xp = array_namespace(goal_a, goal_b)
        goal_a, goal_b = xp.asarray(goal_a, dtype=xp.float64), xp.asarray(goal_b, dtype=xp.float64)
        if goal_a.shape[-1] != 7 or goal_b.shape[-1] != 7:
            raise ValueError(
                f"goals are 7-d (position, quaternion); got shapes {tuple(goal_a.shape)} and {tuple(goal_b.shape)}"
            )
        if xp is NUMPY and goal_a.ndim == 1 and goal_b.ndim == 1 and not self.canonical_rotation_distance:
            return self._goal_distance_one(goal_a, goal_b)
        if self.target_position == "ignore":
            d_pos = xp.zeros_like(xp.broadcast_arrays(goal_a[..., 0], goal_b[..., 0])[0])
        else:
            diff = goal_a[..., :3] - goal_b[..., :3]
            d_pos = xp.sqrt(xp.sum(diff * diff, axis=-1))  # what np.linalg.norm(diff, axis=-1) computes
        if self.target_rotation == "ignore":
            return d_pos, xp.zeros_like(d_pos)
        d_rot = rotation_distance(
            goal_a[..., 3:], goal_b[..., 3:], self.ignore_z_target_rotation, self.canonical_rotation_distance
        )
        return d_pos, d_rot + xp.zeros_like(d_pos)

    def _goal_distance_one(self, goal_a, goal_b):
        # One goal pair (twice every step), in scalar math: the batch path's formulas, without numpy's overhead.
        a, b = goal_a.tolist(), goal_b.tolist()
        d_pos = 0.0
        if self.target_position != "ignore":
            dx, dy, dz = a[0] - b[0], a[1] - b[1], a[2] - b[2]
            d_pos = math.sqrt(dx * dx + dy * dy + dz * dz)
        if self.target_rotation == "ignore":
            return np.float64(d_pos), np.float64(0.0)
        d_rot = _rotation_distance_one(a[3:], b[3:], self.ignore_z_target_rotation)
        return np.float64(d_pos), np.float64(d_rot)

    def compute_reward(self, achieved_goal, desired_goal, info):
        """Sparse: float32 0 within both thresholds, else -1; dense: -(10 d_pos + d_rot), float64.

        The distances are float64 whatever the goals' dtype. numpy arrays give numpy; torch tensors a tensor on
        their device (CPU or CUDA), capturable in a CUDA graph."""
        if self.reward_type == "sparse":
            # float32 - Python float stays float32 (torch; numpy >= 2, NEP 50): 0 within the thresholds, else -1.
            return self._is_success(achieved_goal, desired_goal) - 1.0
        d_pos, d_rot = self._goal_distance(achieved_goal, desired_goal)
        # Position is weighted so that it is not swamped by the rotation (metres against radians).
        return -(DENSE_POSITION_WEIGHT * d_pos + d_rot)

    def _is_success(self, achieved_goal, desired_goal):
        d_pos, d_rot = self._goal_distance(achieved_goal, desired_goal)
        xp = array_namespace(d_pos)
        return xp.astype((d_pos < self.distance_threshold) & (d_rot < self.rotation_threshold), xp.float32)

    # ---- set-up, once ----------------------------------------------------------------------------------------
    def _setup(self):
        self._setup_hand()
        m, d = self.model, self.data
        name2id = lambda kind, name: mujoco.mj_name2id(m, kind, name)  # noqa: E731
        object_joint = name2id(mujoco.mjtObj.mjOBJ_JOINT, "object:joint")
        target_joint = name2id(mujoco.mjtObj.mjOBJ_JOINT, "target:joint")
        self._object_qpos = int(m.jnt_qposadr[object_joint])
        self._object_qvel = int(m.jnt_dofadr[object_joint])
        self._target_qpos = int(m.jnt_qposadr[target_joint])
        self._target_qvel = int(m.jnt_dofadr[target_joint])
        self._object_center_site = name2id(mujoco.mjtObj.mjOBJ_SITE, "object:center")
        n = self._n_robot_joints
        # The observation is [robot qpos, robot qvel, object qvel, object qpos] and the object's free joint comes
        # straight after the robot joints, so it is three slices: qpos[:n], qvel[:n + 6], qpos[n:n + 7].
        assert self._object_qpos == n and self._object_qvel == n, "the object's joint must follow the robot's"
        self._obs = np.zeros(2 * n + 13)
        # The block and egg carry a second, smaller box or egg with a texture marking the hidden faces; the
        # canonical code makes it opaque when rendering.
        hidden = name2id(mujoco.mjtObj.mjOBJ_GEOM, "object_hidden")
        if hidden >= 0:
            m.geom_rgba[hidden, 3] = 1.0
        mujoco.mj_forward(m, d)  # manipulate.py `_env_setup`: the model's own initial pose (qpos0), no warm-up
        self._initial_object_quat = d.qpos[self._object_qpos + 3 : self._object_qpos + 7].copy()

    # ---- every episode ---------------------------------------------------------------------------------------
    def _sample_rotation(self, rotation: str) -> np.ndarray:
        """A random rotation of the kind `rotation`, with the canonical RNG calls and arithmetic.

        The numpy routines round exactly as the canonical code does (MuJoCo's `mju_mulQuat` differs in the last
        bit), so that a seed gives the canonical initial state even after the contact-rich settling.
        """
        angle = self.np_random.uniform(-np.pi, np.pi)
        if rotation == "z":
            return quat_from_angle_and_axis(angle, _Z_AXIS)
        if rotation == "parallel":  # about z, after one of the 24 axis-aligned rotations
            z_quat = quat_from_angle_and_axis(angle, _Z_AXIS)
            return quat_mul(z_quat, self.parallel_quats[self.np_random.integers(len(self.parallel_quats))])
        # "xyz": the angle is uniform in [-pi, pi], the axis uniform in the cube [-1, 1]^3: not uniform over SO(3)
        return quat_from_angle_and_axis(angle, self.np_random.uniform(-1.0, 1.0, size=3))

    def _reset_sim(self):
        m, d = self.model, self.data
        pos = d.qpos[self._object_qpos : self._object_qpos + 3]  # views into the state
        quat = d.qpos[self._object_qpos + 3 : self._object_qpos + 7]
        if self.randomize_initial_rotation and self.target_rotation != "fixed":
            # "ignore" randomises like "xyz" (manipulate.py). The offset is in the object's own frame.
            offset = self._sample_rotation("xyz" if self.target_rotation == "ignore" else self.target_rotation)
            quat[:] = quat_mul(self._initial_object_quat, offset)
        if self.randomize_initial_position and self.target_position != "fixed":
            pos += self.np_random.normal(size=3, scale=INITIAL_POSITION_NOISE)
        quat /= np.linalg.norm(quat)

        # Let the hand move to the middle of its joint ranges (action 0) and the object drop onto the palm.
        if self.relative_control:  # the zero action means "stay", re-read every step
            for _ in range(N_SETTLE_STEPS):
                self._set_action(np.zeros(N_ACTIONS))
                mujoco.mj_step(m, d, nstep=self.n_substeps)
        else:
            d.ctrl[:] = self._ctrl_center
            mujoco.mj_step(m, d, nstep=N_SETTLE_STEPS * self.n_substeps)
        if self._warning_counts[_UNSTABLE].any():  # MuJoCo reset the state itself: draw again
            self._warning_counts[_UNSTABLE] = 0
            return False
        mujoco.mj_forward(m, d)
        return bool(d.site_xpos[self._object_center_site, 2] > MIN_OBJECT_HEIGHT)  # not fallen off the palm

    def _sample_goal(self):
        object_qpos = self.data.qpos[self._object_qpos : self._object_qpos + 7]
        goal = np.empty(7)
        goal[:3] = object_qpos[:3]  # "ignore" and "fixed": the object's position after the reset
        if self.target_position == "random":
            goal[:3] += self.np_random.uniform(self.target_position_range[:, 0], self.target_position_range[:, 1])
        if self.target_rotation in ("ignore", "fixed"):
            # The canonical code means this but crashes here (`data.get_joint_qpos` is a mujoco-py method).
            goal[3:] = object_qpos[3:]
        else:
            goal[3:] = self._sample_rotation(self.target_rotation)
        goal[3:] /= np.linalg.norm(goal[3:])
        return goal

    def _show_goal(self):
        # Nothing here: the target is a copy of the object with a free joint and no contacts, placed only when a
        # frame is drawn (as in the canonical code). Moving it at reset would not change the hand and object
        # physically, but it is part of the solver's state, and we keep that identical to the canonical one.
        pass

    def render(self):
        if self.render_mode is not None:
            d = self.data
            target = self.goal.copy()
            if self.target_position == "ignore":
                target[0] += IGNORED_POSITION_SHOW_OFFSET  # beside the object, so as not to hide it
            d.qpos[self._target_qpos : self._target_qpos + 7] = target
            d.qvel[self._target_qvel : self._target_qvel + 6] = 0.0
            mujoco.mj_kinematics(self.model, d)
        return super().render()

    # ---- every step ------------------------------------------------------------------------------------------
    def _get_obs(self):
        # Paper 1.2 / manipulate.py: joint positions and velocities, the object's velocities and pose (7-d).
        # Velocities are not scaled by dt (unlike Fetch). The object's angular velocity is in its own frame.
        d, obs, n = self.data, self._obs, self._n_robot_joints
        obs[:n] = d.qpos[:n]
        obs[n : 2 * n + 6] = d.qvel[: n + 6]
        obs[2 * n + 6 :] = d.qpos[n : n + 7]
        return {"observation": obs.copy(), "achieved_goal": obs[2 * n + 6 :].copy(), "desired_goal": self.goal.copy()}


# The nine tasks of the paper (section 1.2), with the canonical registration's arguments.
class HandManipulateBlockRotateZEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__("hand/manipulate_block.xml", "ignore", "z", reward_type=reward_type, **kwargs)


class HandManipulateBlockRotateParallelEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__("hand/manipulate_block.xml", "ignore", "parallel", reward_type=reward_type, **kwargs)


class HandManipulateBlockRotateXYZEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__("hand/manipulate_block.xml", "ignore", "xyz", reward_type=reward_type, **kwargs)


class HandManipulateBlockFullEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__("hand/manipulate_block.xml", "random", "xyz", reward_type=reward_type, **kwargs)


class HandManipulateEggRotateEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__("hand/manipulate_egg.xml", "ignore", "xyz", reward_type=reward_type, **kwargs)


class HandManipulateEggFullEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__("hand/manipulate_egg.xml", "random", "xyz", reward_type=reward_type, **kwargs)


# manipulate_pen.py: the pen starts unrotated (as the model places it), its own-axis rotation does not count, and its
# position tolerance is 5 cm.
PEN_KWARGS = dict(
    randomize_initial_rotation=False, ignore_z_target_rotation=True, distance_threshold=PEN_POSITION_THRESHOLD
)


class HandManipulatePenRotateEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        kwargs = {**PEN_KWARGS, **kwargs}
        super().__init__("hand/manipulate_pen.xml", "ignore", "xyz", reward_type=reward_type, **kwargs)


class HandManipulatePenFullEnv(HandManipulateEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        kwargs = {**PEN_KWARGS, **kwargs}
        super().__init__("hand/manipulate_pen.xml", "random", "xyz", reward_type=reward_type, **kwargs)
