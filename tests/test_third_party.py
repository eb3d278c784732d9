"""Code written for the canonical goal environments runs on ours unchanged: Stable-Baselines3's HER replay buffer."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401

sb3 = pytest.importorskip("stable_baselines3")


def test_stable_baselines3_her_relabels_with_our_compute_reward():
    env = gym.make("FetchPush-v0")
    model = sb3.DDPG(
        "MultiInputPolicy",
        env,
        replay_buffer_class=sb3.HerReplayBuffer,
        replay_buffer_kwargs=dict(n_sampled_goal=4, goal_selection_strategy="future"),
        learning_starts=150,
        seed=0,
    )
    model.learn(200)  # 4 episodes collected, a few gradient steps
    batch = model.replay_buffer.sample(256)
    next_achieved = batch.next_observations["achieved_goal"].numpy()
    desired = batch.observations["desired_goal"].numpy()
    expected = env.unwrapped.compute_reward(next_achieved, desired, {})
    np.testing.assert_array_equal(batch.rewards.numpy().ravel(), expected)
    assert (expected == 0).any() and (expected == -1).any()  # relabelling produced successes and failures
