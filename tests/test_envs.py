"""The goal-env API of every registered environment, and Fetch physics checked with scripted controllers."""

import os
import warnings

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import envs  # noqa: E402
from conftest import requires_gl  # noqa: E402

FETCH_IDS = [i for i in envs.ENV_IDS if i.startswith("Fetch")]
EPISODE_LENGTHS = {"Fetch": 50, "HandReach": 50, "HandManipulate": 100}


def episode_length(env_id):
    return next(n for prefix, n in EPISODE_LENGTHS.items() if env_id.startswith(prefix))


def rollout(env, seed, n_steps):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trajectory = [obs]
    for _ in range(n_steps):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        trajectory.append((obs, reward, info["is_success"]))
    return trajectory


@pytest.fixture(scope="module", params=envs.ENV_IDS)
def env(request):
    env = gym.make(request.param)
    yield env
    env.close()


def test_env_checker(env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings
        warnings.filterwarnings("ignore", message=".*infinity")  # unbounded observations, as in the canonical envs
        check_env(env.unwrapped, skip_render_check=True)


def test_spaces_and_episode_length(env):
    env_id = env.spec.id
    n_obs, n_goal = {"Fetch": (25, 3), "FetchReach": (10, 3), "HandReach": (63, 15), "HandManipulate": (61, 7)}[
        max((p for p in ("Fetch", "FetchReach", "HandReach", "HandManipulate") if env_id.startswith(p)), key=len)
    ]
    assert isinstance(env.observation_space, gym.spaces.Dict)
    assert env.observation_space["observation"].shape == (n_obs,)
    assert env.observation_space["achieved_goal"].shape == env.observation_space["desired_goal"].shape == (n_goal,)
    assert env.action_space.shape == ((4,) if env_id.startswith("Fetch") else (20,))
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    assert env.unwrapped.dt == pytest.approx(0.04)  # 25 Hz: 20 substeps of 2 ms
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    n_steps, truncated, terminated = 0, False, False
    while not (truncated or terminated):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert "is_success" in info
        n_steps += 1
    assert (n_steps, terminated, truncated) == (episode_length(env_id), False, True)


def test_compute_reward_matches_step_reward(env):
    compute_reward = env.unwrapped.compute_reward
    obs, _ = env.reset(seed=1)
    achieved, desired, rewards = [], [], []
    for _ in range(20):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        assert reward == compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
        rewards.append(reward)
    # Batched, as HER uses it: any leading dims, `info` may be {}.
    achieved, desired = np.array(achieved), np.array(desired)
    np.testing.assert_array_equal(compute_reward(achieved, desired, {}), rewards)
    np.testing.assert_array_equal(
        compute_reward(achieved.reshape(4, 5, -1), desired.reshape(4, 5, -1), {}), np.reshape(rewards, (4, 5))
    )
    # Substituted goals: a batch of random goals, checked one by one against the batched call.
    rng = np.random.default_rng(0)
    other = desired[rng.permutation(len(desired))] + rng.normal(0, 0.01, desired.shape)
    batched = compute_reward(achieved, other, {})
    np.testing.assert_allclose(batched, [compute_reward(a, g, {}) for a, g in zip(achieved, other)])


def test_achieved_goal_as_desired_goal_gets_best_reward(env):
    obs, _ = env.reset(seed=2)
    for _ in range(5):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        best = env.unwrapped.compute_reward(obs["achieved_goal"], obs["achieved_goal"].copy(), info)
        assert best == 0.0 and best >= reward


def test_seed_reproduces_trajectory(env):
    first, second = rollout(env, seed=3, n_steps=15), rollout(env, seed=3, n_steps=15)
    np.testing.assert_array_equal(first[0]["observation"], second[0]["observation"])
    for (o1, r1, s1), (o2, r2, s2) in zip(first[1:], second[1:]):
        for key in o1:
            np.testing.assert_array_equal(o1[key], o2[key])
        assert (r1, s1) == (r2, s2)
    other = rollout(env, seed=4, n_steps=1)
    assert not np.array_equal(first[0]["desired_goal"], other[0]["desired_goal"])


def test_bad_actions_raise(env):
    env.reset(seed=0)
    n = env.action_space.shape[0]
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(n + 1))
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.full(n, np.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.r_[np.inf, np.zeros(n - 1)])
    env.step(np.zeros(n))  # the refused actions left the env usable


def test_unstable_simulation_is_reported(env):
    env.reset(seed=0)
    env.unwrapped.data.qvel[:] = 1e12  # what a blown-up simulation looks like to MuJoCo
    with pytest.warns(RuntimeWarning, match="unstable"):
        obs, _, _, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert info["sim_unstable"] and truncated
    obs, _ = env.reset(seed=0)
    assert np.isfinite(obs["observation"]).all()


def test_unknown_ids_and_reward_types_name_the_valid_ones():
    with pytest.raises(ValueError, match="FetchPickAndPlace-v0"):
        envs.make("FetchPickAndPlce-v0")
    with pytest.raises(ValueError, match="sparse"):
        gym.make("FetchReach-v0", reward_type="shaped")


def test_check_goal_env_names_what_is_missing():
    for env_id in envs.ENV_IDS:
        envs.check_goal_env(gym.make(env_id))  # ours pass
    with pytest.raises(ValueError, match="Pendulum-v1 is not a goal environment"):
        envs.check_goal_env(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="no time limit"):
        envs.check_goal_env(gym.make("FetchReach-v0", max_episode_steps=None).unwrapped)
    asymmetric = gym.make("FetchReach-v0")
    asymmetric.unwrapped.action_space = gym.spaces.Box(0.0, 1.0, (4,))
    with pytest.raises(ValueError, match="symmetric box"):
        envs.check_goal_env(asymmetric)


def test_flattening_with_gymnasium_wrappers():
    # Appendix A's FlattenDictWrapper example, with gymnasium's own wrappers.
    env = gym.make("FetchReach-v0")
    env = gym.wrappers.FlattenObservation(gym.wrappers.FilterObservation(env, ["observation", "desired_goal"]))
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.shape == (13,)


@requires_gl
@pytest.mark.parametrize("env_id", envs.ENV_IDS[::2])
def test_render_rgb_array(env_id):
    env = gym.make(env_id, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    image = env.render()
    env.close()
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.std() > 0


# ---- Fetch physics: hand-written controllers solve Reach, Push and PickAndPlace ----------------------------------
def reach_controller(obs, _state):
    return np.r_[np.clip(20 * (obs["desired_goal"] - obs["observation"][:3]), -1, 1), 0.0]


def push_controller(obs, state):
    grip, obj, goal = obs["observation"][:3], obs["achieved_goal"], obs["desired_goal"]
    to_goal = (goal - obj)[:2]
    dist = np.linalg.norm(to_goal)
    direction = to_goal / (dist + 1e-8)
    if dist < 0.02:
        return np.zeros(4)  # close enough: let the block rest
    behind = np.r_[obj[:2] - 0.05 * direction, obj[2]]
    to_obj = (obj - grip)[:2] / (np.linalg.norm((obj - grip)[:2]) + 1e-8)
    if state.get("pushing") and to_obj @ direction < 0.9:
        state["pushing"] = False  # the block went off line: go round and approach it again
    if not state.get("pushing"):
        if np.linalg.norm(grip[:2] - behind[:2]) > 0.01:
            target = np.r_[behind[:2], obj[2] + 0.08]  # go above the spot behind the block first
        else:
            target = behind
            state["pushing"] = abs(grip[2] - obj[2]) < 0.01
        return np.r_[np.clip(20 * (target - grip), -1, 1), 0.0]
    # Push through the block's centre towards the goal, slowing down near it so the block does not slide past.
    target = np.r_[obj[:2] - 0.01 * direction, obj[2]]
    step = (target - grip) / (np.linalg.norm(target - grip) + 1e-8)
    return np.r_[step * min(1.0, 5 * dist), 0.0]


def pick_controller(obs, state):
    grip, obj, goal = obs["observation"][:3], obs["achieved_goal"], obs["desired_goal"]
    if not state.get("grasped"):
        if np.linalg.norm(grip[:2] - obj[:2]) > 0.01:
            return np.r_[np.clip(20 * (np.r_[obj[:2], obj[2] + 0.1] - grip), -1, 1), 1.0]  # above, open
        if abs(grip[2] - obj[2]) > 0.01:
            return np.r_[np.clip(20 * (obj - grip), -1, 1), 1.0]  # down, open
        state["close_steps"] = state.get("close_steps", 0) + 1
        state["grasped"] = state["close_steps"] > 3
        return np.r_[0.0, 0.0, 0.0, -1.0]  # close
    return np.r_[np.clip(20 * (goal - grip), -1, 1), -1.0]


@pytest.mark.parametrize(
    "env_id, controller, min_success",
    [("FetchReach-v0", reach_controller, 0.95), ("FetchPush-v0", push_controller, 0.9),
     ("FetchPickAndPlace-v0", pick_controller, 0.9)],
)
def test_scripted_controller_solves(env_id, controller, min_success):
    env = gym.make(env_id)
    successes = []
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        state, truncated = {}, False
        while not truncated:
            obs, _, _, truncated, info = env.step(controller(obs, state))
        successes.append(info["is_success"])
    assert np.mean(successes) >= min_success, f"{env_id}: scripted success {np.mean(successes):.2f}"
