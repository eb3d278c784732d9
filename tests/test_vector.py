"""The vector envs: `gym.make_vec`'s GoalVectorEnv (every id batched on mujoco.batch, the training scripts' vector env)
and envs.ThreadVectorEnv give what gymnasium's SyncVectorEnv over `gym.make` envs gives, bit for bit."""

import csv
import glob
import os
import subprocess
import sys
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs
from envs.vector import GoalVectorEnv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# ---- GoalVectorEnv: gym.make_vec(id, num_envs=N) ---------------------------------------------------------------------
def test_make_vec_gives_the_batched_env_for_every_id():
    for env_id in envs.ENV_IDS:
        assert gym.spec(env_id).vector_entry_point is not None, env_id
    vec = gym.make_vec("FetchPush-v0", num_envs=3, nthread=2)
    assert isinstance(vec, GoalVectorEnv) and vec.num_envs == 3 and vec.nthread == 2 and vec._batch.nthread == 2
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert vec.single_observation_space == gym.make("FetchPush-v0").observation_space
    assert gym.make_vec("FetchPushDense-v0", num_envs=1).task.reward_type == "dense"
    assert gym.make_vec("FetchPush-v0", num_envs=64).nthread == min(64, len(os.sched_getaffinity(0)))  # default


def test_a_task_of_your_own_collects_in_threads():
    """envs.make_vec (the scripts'): our ids batched; an id registered without a vector entry point (a task of your
    own) in threads over gym.make envs, with the threads asked for."""
    assert isinstance(envs.make_vec("FetchReach-v0", 2, 1), GoalVectorEnv)
    gym.register("OwnReachTest-v0", entry_point="envs.fetch:FetchReachEnv", max_episode_steps=50)
    try:
        vec = envs.make_vec("OwnReachTest-v0", 3, 2)
        assert isinstance(vec, envs.ThreadVectorEnv) and vec.n_threads == 2 and vec.num_envs == 3
        vec.reset(seed=0)
        vec.step(np.zeros((3, 4)))
    finally:
        gym.registry.pop("OwnReachTest-v0")


@pytest.mark.parametrize("n_envs", [1, 5])
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_batched_env_matches_sync_vector_env(env_id, n_envs):
    """Observations, rewards, terminations, truncations and infos (is_success) bit for bit, over three episodes:
    two next-step autoresets, from seeded resets; random actions beyond the action box (clipped alike)."""
    n_steps = 2 * gym.spec(env_id).max_episode_steps + 3
    batched = gym.make_vec(env_id, num_envs=n_envs)
    ours = trajectory(batched, n_steps, 7)
    reference = trajectory(gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="sync"), n_steps, 7)
    assert sum(step[3].any() for step in ours[1:]) == 2  # two episode ends: the autoresets were exercised
    assert "is_success" in ours[-1][-1]
    assert_same(ours, reference)
    if n_envs > 1:  # the sub-envs differ (seeds s + i)
        assert not np.array_equal(ours[0][0]["desired_goal"][0], ours[0][0]["desired_goal"][1])


def test_unseeded_and_partial_resets_match_sync_vector_env():
    """reset() without a seed goes on with each sub-env's generator; reset_mask resets only those envs."""
    def run(vec):
        rng, out = np.random.default_rng(1), [vec.reset(seed=3)]
        for t in range(6):
            out.append(vec.step(rng.uniform(-1, 1, vec.action_space.shape)))
            if t == 2:
                out.append(vec.reset())
            if t == 4:
                out.append(vec.reset(options={"reset_mask": np.array([False, True, False])}))
        return out
    assert_same(run(gym.make_vec("FetchPickAndPlace-v0", num_envs=3)),
                run(gym.make_vec("FetchPickAndPlace-v0", num_envs=3, vectorization_mode="sync")))


@pytest.mark.parametrize("env_id", [i for i in envs.ENV_IDS if i.startswith("Fetch") and "Dense" not in i])
def test_batched_jacobians_are_mujocos(env_id):
    """The observation's site Jacobians, which the batch computes in numpy from its bound fields, equal MuJoCo's
    mj_jacSite on each simulation's MjData, bit for bit, in states along an episode (where the single env calls
    mj_jacSite itself)."""
    vec = gym.make_vec(env_id, num_envs=3)
    task = vec.task
    vec.reset(seed=2)
    jacp, jacr = np.zeros((3, task.model.nv)), np.zeros((3, task.model.nv))
    for actions in np.random.default_rng(2).uniform(-1, 1, (8, 3, 4)):
        vec.step(actions)
        jac = task._jacobians(vec.sims)
        for i in range(3):
            data = vec._batch.get_data(i)  # its MjData as the last step left it: fields one substep behind qpos
            mujoco.mj_jacSite(task.model, data, jacp, None, task._grip_site)
            np.testing.assert_array_equal(jac[i, 0:3], jacp)
            if task.has_object:
                mujoco.mj_jacSite(task.model, data, jacp, jacr, task._object_site)
                np.testing.assert_array_equal(jac[i, 3:6], jacp)
                np.testing.assert_array_equal(jac[i, 6:9], jacr)


@pytest.mark.parametrize("num_envs", [0, -2, 2.5, True])
def test_bad_num_envs_is_refused(num_envs):
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        gym.make_vec("FetchReach-v0", num_envs=num_envs)


def test_bad_actions_and_options_are_refused_by_name():
    vec = gym.make_vec("FetchReach-v0", num_envs=3)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(3, 4\)"):
        vec.step(np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(2, 4\), expected \(3, 4\)"):
        vec.step(np.zeros((2, 4)))
    for bad in (np.nan, np.inf, -np.inf):
        actions = np.zeros((3, 4))
        actions[2, 1] = bad
        with pytest.raises(ValueError, match=r"env\(s\) \[2\] contain NaN or inf"):
            vec.step(actions)
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['reset_mas'\]"):
        vec.reset(options={"reset_mas": np.ones(3, bool)})
    with pytest.raises(ValueError, match="reset_mask must be a bool array of shape"):
        vec.reset(options={"reset_mask": np.ones(2, bool)})
    with pytest.raises(ValueError, match="needs an int or 3 seeds"):
        vec.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="unknown reset option"):
        gym.make("FetchReach-v0").reset(options={"goal": [1, 2, 3]})  # the single env refuses them too
    vec.step(np.zeros((3, 4)))  # what was refused left the env usable


def test_an_unstable_simulation_is_named_and_the_others_go_on():
    vec, reference = gym.make_vec("FetchPush-v0", num_envs=3), gym.make_vec("FetchPush-v0", num_envs=3)
    vec.reset(seed=0), reference.reset(seed=0)
    vec.sims.qvel[1] = 1e12  # what a blown-up simulation looks like to MuJoCo
    actions = np.zeros((3, 4))
    with pytest.warns(RuntimeWarning, match="env 1: the simulation went unstable: MuJoCo warned mjWARN_BADQ"):
        obs, _, _, truncated, info = vec.step(actions)
    ref_obs, *_ = reference.step(actions)
    assert truncated.tolist() == [False, True, False] and info["sim_unstable"].tolist() == [False, True, False]
    for i in (0, 2):  # the others went on as if nothing had happened
        np.testing.assert_array_equal(obs["observation"][i], ref_obs["observation"][i])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the counters were cleared
        obs, reward, _, truncated, _ = vec.step(actions)  # env 1 autoresets
    assert not truncated.any() and reward[1] == 0.0 and np.isfinite(obs["observation"]).all()


def test_a_mujoco_error_names_the_env_and_its_message():
    vec = gym.make_vec("FetchPickAndPlace-v0", num_envs=3)
    vec.reset(seed=0)
    vec._batch.expand("eq_type")[1] = 99  # an unknown constraint type: MuJoCo raises in simulation 1's step
    with pytest.raises(RuntimeError, match=r"MuJoCo raised an error in env 1: .+\. Those envs kept their state"):
        vec.step(np.zeros((3, 4)))


def first_epoch(tmp_path, name, collection):
    """ddpg_her.py's first epoch (metrics.csv without its timings), collecting with `collection`."""
    patch = {"thread": "envs.make_vec = lambda env_id, num_envs, nthread: "
                       "envs.ThreadVectorEnv([lambda: gym.make(env_id)] * num_envs, nthread); ",
             "batch": ""}[collection]
    options = ["--env-id", "FetchPickAndPlace-v0", "--n-envs", "4", "--n-cycles", "3", "--n-batches", "3",
               "--batch-size", "64", "--n-epochs", "1", "--n-test-rollouts", "2", "--seed", "3", "--hidden", "64",
               "--torch-threads", "1", "--exp-name", name]
    code = (f"import sys, runpy, gymnasium as gym, envs, envs.vector; {patch}sys.argv = ['ddpg_her.py'] + {options!r}; "
            f"runpy.run_path({os.path.join(ROOT, 'ddpg_her.py')!r}, run_name='__main__')")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, timeout=300,
                   env={**os.environ, "WANDB_MODE": "disabled"})
    with open(glob.glob(os.path.join(tmp_path, "runs", f"*{name}*", "metrics.csv"))[0]) as f:
        timing = {"sps", "elapsed_s", "collect_s", "update_s", "test_s"}
        return [{k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(f)]


def test_training_collects_as_before_the_batched_env(tmp_path):
    """The same seed gives the same first epoch (successes, Q, losses) with the batched env as with the threads
    over single envs that collected before it (envs.ThreadVectorEnv, equal to SyncVectorEnv above)."""
    with open(os.path.join(ROOT, "ddpg_her.py")) as f:
        assert "envs.make_vec(" in f.read()  # what the patch below replaces
    batched = first_epoch(tmp_path, "batch", "batch")
    assert batched == first_epoch(tmp_path, "thread", "thread")
    assert float(batched[0]["critic_loss"]) > 0
