"""The four Fetch tasks of the paper (section 1.1): Reach, Push, Slide and PickAndPlace.

Numbers and semantics follow the paper and, where it is silent, the canonical implementation that produced its
figures: `gymnasium_robotics/envs/fetch/{fetch_env,reach,push,slide,pick_and_place}.py` (gymnasium-robotics 1.4.2,
the `-v4` environments). Differences from that code are listed in docs/environments.md.
"""

import mujoco
import numpy as np

from envs.goal_env import N_SUBSTEPS, GoalEnv, array_namespace, goal_distance
from envs.rotations import mat2euler

DISTANCE_THRESHOLD = 0.05  # paper 1.1: success within 5 cm
MAX_DISPLACEMENT = 0.05  # fetch_env.py `_set_action`: one unit of action moves the mocap target 5 cm
GRIPPER_QUAT_DELTA = np.array([1.0, 0.0, 1.0, 0.0])  # fetch_env.py: added to the gripper's quaternion every step
# fetch_env.py `_env_setup`: where the gripper is sent before the episode starts, relative to its initial site
GRIPPER_START_OFFSET = np.array([-0.498, 0.005, -0.431])
MIN_OBJECT_GRIPPER_DISTANCE = 0.1  # fetch_env.py `_reset_sim`: the object never starts under the gripper
AIR_TARGET_PROBABILITY, AIR_TARGET_MAX_HEIGHT = 0.5, 0.45  # fetch_env.py `_sample_goal` (PickAndPlace)
N_WARMUP_STEPS = 10  # fetch_env.py `_env_setup`: 10 steps of 20 substeps let the arm reach its start pose
CAMERA_CONFIG = {"distance": 2.5, "azimuth": 132.0, "elevation": -14.0, "lookat": np.array([1.3, 0.75, 0.55])}


def _as_slice(indices):
    """Consecutive indices as a slice: slicing a few numbers out of qpos is several times faster than fancy indexing."""
    if np.array_equal(indices, np.arange(indices[0], indices[0] + len(indices))):
        return slice(int(indices[0]), int(indices[0]) + len(indices))
    return indices


class FetchEnv(GoalEnv):
    """A Fetch arm driven through its mocap body: 4-d actions (gripper displacement, finger opening)."""

    camera_config = CAMERA_CONFIG

    def __init__(
        self,
        model_xml: str,
        initial_qpos: dict,
        has_object: bool,
        block_gripper: bool,
        gripper_extra_height: float,
        target_in_the_air: bool,
        target_offset,
        obj_range: float,
        target_range: float,
        reward_type: str = "sparse",
        distance_threshold: float = DISTANCE_THRESHOLD,
        **kwargs,
    ):
        self.initial_qpos = initial_qpos
        self.has_object = has_object
        self.block_gripper = block_gripper
        self.gripper_extra_height = gripper_extra_height
        self.target_in_the_air = target_in_the_air
        self.target_offset = np.asarray(target_offset, dtype=np.float64)
        self.obj_range = obj_range
        self.target_range = target_range
        self.distance_threshold = distance_threshold
        super().__init__(model_xml, n_actions=4, reward_type=reward_type, **kwargs)

    # ---- the goal-env API ------------------------------------------------------------------------------------
    def compute_reward(self, achieved_goal, desired_goal, info):
        """Sparse: float32 -1 beyond the threshold, else 0 (-0.0); dense: minus the distance, in the goals' dtype.

        numpy arrays give numpy, torch tensors a tensor on their device (capturable in a CUDA graph)."""
        xp = array_namespace(achieved_goal, desired_goal)
        d = goal_distance(achieved_goal, desired_goal, xp)
        if self.reward_type == "sparse":
            return -xp.astype(d > self.distance_threshold, xp.float32)  # float32 0/-1, as the canonical code returns
        return -d

    def _is_success(self, achieved_goal, desired_goal):
        return np.float32(goal_distance(achieved_goal, desired_goal) < self.distance_threshold)

    # ---- set-up, once --------------------------------------------------------------------------------------------
    def _setup(self):
        m, d = self.model, self.data
        name2id = lambda kind, name: mujoco.mj_name2id(m, kind, name)  # noqa: E731
        self._grip_site = name2id(mujoco.mjtObj.mjOBJ_SITE, "robot0:grip")
        self._gripper_body = name2id(mujoco.mjtObj.mjOBJ_BODY, "robot0:gripper_link")
        self._target_site = name2id(mujoco.mjtObj.mjOBJ_SITE, "target0")
        fingers = ["robot0:r_gripper_finger_joint", "robot0:l_gripper_finger_joint"]  # canonical order: right, left
        finger_joints = [name2id(mujoco.mjtObj.mjOBJ_JOINT, n) for n in fingers]
        self._finger_qpos = _as_slice(m.jnt_qposadr[finger_joints])
        self._finger_qvel = _as_slice(m.jnt_dofadr[finger_joints])
        assert isinstance(self._finger_qpos, slice), "the finger joints must be consecutive in qpos"
        # Position actuators (PickAndPlace only) take targets relative to the current finger opening.
        self._actuator_qpos = m.jnt_qposadr[m.actuator_trnid[:, 0]]
        if self.has_object:
            self._object_site = name2id(mujoco.mjtObj.mjOBJ_SITE, "object0")
            self._object_qpos = m.jnt_qposadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, "object0:joint")]
        # The sites' velocities are their Jacobians times qvel, as the canonical `get_site_xvelp` computes them:
        # the grip's translation, and the object's translation and rotation.
        self._observed_sites = ((self._grip_site, False),) + (((self._object_site, True),) if self.has_object else ())

        for name, value in self.initial_qpos.items():
            joint = name2id(mujoco.mjtObj.mjOBJ_JOINT, name)
            adr = m.jnt_qposadr[joint]
            d.qpos[adr : adr + np.size(value)] = value
        # The weld that ties the gripper to the mocap body holds it at zero offset (canonical `reset_mocap_welds`).
        for eq in np.flatnonzero(m.eq_type == mujoco.mjtEq.mjEQ_WELD):
            m.eq_data[eq, :7] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        mujoco.mj_forward(m, d)
        d.mocap_pos[0] = GRIPPER_START_OFFSET + [0.0, 0.0, self.gripper_extra_height] + d.site_xpos[self._grip_site]
        d.mocap_quat[0] = [1.0, 0.0, 1.0, 0.0]
        for _ in range(N_WARMUP_STEPS):  # 20 substeps each whatever n_substeps: the same start state at any frequency
            mujoco.mj_step(m, d, nstep=N_SUBSTEPS)
        # Read straight after mj_step, as the canonical code does (its kinematics lag one substep behind qpos).
        self.initial_gripper_xpos = d.site_xpos[self._grip_site].copy()
        if self.has_object:
            self.height_offset = d.site_xpos[self._object_site][2]

    # ---- every episode ------------------------------------------------------------------------------------------
    def _reset_sim(self, sims, ids, rngs):
        if self.has_object:
            for i, rng in zip(ids, rngs):
                object_xy = self.initial_gripper_xpos[:2]
                while np.linalg.norm(object_xy - self.initial_gripper_xpos[:2]) < MIN_OBJECT_GRIPPER_DISTANCE:
                    object_xy = self.initial_gripper_xpos[:2] + rng.uniform(-self.obj_range, self.obj_range, 2)
                sims.qpos[i, self._object_qpos : self._object_qpos + 2] = object_xy
        sims.forward(ids)
        return np.ones(len(ids), bool)

    def _sample_goal(self, sims=None, i=0, rng=None):
        rng = self.np_random if rng is None else rng  # no arguments: this single env's next goal
        goal = self.initial_gripper_xpos[:3] + rng.uniform(-self.target_range, self.target_range, size=3)
        if self.has_object:
            goal += self.target_offset
            goal[2] = self.height_offset
            if self.target_in_the_air and rng.uniform() < AIR_TARGET_PROBABILITY:
                goal[2] += rng.uniform(0, AIR_TARGET_MAX_HEIGHT)
        return goal

    def _show_goal(self):
        # The target marker is a site of a static body: moving it changes nothing in the physics.
        body = self.model.site_bodyid[self._target_site]
        self.model.site_pos[self._target_site] = self.goal - self.data.xpos[body]
        self.data.site_xpos[self._target_site] = self.goal

    # ---- every step -----------------------------------------------------------------------------------------------
    def _set_action(self, sims, action, rows=slice(None)):
        # The mocap body is first put back onto the gripper, then displaced: the weld pulls the gripper after it.
        # Not scaled with n_substeps: the weld's pull, hence the gripper's speed, is set by the offset (GoalEnv).
        sims.mocap_pos[rows, 0] = sims.xpos[rows, self._gripper_body] + MAX_DISPLACEMENT * action[:, :3]
        # Canonical quirk kept on purpose: the quaternion is a sum, not a product; MuJoCo normalises mocap_quat.
        sims.mocap_quat[rows, 0] = sims.xquat[rows, self._gripper_body] + GRIPPER_QUAT_DELTA
        if not self.block_gripper:
            sims.ctrl[rows] = sims.qpos[rows][:, self._actuator_qpos] + action[:, 3:4]

    def _step_callback(self, sims, ids):
        if self.block_gripper:
            # Fingers locked closed (paper 1.1). Position and velocity kinematics are all the observation needs;
            # the next mj_step recomputes everything else, so a full mj_forward would give the same trajectory.
            sims.qpos[slice(None) if ids is None else ids, self._finger_qpos] = 0.0
            sims.kinematics(ids)

    def _jacobians(self, sims):
        """The Jacobians of the observed sites, (n, 9, nv): rows 0-2 grip translation, 3-5 object translation, 6-8
        object rotation (3 rows without an object), as `mj_jacSite` computes them straight after mj_step, when
        positions and cdof lag one substep behind qvel (the canonical reading)."""
        return sims.site_jacobians(self._observed_sites)

    def _get_obs(self, sims):
        # Per-step displacements: velocities (Jacobian @ qvel) scaled by dt, as the canonical observation has them.
        vel = (self._jacobians(sims) @ sims.qvel[:, :, None])[..., 0] * self.dt
        grip_pos, grip_velp = sims.site_xpos[:, self._grip_site], vel[:, 0:3]
        fingers_qpos, fingers_qvel = sims.qpos[:, self._finger_qpos], sims.qvel[:, self._finger_qvel] * self.dt
        if not self.has_object:
            return np.concatenate((grip_pos, fingers_qpos, grip_velp, fingers_qvel), axis=1), grip_pos.copy()
        object_pos, object_velp, object_velr = sims.site_xpos[:, self._object_site], vel[:, 3:6], vel[:, 6:9]
        object_rot = mat2euler(sims.site_xmat[:, self._object_site].reshape(sims.n, 3, 3))
        obs = np.concatenate((grip_pos, object_pos, object_pos - grip_pos, fingers_qpos, object_rot,
                              object_velp - grip_velp, object_velr, grip_velp, fingers_qvel), axis=1)
        return obs, object_pos.copy()


class FetchReachEnv(FetchEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__(
            "fetch/reach.xml",
            initial_qpos={"robot0:slide0": 0.4049, "robot0:slide1": 0.48, "robot0:slide2": 0.0},
            has_object=False,
            block_gripper=True,
            gripper_extra_height=0.2,
            target_in_the_air=True,
            target_offset=0.0,
            obj_range=0.15,
            target_range=0.15,
            reward_type=reward_type,
            **kwargs,
        )


class FetchPushEnv(FetchEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__(
            "fetch/push.xml",
            initial_qpos={
                "robot0:slide0": 0.405,
                "robot0:slide1": 0.48,
                "robot0:slide2": 0.0,
                "object0:joint": [1.25, 0.53, 0.4, 1.0, 0.0, 0.0, 0.0],
            },
            has_object=True,
            block_gripper=True,
            gripper_extra_height=0.0,
            target_in_the_air=False,
            target_offset=0.0,
            obj_range=0.15,
            target_range=0.15,
            reward_type=reward_type,
            **kwargs,
        )


class FetchSlideEnv(FetchEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__(
            "fetch/slide.xml",
            initial_qpos={
                "robot0:slide0": 0.05,
                "robot0:slide1": 0.48,
                "robot0:slide2": 0.0,
                "object0:joint": [1.7, 1.1, 0.41, 1.0, 0.0, 0.0, 0.0],
            },
            has_object=True,
            block_gripper=True,
            gripper_extra_height=-0.02,
            target_in_the_air=False,
            target_offset=[0.4, 0.0, 0.0],
            obj_range=0.1,
            target_range=0.3,
            reward_type=reward_type,
            **kwargs,
        )


class FetchPickAndPlaceEnv(FetchEnv):
    def __init__(self, reward_type="sparse", **kwargs):
        super().__init__(
            "fetch/pick_and_place.xml",
            initial_qpos={
                "robot0:slide0": 0.405,
                "robot0:slide1": 0.48,
                "robot0:slide2": 0.0,
                "object0:joint": [1.25, 0.53, 0.4, 1.0, 0.0, 0.0, 0.0],
            },
            has_object=True,
            block_gripper=False,
            gripper_extra_height=0.2,
            target_in_the_air=True,
            target_offset=0.0,
            obj_range=0.15,
            target_range=0.15,
            reward_type=reward_type,
            **kwargs,
        )
