"""Vector envs: `GoalVectorEnv`, every task natively batched on `mujoco.batch`, and `ThreadVectorEnv`, threads over
single envs for a task that has no batched version (a user's own).

`gym.make_vec("FetchPush-v0", num_envs=38)` returns a `GoalVectorEnv` (each id registers it as its
`vector_entry_point`): one `mujoco.batch.Batch` holds the 38 simulations and steps them on a C++ thread pool that
releases the GIL, and the task's rules (action, observation, reward, reset, goal) run once per step with numpy over
the batch dimension, the same code that `gym.make` runs as a batch of one (envs/goal_env.py, `DataSims`). It behaves
as gymnasium's `SyncVectorEnv` over `gym.make` envs does, bit for bit (tests/test_vector.py): next-step autoreset,
`reset(seed=s)` seeding sub-env i with s + i (each sub-env keeps its own generator, so its draws come in the single
env's order), and infos batched with their `_key` masks.

`ThreadVectorEnv` is `SyncVectorEnv` with `reset` and `step` spread over Python threads: MuJoCo releases the GIL
while it simulates, but the Python of each sub-env's step holds it, so it scales to about 2x one env
(docs/performance.md); `scripts/bench_envs.py` measures both.
"""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space, concatenate, iterate

from envs.goal_env import _UNSTABLE, unstable_message


_KINEMATICS_ONLY = int(mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)


class BatchSims:
    """A `mujoco.batch.Batch` as the tasks' rules see it (as `envs.goal_env.DataSims` shows them one MjData)."""

    def __init__(self, batch):
        self.batch, self.n = batch, batch.nsim
        self.warning_number = batch.warning[..., 1]  # (n, mjNWARNING) live counters ((lastinfo, number) pairs)
        self._chains = {}  # body -> the dofs that move it
        self._jacobian_buffers = {}  # sites -> (n, rows, nv), zero outside the columns that site_jacobians writes
        self._flags = None  # the per-simulation opt.disableflags, once kinematics() has expanded them

    def __getattr__(self, name):  # a field as a live (n, ...) array, bound on first use
        view = self.batch.bind(name)
        self.__dict__[name] = view
        return view

    def restore(self, ids, state):
        self.batch.state[ids] = state

    def step(self, ids, nstep):
        self.batch.step(ids, nstep)

    def forward(self, ids):
        self.batch.forward(ids)

    def kinematics(self, ids):
        # The position stage (mj_fwdPosition), which includes mj_kinematics and mj_comPos, with contacts and
        # constraints off for this call only: nothing read from it depends on them, they are most of its cost (4x),
        # and the next step computes everything afresh (bit for bit: tests/test_vector.py). In a persistent batch
        # every bound field is the simulation's own (a shared MjData would leave subtree_com unset at this stage).
        if self._flags is None:
            self._flags = self.batch.expand("opt.disableflags")
            self._flags_kept = self._flags.copy()
        self._flags[:] = self._flags_kept | _KINEMATICS_ONLY
        try:
            self.batch.forward(ids, stage=mujoco.mjtStage.mjSTAGE_POS)
        finally:
            self._flags[:] = self._flags_kept

    def site_jacobians(self, sites):
        """Jacobians of sites, (n, 3 or 6 rows each, nv), as `DataSims.site_jacobians` (`mj_jacSite`) gives them, bit
        for bit (tests/test_vector.py), over the batch in numpy from the bound fields: `Batch.jac` would recompute
        the kinematics at the current state, where the observation reads them one substep behind (after mj_step).
        Column j of a translational Jacobian is cdof_j's linear part + its angular part x (site - the subtree's
        centre of mass), of a rotational one cdof_j's angular part, for the dofs that move the site (zero elsewhere).
        """
        model = self.batch.model
        if sites not in self._jacobian_buffers:
            self._jacobian_buffers[sites] = np.zeros((self.n, sum(6 if rot else 3 for _, rot in sites), model.nv))
        jac = self._jacobian_buffers[sites]
        row = 0
        for site, rotation in sites:
            body = model.site_bodyid[site]
            chain = self._chains.get(body)
            if chain is None:
                chain = self._chains[body] = dof_chain(model, body)
            cdof = self.cdof[:, chain]  # (n, len(chain), 6): angular, then linear
            ang, lin = cdof[..., :3], cdof[..., 3:]
            r = (self.site_xpos[:, site] - self.subtree_com[:, model.body_rootid[body]])[:, None, :]  # (n, 1, 3)
            cross = np.stack((ang[..., 1] * r[..., 2] - ang[..., 2] * r[..., 1],
                              ang[..., 2] * r[..., 0] - ang[..., 0] * r[..., 2],
                              ang[..., 0] * r[..., 1] - ang[..., 1] * r[..., 0]), axis=1)  # (n, 3, len(chain))
            jac[:, row : row + 3, chain] = lin.transpose(0, 2, 1) + cross
            if rotation:
                jac[:, row + 3 : row + 6, chain] = ang.transpose(0, 2, 1)
            row += 6 if rotation else 3
        return jac


def dof_chain(model, body: int) -> np.ndarray:
    """The dofs that move `body`, in increasing order: the columns of its Jacobian that `mj_jac` fills."""
    while body > 0 and model.body_dofnum[body] == 0:  # a body without joints moves with its parent
        body = model.body_parentid[body]
    dofs = []
    if body > 0:
        dof = model.body_dofadr[body] + model.body_dofnum[body] - 1
        while dof >= 0:
            dofs.append(dof)
            dof = model.dof_parentid[dof]
    return np.array(sorted(dofs), dtype=np.intp)


def default_nthread(num_envs: int) -> int:
    """Threads for the batch by default: one per CPU this process may use, at most one per simulation."""
    return max(1, min(num_envs, len(os.sched_getaffinity(0))))


class GoalVectorEnv(gym.vector.VectorEnv):
    """num_envs simulations of one task in a `mujoco.batch.Batch`, behind gymnasium's VectorEnv API.

    task: the task's single-env class or its entry point ("envs.fetch:FetchPushEnv"); one instance of it gives the
    model, the spaces and the rules. nthread: the batch's threads (None: one per CPU, at most num_envs).
    max_episode_steps: the time limit (registered per id). Other keyword arguments go to the task (reward_type).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, task, num_envs: int, max_episode_steps: int, nthread: int | None = None, **task_kwargs):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if nthread is not None and (not isinstance(nthread, (int, np.integer)) or nthread < 0):
            raise ValueError(f"nthread must be an integer >= 0 (0 or None: one per CPU), got {nthread!r}")
        if max_episode_steps is None or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        try:
            from mujoco import batch as mujoco_batch
        except ImportError as error:
            raise ImportError(f"GoalVectorEnv needs mujoco.batch (MuJoCo >= 4.0.1), not MuJoCo {mujoco.__version__}: "
                              "pip install -r requirements.txt") from error
        self.task = (load_env_creator(task) if isinstance(task, str) else task)(**task_kwargs)
        self.num_envs, self.max_episode_steps = int(num_envs), int(max_episode_steps)
        self.nthread = default_nthread(self.num_envs) if not nthread else min(int(nthread), self.num_envs)
        # persistent: one MjData per simulation, so that every bound field is that simulation's own.
        self._batch = mujoco_batch.Batch(self.task.model, self.num_envs, self.nthread, persistent=True)
        self.sims = BatchSims(self._batch)
        self.sims.restore(slice(None), self.task._initial_state)

        self.single_observation_space = self.task.observation_space
        self.single_action_space = self.task.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self.compute_reward = self.task.compute_reward  # the goal-env API, on batches of goals

        self._rngs = [None] * self.num_envs  # sub-env i's generator, as SyncVectorEnv's env i has its np_random
        self._goals = np.zeros((self.num_envs, *self.single_observation_space["desired_goal"].shape))
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._autoreset = np.zeros(self.num_envs, bool)

    # ---- gymnasium API ---------------------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:  # a typo must not pass for an option that took effect
            raise ValueError(f"unknown reset option(s) {sorted(options)}; GoalVectorEnv takes only reset_mask")
        if isinstance(seed, (int, np.integer)):
            seed = [int(seed) + i for i in range(self.num_envs)]
        if seed is not None and len(seed) != self.num_envs:
            raise ValueError(f"reset(seed=...) needs an int or {self.num_envs} seeds, got {len(seed)}")
        ids = np.arange(self.num_envs)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},), got {mask!r}")
            ids = ids[mask]
        for i in ids:  # as gym.Env.reset: a seed makes a new generator; none keeps the one there is (or makes one)
            if (seed is not None and seed[i] is not None) or self._rngs[i] is None:
                self._rngs[i] = gym.utils.seeding.np_random(None if seed is None else seed[i])[0]
        self._reset_ids(ids)
        return self._observations(), {}

    def step(self, actions):
        actions = self._check_actions(actions)
        stepping = ~self._autoreset
        ids = None if stepping.all() else np.flatnonzero(stepping)
        if ids is None or ids.size:
            self._advance(actions, ids)
        self._elapsed[stepping] += 1
        unstable = stepping & self.sims.warning_number[:, _UNSTABLE].any(axis=1)
        for i in np.flatnonzero(unstable):  # MuJoCo reset these simulations' state: their episodes are over
            warnings.warn(f"GoalVectorEnv({type(self.task).__name__}) env {i}: "
                          f"{unstable_message(self.sims.warning_number[i])}; its episode is truncated and it is reset "
                          "at the next step, the others go on", RuntimeWarning, stacklevel=2)
            self.sims.warning_number[i, _UNSTABLE] = 0
        if self._autoreset.any():  # next-step autoreset: an env whose episode ended last step starts a new one
            self._reset_ids(np.flatnonzero(self._autoreset))
        obs = self._observations()
        achieved = obs["achieved_goal"]
        rewards = np.where(stepping, self.task.compute_reward(achieved, self._goals, {}), 0.0).astype(np.float64)
        terminations = np.zeros(self.num_envs, bool)  # tasks never end early (GoalEnv.compute_terminated)
        truncations = stepping & ((self._elapsed >= self.max_episode_steps) | unstable)
        infos = {}
        if stepping.any():  # as SyncVectorEnv batches the infos of step (is_success) and of reset (nothing)
            success = self.task._is_success(achieved, self._goals)
            infos = {"is_success": np.where(stepping, success, 0.0).astype(np.float32), "_is_success": stepping}
        if unstable.any():
            infos |= {"sim_unstable": unstable.copy(), "_sim_unstable": unstable.copy()}
        self._autoreset = truncations | terminations
        return obs, rewards, terminations, truncations, infos

    def close_extras(self, **kwargs):
        self.task.close()

    # ---- the batch -----------------------------------------------------------------------------------------
    def _check_actions(self, actions):
        # Refuse bad actions here: past this point MuJoCo would turn a NaN into a silent reset of a simulation.
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"actions have shape {actions.shape}, expected {self.action_space.shape} (num_envs, "
                             f"action dim)")
        finite = np.isfinite(actions).all(axis=1)
        if not finite.all():
            raise ValueError(f"actions of env(s) {np.flatnonzero(~finite).tolist()} contain NaN or inf")
        return actions.clip(-1.0, 1.0)

    def _advance(self, actions, ids):
        try:
            self.task._step_sims(self.sims, actions, ids)
        except Exception as error:
            raise self._named(error) from error

    def _reset_ids(self, ids):
        try:
            self._goals[ids] = self.task._reset_sims(self.sims, ids, [self._rngs[i] for i in ids])
        except Exception as error:
            raise self._named(error) from error
        self._elapsed[ids] = 0
        self._autoreset[ids] = False

    def _named(self, error):
        """A MuJoCo error in some simulations, with the envs and MuJoCo's messages (those envs kept their state;
        the others ran to completion)."""
        if not hasattr(error, "ids"):  # not mujoco.batch.SimulationError
            return error
        failed = "; ".join(f"env {i}: {self._batch.error(int(i))}" for i in error.ids)
        return RuntimeError(f"GoalVectorEnv({type(self.task).__name__}): MuJoCo raised an error in {failed}. Those "
                            "envs kept their state from before this call and the others ran; reset() before going on")

    def _observations(self):
        observation, achieved_goal = self.task._get_obs(self.sims)
        return {"observation": observation, "achieved_goal": achieved_goal, "desired_goal": self._goals.copy()}


def make_vec(env_id: str, num_envs: int, nthread: int | None = None, **kwargs) -> gym.vector.VectorEnv:
    """`gym.make_vec(env_id, num_envs=num_envs)` with `nthread` threads, for any registered goal env: our ids (and
    any id registered with GoalVectorEnv) give the batched env; an id without a vector entry point (a task of your
    own) gives ThreadVectorEnv over `gym.make` envs; another vector entry point is called as gym.make_vec calls it.
    kwargs go to every sub-env, as gym.make's: e.g. n_substeps=2, max_episode_steps=500 (250 Hz, 2 s episodes)."""
    entry_point = gym.spec(env_id).vector_entry_point
    if entry_point is None:
        return ThreadVectorEnv([lambda: gym.make(env_id, **kwargs)] * num_envs, nthread)
    if getattr(entry_point, "func", None) is GoalVectorEnv:
        return gym.make_vec(env_id, num_envs=num_envs, nthread=nthread, **kwargs)
    return gym.make_vec(env_id, num_envs=num_envs, **kwargs)


class ThreadVectorEnv(gym.vector.SyncVectorEnv):
    def __init__(self, env_fns, n_threads=None, **kwargs):
        """env_fns: one callable per sub-env, as for SyncVectorEnv; n_threads: None = one per CPU this process may
        use, at most one per sub-env."""
        super().__init__(env_fns, **kwargs)
        if self.autoreset_mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"ThreadVectorEnv supports autoreset_mode NEXT_STEP only, got {self.autoreset_mode}")
        self.n_threads = min(self.num_envs, n_threads or len(os.sched_getaffinity(0)))
        self._shares = np.array_split(np.arange(self.num_envs), self.n_threads)  # thread k steps these sub-envs
        self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="env")

    def _map(self, fn):
        """[fn(0), ..., fn(num_envs - 1)], each share of the sub-envs in its own thread; re-raises their errors."""
        results = [None] * self.num_envs

        def run(share):
            for i in share:
                results[i] = fn(i)

        for future in [self._pool.submit(run, share) for share in self._shares]:
            future.result()
        return results

    def _gather(self, results):
        """Batch the sub-envs' (obs, ..., info) results as SyncVectorEnv does."""
        infos = {}
        for i, result in enumerate(results):
            self._env_obs[i] = result[0]
            infos = self._add_info(infos, result[-1], i)
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        return (deepcopy(self._observations) if self.copy else self._observations), infos

    def reset(self, *, seed=None, options=None):
        if options is not None and "reset_mask" in options:
            raise NotImplementedError("ThreadVectorEnv.reset does not take a reset_mask")
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed or [None] * self.num_envs
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset(seed=...) needs {self.num_envs} seeds, got {len(seeds)}")
        self._terminations = np.zeros(self.num_envs, np.bool_)
        self._truncations = np.zeros(self.num_envs, np.bool_)
        self._autoreset_envs = np.zeros(self.num_envs, np.bool_)
        return self._gather(self._map(lambda i: self.envs[i].reset(seed=seeds[i], options=options)))

    def step(self, actions):
        actions = list(iterate(self.action_space, actions))

        def one(i):  # next-step autoreset: a sub-env whose episode ended last step is reset instead of stepped
            if self._autoreset_envs[i]:
                obs, info = self.envs[i].reset()
                return obs, 0.0, False, False, info
            return self.envs[i].step(actions[i])

        results = self._map(one)
        for i, (_, reward, terminated, truncated, _) in enumerate(results):
            self._rewards[i], self._terminations[i], self._truncations[i] = reward, terminated, truncated
        observations, infos = self._gather(results)
        self._autoreset_envs = self._terminations | self._truncations
        return observations, self._rewards.copy(), self._terminations.copy(), self._truncations.copy(), infos

    def close_extras(self, **kwargs):
        self._pool.shutdown()
        super().close_extras(**kwargs)
