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

import math

import mujoco
import numpy as np

from envs.goal_env import _UNSTABLE, N_SUBSTEPS, NUMPY, GoalEnv, array_namespace, goal_distance
from envs.rotations import (  # noqa: F401  (the rotation math: envs/rotations.py)
    euler2quat,
    euler2mat,
    quat2mat,
    mat2euler,
    quat2euler,
    quat_mul,
    quat_from_angle_and_axis,
    rotation_distance,
    parallel_quats,
)

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

    def _set_action(self, sims, action, rows=slice(None)):
        if self.relative_control:
            qpos = sims.qpos[rows]
            center = qpos[:, self._actuated_qpos]
            center[:, self._coupled_actuators] += qpos[:, self._coupled_qpos]
        else:
            center = self._ctrl_center
        sims.ctrl[rows] = np.clip(center + action * self._ctrl_half_range, self._ctrl_low, self._ctrl_high)


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

    # ---- every episode ---------------------------------------------------------------------------------------
    def _sample_goal(self, sims=None, i=0, rng=None):
        rng = self.np_random if rng is None else rng  # no arguments: this single env's next goal
        # RNG calls in the canonical order (choice, normal, uniform), so that a seed gives the canonical goal.
        finger = rng.choice(THUMB)  # one of the four fingers (not the thumb)
        meeting_pos = self.palm_xpos + MEETING_POINT_OFFSET + rng.normal(scale=MEETING_POINT_NOISE, size=3)
        goal = self.initial_goal.reshape(5, 3).copy()
        for tip in (THUMB, finger):
            direction = meeting_pos - goal[tip]
            direction /= np.linalg.norm(direction)
            goal[tip] = meeting_pos - FINGERTIP_GAP * direction
        if rng.uniform() < INITIAL_GOAL_PROBABILITY:
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
    def _get_obs(self, sims):
        # Paper 1.2 / reach.py: joint positions and velocities (not scaled by dt, unlike Fetch), fingertip positions.
        n = self._n_robot_joints
        tips = sims.site_xpos[:, self._fingertip_sites].reshape(sims.n, 15)
        return np.concatenate((sims.qpos[:, :n], sims.qvel[:, :n], tips), axis=1), tips


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
        # The block and egg carry a second, smaller box or egg with a texture marking the hidden faces; the
        # canonical code makes it opaque when rendering.
        hidden = name2id(mujoco.mjtObj.mjOBJ_GEOM, "object_hidden")
        if hidden >= 0:
            m.geom_rgba[hidden, 3] = 1.0
        mujoco.mj_forward(m, d)  # manipulate.py `_env_setup`: the model's own initial pose (qpos0), no warm-up
        self._initial_object_quat = d.qpos[self._object_qpos + 3 : self._object_qpos + 7].copy()

    # ---- every episode ---------------------------------------------------------------------------------------
    def _sample_rotation(self, rotation: str, rng) -> np.ndarray:
        """A random rotation of the kind `rotation`, with the canonical RNG calls and arithmetic.

        The numpy routines round exactly as the canonical code does (MuJoCo's `mju_mulQuat` differs in the last
        bit), so that a seed gives the canonical initial state even after the contact-rich settling.
        """
        angle = rng.uniform(-np.pi, np.pi)
        if rotation == "z":
            return quat_from_angle_and_axis(angle, _Z_AXIS)
        if rotation == "parallel":  # about z, after one of the 24 axis-aligned rotations
            z_quat = quat_from_angle_and_axis(angle, _Z_AXIS)
            return quat_mul(z_quat, self.parallel_quats[rng.integers(len(self.parallel_quats))])
        # "xyz": the angle is uniform in [-pi, pi], the axis uniform in the cube [-1, 1]^3: not uniform over SO(3)
        return quat_from_angle_and_axis(angle, rng.uniform(-1.0, 1.0, size=3))

    def _reset_sim(self, sims, ids, rngs):
        for i, rng in zip(ids, rngs):
            pos = sims.qpos[i, self._object_qpos : self._object_qpos + 3]  # views into simulation i's state
            quat = sims.qpos[i, self._object_qpos + 3 : self._object_qpos + 7]
            if self.randomize_initial_rotation and self.target_rotation != "fixed":
                # "ignore" randomises like "xyz" (manipulate.py). The offset is in the object's own frame.
                rotation = "xyz" if self.target_rotation == "ignore" else self.target_rotation
                quat[:] = quat_mul(self._initial_object_quat, self._sample_rotation(rotation, rng))
            if self.randomize_initial_position and self.target_position != "fixed":
                pos += rng.normal(size=3, scale=INITIAL_POSITION_NOISE)
            quat /= np.linalg.norm(quat)

        # Let the hand move to the middle of its joint ranges (action 0) and the object drop onto the palm: steps
        # of 20 substeps whatever n_substeps, so that the start state is the same at any control frequency.
        if self.relative_control:  # the zero action means "stay", re-read every step
            for _ in range(N_SETTLE_STEPS):
                self._set_action(sims, np.zeros((len(ids), N_ACTIONS)), ids)
                sims.step(ids, N_SUBSTEPS)
        else:
            sims.ctrl[ids] = self._ctrl_center
            sims.step(ids, N_SETTLE_STEPS * N_SUBSTEPS)
        warned = sims.warning_number[ids]
        unstable = warned[:, _UNSTABLE].any(axis=1)  # MuJoCo reset the state itself: draw again
        warned[:, _UNSTABLE] = 0
        sims.warning_number[ids] = warned
        sims.forward(ids)
        # Not fallen off the palm.
        return ~unstable & (sims.site_xpos[ids, self._object_center_site, 2] > MIN_OBJECT_HEIGHT)

    def _sample_goal(self, sims=None, i=0, rng=None):
        sims = self.sims if sims is None else sims  # no arguments: this single env's next goal
        rng = self.np_random if rng is None else rng
        object_qpos = sims.qpos[i, self._object_qpos : self._object_qpos + 7]
        goal = np.empty(7)
        goal[:3] = object_qpos[:3]  # "ignore" and "fixed": the object's position after the reset
        if self.target_position == "random":
            goal[:3] += rng.uniform(self.target_position_range[:, 0], self.target_position_range[:, 1])
        if self.target_rotation in ("ignore", "fixed"):
            # The canonical code means this but crashes here (`data.get_joint_qpos` is a mujoco-py method).
            goal[3:] = object_qpos[3:]
        else:
            goal[3:] = self._sample_rotation(self.target_rotation, rng)
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
    def _get_obs(self, sims):
        # Paper 1.2 / manipulate.py: joint positions and velocities, the object's velocities and pose (7-d).
        # Velocities are not scaled by dt (unlike Fetch). The object's angular velocity is in its own frame.
        n, qpos = self._n_robot_joints, sims.qpos
        observation = np.concatenate((qpos[:, :n], sims.qvel[:, : n + 6], qpos[:, n : n + 7]), axis=1)
        return observation, qpos[:, n : n + 7].copy()


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
