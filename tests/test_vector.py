"""envs.ThreadVectorEnv (the training scripts' vector env): the same results as gymnasium's own vector envs."""

import gymnasium as gym
import numpy as np
import pytest

import envs


def trajectory(vec, n_steps, seed):
    """Everything a vector env returns over n_steps seeded random steps, autoresets included."""
    rng = np.random.default_rng(seed)
    out = [vec.reset(seed=seed)]
    for _ in range(n_steps):
        out.append(vec.step(rng.uniform(-1, 1, vec.action_space.shape).astype(np.float32)))
    vec.close()
    return out


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_id, n_envs, n_threads", [("FetchPickAndPlace-v0", 5, 2), ("HandReach-v0", 3, 3),
                                                       ("HandManipulateEggFull-v0", 2, 8)])
def test_thread_vector_env_matches_sync_vector_env(env_id, n_envs, n_threads):
    """Bit for bit, over an episode boundary (next-step autoreset) and two seeded resets."""
    n_steps = gym.spec(env_id).max_episode_steps + 3
    fns = [lambda: gym.make(env_id)] * n_envs
    threaded = envs.ThreadVectorEnv(fns, n_threads)
    assert threaded.n_threads == min(n_envs, n_threads)
    ours, reference = trajectory(threaded, n_steps, 7), trajectory(gym.vector.SyncVectorEnv(fns), n_steps, 7)
    assert ours[-1][3].any() or ours[-4][3].any()  # an episode ended: the autoreset was exercised
    assert_same(ours, reference)
    # The episodes differ between sub-envs (seeds s + i), and the reward is the env's.
    assert not np.array_equal(ours[0][0]["desired_goal"][0], ours[0][0]["desired_goal"][1])


def test_thread_vector_env_matches_async_vector_env():
    fns = [lambda: gym.make("FetchPush-v0")] * 4
    assert_same(trajectory(envs.ThreadVectorEnv(fns, 2), 20, 3), trajectory(gym.vector.AsyncVectorEnv(fns), 20, 3))


def test_errors_in_the_threads_reach_the_caller():
    vec = envs.ThreadVectorEnv([lambda: gym.make("FetchReach-v0")] * 3, 2)
    vec.reset(seed=0)
    actions = np.zeros((3, 4), np.float32)
    actions[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        vec.step(actions)
    with pytest.raises(ValueError, match="needs 3 seeds"):
        vec.reset(seed=[1, 2])
    vec.close()
