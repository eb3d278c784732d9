"""The base of every environment here: a MuJoCo model driven at 25 Hz behind the paper's goal-env API.

A task subclass adds only what differs between tasks: how an action reaches the simulator, the observation,
how an episode is randomised, how a goal is sampled, and when a goal counts as achieved.
The paper's API (its section 1.3 and Appendix A): observations are a Dict of `observation`, `achieved_goal`
and `desired_goal`; `compute_reward(achieved_goal, desired_goal, info)` recomputes the reward for substituted
goals, over any leading batch dimensions, so that HER can relabel a whole batch in one call. It takes numpy
arrays and torch tensors alike (a learner that relabels on its GPU): each reward formula is written once, against
the array namespace of its inputs (`array_namespace` below).
"""

import importlib.util
import math
import os
import types
import warnings

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

N_SUBSTEPS = 20  # paper 1.1/1.2: one action is held for 20 simulator steps of 2 ms, i.e. 25 Hz control
REWARD_TYPES = ("sparse", "dense")
# MuJoCo resets the whole mjData by itself when it meets a NaN or huge value; these counters tell us it did.
_UNSTABLE = slice(int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADQACC) + 1)  # qpos, qvel, qacc
_FULL_STATE = mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, act, warm-start, ctrl, mocap poses, time, ...


def model_path(relative_path: str) -> str:
    """Absolute path of a robot model that the `gymnasium-robotics` package ships as package data.

    `find_spec` locates the package without importing it: importing it would register its own environment ids
    (some collide with ours) and print deprecation warnings.
    """
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The robot models come from the 'gymnasium-robotics' package, which is not installed: "
            "pip install -r requirements.txt"
        )
    path = os.path.join(spec.submodule_search_locations[0], "envs", "assets", relative_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing from the installed gymnasium-robotics package")
    return path


# numpy's own functions under the array-API names that the reward formulas use. numpy goals are computed with these,
# so that numpy rewards stay what they were before the formulas took torch tensors too, bit for bit and type for
# type (a numpy scalar for one goal pair); and nothing wraps them on the per-step path: array_api_compat's numpy
# namespace wraps each call, and `np.sum` costs twice the ufunc reduction that it calls.
NUMPY = types.SimpleNamespace(
    float32=np.float32,
    float64=np.float64,
    asarray=np.asarray,
    # np.float32(x) is x.astype(np.float32) for numpy scalars and arrays of one or more dimensions (what comparisons
    # give), at half the cost on the numpy scalar of every step.
    astype=lambda x, dtype: dtype(x),
    broadcast_arrays=np.broadcast_arrays,
    zeros_like=np.zeros_like,
    stack=np.stack,
    reshape=np.reshape,
    where=np.where,
    clip=np.clip,
    abs=np.abs,
    sqrt=np.sqrt,
    sum=np.add.reduce,
    cos=np.cos,
    sin=np.sin,
    acos=np.arccos,
    atan2=np.arctan2,
)
_NUMPY_INPUTS = (np.ndarray, np.generic, list, tuple, float, int)


def array_namespace(*arrays):
    """The namespace to compute on `arrays` with: `NUMPY` for numpy arrays, lists and scalars, otherwise
    array_api_compat's namespace of their type (`array_api_compat.torch` for torch tensors, on any device).

    This module never imports torch: array_api_compat recognises a tensor by its type, once the caller has torch.
    Nor does numpy need array_api_compat: it is imported on the first other input (the reference venv of
    tests/parity.py, say, runs these environments without it).
    """
    for x in arrays:
        if type(x) is not np.ndarray and not isinstance(x, _NUMPY_INPUTS):
            from array_api_compat import array_namespace as compat_namespace

            return compat_namespace(*arrays)
    return NUMPY


def goal_distance(goal_a, goal_b, xp=None):
    """Euclidean distance over the last axis, for single goals and batches alike.

    numpy arrays (or lists) give numpy; torch tensors a tensor on their device. The arithmetic is in the goals'
    float dtype (float32 goals give float32 distances). `xp`: the goals' `array_namespace`, if the caller has it.
    """
    if xp is None:  # (numpy arrays tested inline: this runs in every env step)
        xp = NUMPY if type(goal_a) is np.ndarray is type(goal_b) else array_namespace(goal_a, goal_b)
    goal_a, goal_b = xp.asarray(goal_a), xp.asarray(goal_b)
    if goal_a.shape != goal_b.shape:
        raise ValueError(f"goals of different shapes: {tuple(goal_a.shape)} and {tuple(goal_b.shape)}")
    # What np.linalg.norm(..., axis=-1) computes, without its Python overhead (this runs twice in every env step);
    # one formula for one goal and for batches, so that batched rewards equal step rewards to the last bit.
    diff = goal_a - goal_b
    return xp.sqrt(xp.sum(diff * diff, axis=-1))


class DataSims:
    """One MjData seen as a batch of one simulation: what the tasks' rules read and call, as on `mujoco.batch.Batch`.

    A task's rules (action, observation, reset, goal) are written once, over (n, ...) arrays of MjData fields and a
    few calls (`step`, `forward`, ...); `envs.vector.BatchSims` gives them a `mujoco.batch.Batch` of n simulations,
    this class one MjData as n = 1. The single env keeps a plain MjData (not a Batch of one) so that it runs on
    MuJoCo 3 too, which has no `mujoco.batch`: the parity check runs our envs there beside the canonical ones.
    """

    n = 1

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData):
        self.model, self.data = model, data
        self.warning_number = data.warning.number[None]  # (1, mjNWARNING) live counters, as Batch.warning[..., 1]
        self._jacobian_buffers = {}

    def __getattr__(self, name):  # a field as a live (1, ...) view, made on first use
        view = getattr(self.data, name)[None]
        self.__dict__[name] = view
        return view

    def restore(self, ids, state):
        mujoco.mj_setState(self.model, self.data, state, _FULL_STATE)

    def step(self, ids, nstep):
        mujoco.mj_step(self.model, self.data, nstep=nstep)

    def forward(self, ids):
        mujoco.mj_forward(self.model, self.data)

    def kinematics(self, ids):
        """Positions and the Jacobians' inputs (cdof, subtree centres of mass) at the current qpos."""
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def site_jacobians(self, sites):
        """Jacobians of sites, (1, 3 or 6 rows each, nv): `sites` holds (site id, with its rotation rows) pairs.
        MuJoCo's `mj_jacSite`, from MjData's current fields (straight after mj_step: one substep behind qpos)."""
        if sites not in self._jacobian_buffers:
            self._jacobian_buffers[sites] = np.zeros((1, sum(6 if rot else 3 for _, rot in sites), self.model.nv))
        jac, row = self._jacobian_buffers[sites], 0
        for site, rotation in sites:
            jacr = jac[0, row + 3 : row + 6] if rotation else None
            mujoco.mj_jacSite(self.model, self.data, jac[0, row : row + 3], jacr, site)
            row += 6 if rotation else 3
        return jac


class GoalEnv(gym.Env):
    """A goal-conditioned MuJoCo environment (the paper's `gym.GoalEnv`), shared by the Fetch and hand tasks.

    The task's rules are methods over a batch of simulations (`sims`, see `DataSims`), so that this env (a batch of
    one) and `envs.vector.GoalVectorEnv` (a `mujoco.batch.Batch`) run the same code."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 25}
    camera_config: dict = {}  # the default free camera of a task, as in the canonical environments

    def __init__(self, model_xml: str, n_actions: int, reward_type: str, render_mode=None, width=480, height=480,
                 n_substeps: int = N_SUBSTEPS):
        if isinstance(n_substeps, bool) or not isinstance(n_substeps, (int, np.integer)) or n_substeps < 1:
            raise ValueError(f"n_substeps must be a positive integer (simulator steps of 2 ms per env step; "
                             f"{N_SUBSTEPS}: the paper's 25 Hz), got {n_substeps!r}")
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"unknown reward_type {reward_type!r}; valid reward types are {REWARD_TYPES}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid ones are {self.metadata['render_modes']}")
        self.reward_type = reward_type
        self.render_mode = render_mode
        self.model = mujoco.MjModel.from_xml_path(model_path(model_xml))
        self.model.vis.global_.offwidth, self.model.vis.global_.offheight = width, height
        self.data = mujoco.MjData(self.model)
        self.sims = DataSims(self.model, self.data)
        # n_substeps: the control frequency, 1 / (n_substeps * 2 ms) (section 2, "RL with very frequent actions").
        # The start state does not depend on it: warm-up and settling run steps of N_SUBSTEPS. Actions are not
        # rescaled with it: an action already means about the same speed at any frequency. Fetch's mocap target and
        # finger targets, and the hand's relative targets, are offsets from the current state that a weld or a position
        # actuator pulls towards with a force set by the offset, not by the step's length: under a constant action the
        # gripper moves 0.29 m in 0.4 s at 25 Hz and 0.37 m (28% more) at 250 Hz, while offsets scaled by k / 20 would
        # slow it 7x (0.044 m); the fingers open at the same speed within 5% (tests/test_research_ddpg_her_frequent.py).
        # The hand's default targets are absolute positions: the same at any frequency.
        self.n_substeps = int(n_substeps)
        self.dt = self.model.opt.timestep * self.n_substeps  # seconds per env step (an attribute: read every step)
        if self.n_substeps != N_SUBSTEPS:
            self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}
        self.width, self.height = width, height
        self._renderer = None

        self._setup()  # task-specific: look up ids, set the initial pose, warm up
        # Everything the integrator needs (mocap poses, controls, the solver's warm start, ...) is saved once, so
        # that every reset starts from exactly the same state and a seed reproduces an episode bit for bit. The
        # warm start is saved as zero, as the canonical reset (mj_resetData) leaves it: FetchSlide's contact solve
        # does not fully converge, and a different warm start shows in its trajectories.
        self.data.qacc_warmstart[:] = 0.0
        self._initial_state = np.empty(mujoco.mj_stateSize(self.model, _FULL_STATE))
        mujoco.mj_getState(self.model, self.data, self._initial_state, _FULL_STATE)

        self.goal = self._sample_goal(self.sims, 0, self.np_random)
        observation, achieved_goal = self._get_obs(self.sims)
        goal_space = spaces.Box(-np.inf, np.inf, shape=achieved_goal.shape[1:], dtype=np.float64)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(-np.inf, np.inf, shape=observation.shape[1:], dtype=np.float64),
                "achieved_goal": goal_space,
                "desired_goal": goal_space,
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n_actions,), dtype=np.float32)

    # ---- the goal-env API ------------------------------------------------------------------------------------
    def compute_reward(self, achieved_goal, desired_goal, info):
        """The step reward, recomputed for any goals; batches over leading dims. `info` is not needed here.

        Goals may be numpy arrays or torch tensors (CPU or CUDA): a tensor gives a tensor on its device, computed
        without a host-device synchronisation (it can be captured in a CUDA graph)."""
        raise NotImplementedError

    def compute_terminated(self, achieved_goal, desired_goal, info):
        return False  # tasks never end early: episodes end by truncation after a fixed number of steps

    def compute_truncated(self, achieved_goal, desired_goal, info):
        return False  # the time limit is gymnasium's TimeLimit wrapper, set at registration

    # ---- gymnasium API -------------------------------------------------------------------------------------------
    def step(self, action):
        action = self._check_action(action)
        self._step_sims(self.sims, action[None], None)
        observation, achieved_goal = self._get_obs(self.sims)
        obs = {"observation": observation[0], "achieved_goal": achieved_goal[0], "desired_goal": self.goal.copy()}
        info = {"is_success": self._is_success(obs["achieved_goal"], self.goal)}
        truncated = False
        if self.sims.warning_number[0, _UNSTABLE].any():
            # MuJoCo has silently reset the state to the model's defaults: this episode is over.
            info["sim_unstable"] = True
            truncated = True
            warnings.warn(f"{type(self).__name__}: {unstable_message(self.sims.warning_number[0])}; the episode is "
                          "truncated and should be reset", RuntimeWarning, stacklevel=2)
            self.sims.warning_number[0, _UNSTABLE] = 0
        reward = float(self.compute_reward(obs["achieved_goal"], self.goal, info))
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, truncated, info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        check_reset_options(options)
        self.goal = self._reset_sims(self.sims, np.zeros(1, np.intp), [self.np_random])[0]
        self._show_goal()
        if self.render_mode == "human":
            self.render()
        observation, achieved_goal = self._get_obs(self.sims)
        return {"observation": observation[0], "achieved_goal": achieved_goal[0], "desired_goal": self.goal.copy()}, {}

    # ---- one step and one reset of a batch of simulations: the flow of both this env and GoalVectorEnv ---------
    def _step_sims(self, sims, action, ids):
        """Apply `action` (n, n_actions, already clipped) to every simulation; advance those in `ids` (None: all)."""
        self._set_action(sims, action)
        sims.step(ids, self.n_substeps)
        self._step_callback(sims, ids)

    def _reset_sims(self, sims, ids, rngs):
        """Start new episodes in simulations `ids` (an int array), each drawing from its generator in `rngs`, as
        the canonical reset does (redraw a rejected initial state, then sample the goal); return their goals."""
        pending = np.arange(len(ids))
        while pending.size:  # a task may reject a random initial state (the hand's object off the palm): draw again
            sims.restore(ids[pending], self._initial_state)
            accepted = self._reset_sim(sims, ids[pending], [rngs[k] for k in pending])
            pending = pending[~accepted]
        return np.stack([self._sample_goal(sims, i, rng) for i, rng in zip(ids, rngs)])

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() was called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        if self._renderer is None:
            # gymnasium's own renderer: offscreen through MUJOCO_GL (egl/osmesa when headless), a window for 'human'.
            from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

            self._renderer = MujocoRenderer(
                self.model, self.data, self.camera_config, width=self.width, height=self.height
            )
        return self._renderer.render(self.render_mode)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _check_action(self, action) -> np.ndarray:
        # Refuse bad actions here: past this point MuJoCo would turn a NaN into a silent reset of the whole state.
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}, expected {self.action_space.shape}")
        if not math.isfinite(action.sum()) and not np.isfinite(action).all():  # the sum is the cheap test
            raise ValueError(f"action contains NaN or inf: {action}")
        return action.clip(-1.0, 1.0)

    # ---- what a task defines: its rules, over a batch of simulations (`sims`: (n, ...) fields, see DataSims) -----
    def _setup(self):
        """Look up model ids, put the robot in its initial pose and let it settle. Runs once, in __init__."""
        raise NotImplementedError

    def _set_action(self, sims, action: np.ndarray, rows=slice(None)):
        """Write the controls (and mocap targets) of simulations `rows` from their actions, (len(rows), n_actions)."""
        raise NotImplementedError

    def _step_callback(self, sims, ids):
        """After the physics substeps of simulations `ids` (None: all): constraints the simulator cannot express."""

    def _reset_sim(self, sims, ids, rngs) -> np.ndarray:
        """Randomise the initial states of simulations `ids` (each holds the saved initial state), drawing from
        `rngs` (one generator each); return which were accepted (the others are drawn again)."""
        sims.forward(ids)
        return np.ones(len(ids), bool)

    def _sample_goal(self, sims=None, i: int = 0, rng=None) -> np.ndarray:
        """A goal for simulation i, just reset, drawn from its generator `rng` in the canonical order of draws
        (called with no arguments, as the canonical env's: a goal for this single env, from its np_random)."""
        raise NotImplementedError

    def _show_goal(self):
        """Move the goal's visual marker (single env only); it takes no part in the physics."""

    def _get_obs(self, sims):
        """The observations and achieved goals of every simulation: arrays (n, dim_o) and (n, dim_g)."""
        raise NotImplementedError

    def _is_success(self, achieved_goal, desired_goal):
        raise NotImplementedError


def check_reset_options(options) -> None:
    """Refuse, by name, reset options: no task reads any, and a typo must not pass for an option that took effect."""
    if options:
        raise ValueError(f"unknown reset option(s) {sorted(options)}; the tasks take none")


def unstable_message(warning_number) -> str:
    """Which of MuJoCo's instability warnings (one simulation's counters, (mjNWARNING,)) fired, by name."""
    names = [mujoco.mjtWarning(w).name for w in range(_UNSTABLE.start, _UNSTABLE.stop) if warning_number[w]]
    return (f"the simulation went unstable: MuJoCo warned {', '.join(names)} (NaN, inf or huge values) and reset "
            "its state")
