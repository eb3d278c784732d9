"""A vector env that steps its sub-envs in threads: collection that scales with cores, without worker processes.

MuJoCo releases the GIL while it simulates (`mj_step`), which is about 90% of one of our env steps, so a few Python
threads, each stepping a fixed share of the sub-envs in turn, run the physics in parallel. Unlike gymnasium's
`AsyncVectorEnv` (one process per sub-env) there are no pipes, pickling or shared-memory copies per step, and
many sub-envs on few cores do not compete as processes for those cores (`scripts/bench_envs.py` measures both).

`ThreadVectorEnv` is gymnasium's `SyncVectorEnv` with `reset` and `step` spread over the threads: the same seeding
(`reset(seed=s)` seeds sub-env i with s + i), the same next-step autoreset and the same results, bit for bit, as
`SyncVectorEnv` and `AsyncVectorEnv` (tests/test_vector.py).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import concatenate, iterate


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
