"""The paper's multi-goal environments, registered in gymnasium on `import envs`.

    import gymnasium as gym
    import envs  # noqa: F401  (registers the ids)
    env = gym.make("FetchPickAndPlace-v0")

Every task also comes with a dense reward, as `...Dense-v0` (e.g. `FetchPushDense-v0`). Each id has a natively
batched version, which `gym.make_vec` returns (envs/vector.py):

    vec = gym.make_vec("FetchPickAndPlace-v0", num_envs=38)          # GoalVectorEnv: one mujoco.batch.Batch
    vec = gym.make_vec("FetchPickAndPlace-v0", num_envs=38, nthread=4)  # its thread count (default: one per CPU)

How the two relate: a task's rules (action, observation, reward, reset, goal) are methods over a batch of
simulations, written once. `gym.make` runs them on one MjData as a batch of one (`goal_env.DataSims`), which keeps
the single env free of batch machinery and able to run on MuJoCo 3 beside the canonical environments (the parity
check, tests/parity.py); `gym.make_vec` runs them on a `mujoco.batch.Batch` (`vector.BatchSims`), stepped on a C++
thread pool without the GIL. The two give the same results bit for bit (tests/test_vector.py).
"""

import functools

import gymnasium as gym
import numpy as np

from envs.goal_env import REWARD_TYPES, GoalEnv, goal_distance  # noqa: F401
from envs.vector import GoalVectorEnv, ThreadVectorEnv, make_vec  # noqa: F401  (the vector envs: envs/vector.py)

# id stem -> (entry point, episode length in steps). Episode lengths: paper 1.4 / canonical registration.
_TASKS = {
    "FetchReach": ("envs.fetch:FetchReachEnv", 50),
    "FetchPush": ("envs.fetch:FetchPushEnv", 50),
    "FetchSlide": ("envs.fetch:FetchSlideEnv", 50),
    "FetchPickAndPlace": ("envs.fetch:FetchPickAndPlaceEnv", 50),
    "HandReach": ("envs.hand:HandReachEnv", 50),
    "HandManipulateBlockRotateZ": ("envs.hand:HandManipulateBlockRotateZEnv", 100),
    "HandManipulateBlockRotateParallel": ("envs.hand:HandManipulateBlockRotateParallelEnv", 100),
    "HandManipulateBlockRotateXYZ": ("envs.hand:HandManipulateBlockRotateXYZEnv", 100),
    "HandManipulateBlockFull": ("envs.hand:HandManipulateBlockFullEnv", 100),
    "HandManipulateEggRotate": ("envs.hand:HandManipulateEggRotateEnv", 100),
    "HandManipulateEggFull": ("envs.hand:HandManipulateEggFullEnv", 100),
    "HandManipulatePenRotate": ("envs.hand:HandManipulatePenRotateEnv", 100),
    "HandManipulatePenFull": ("envs.hand:HandManipulatePenFullEnv", 100),
}

ENV_IDS = []
for _stem, (_entry_point, _max_steps) in _TASKS.items():
    for _reward_type in REWARD_TYPES:
        _id = f"{_stem}{'Dense' if _reward_type == 'dense' else ''}-v0"
        # Registering again (a second import, or after gymnasium_robotics claimed an id) must not warn or fail.
        gym.envs.registry.pop(_id, None)
        # No passive env checker on every make: the tests run gymnasium's full checker on every id instead.
        gym.register(
            _id,
            entry_point=_entry_point,
            max_episode_steps=_max_steps,
            kwargs={"reward_type": _reward_type},
            disable_env_checker=True,
            # gym.make_vec(id, num_envs=N): the task batched on mujoco.batch (envs/vector.py)
            vector_entry_point=functools.partial(GoalVectorEnv, _entry_point),
        )
        ENV_IDS.append(_id)
ENV_IDS = tuple(ENV_IDS)


def make(env_id: str, **kwargs) -> gym.Env:
    """`gym.make` for our ids, with an error that lists the valid ones."""
    if env_id not in ENV_IDS:
        raise ValueError(f"unknown environment id {env_id!r}; valid ids are: {', '.join(ENV_IDS)}")
    return gym.make(env_id, **kwargs)


def check_goal_env(env: gym.Env) -> None:
    """Raise ValueError, naming the env and what it lacks, unless `env` (from `gym.make`) has what goal-conditioned
    learners need: Dict observations with observation/achieved_goal/desired_goal, `compute_reward`, episodes of a
    fixed length (a time limit) and a symmetric action box."""
    env_id = env.spec.id if env.spec else type(env.unwrapped).__name__
    keys = {"observation", "achieved_goal", "desired_goal"}
    if not (isinstance(env.observation_space, gym.spaces.Dict) and keys <= set(env.observation_space.spaces)
            and hasattr(env.unwrapped, "compute_reward")):
        raise ValueError(f"{env_id} is not a goal environment (Dict observations {sorted(keys)} and compute_reward "
                         f"are needed); valid ids are: {', '.join(ENV_IDS)}")
    if env.spec is None or env.spec.max_episode_steps is None:
        raise ValueError(f"{env_id} has no time limit; episodes of a fixed length T are needed")
    space = env.action_space
    if not (isinstance(space, gym.spaces.Box) and np.allclose(space.high, -space.low) and np.ptp(space.high) == 0):
        raise ValueError(f"{env_id}: actions must lie in a symmetric box [-max_u, max_u]")
