"""research/ddpg_her_unbiased.py (the paper's "Unbiased HER": a teleport action that HER makes look perfect, and an
importance-sampling correction): a tiny run resumed exactly and evaluated; --correction none is ddpg_her.py, run for
run; the teleport action by hand (one more action dimension, fired above its threshold only, a random point of the
goal space, absorbing); the importance weights by hand on a small case; the critic's loss weighted by them; and the
options refused."""

import copy
import csv
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TIMING, TINY, run_dir
from test_ddpg_her import run as run_script

import ddpg_her
import envs

fork, SCRIPT, run = load_fork("ddpg_her_unbiased")  # the module, its path, test_ddpg_her.py's runner on it
OPTIONS = [*TINY, "--env-threads", "1"]
NETS = ("actor", "critic", "actor_target", "critic_target", "normalizer")


def rows(path):  # metrics.csv as dicts of strings, timing columns aside
    with open(os.path.join(path, "metrics.csv")) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def test_tiny_run_resumes_exactly_and_evaluates_and_correction_none_is_ddpg_her(tmp_path):
    check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, OPTIONS, NETS)  # --correction is, the default
    weighted = rows(run_dir(tmp_path, "whole"))
    assert all(0.0 < float(row["is_ess"]) < 1.0 for row in weighted)  # the weights are on, and not all equal
    assert all(row["test_teleport_rate"] == row["train_teleport_rate"] == "0.0" for row in weighted)
    # --correction none: ddpg_her.py's run, bit for bit (the same metrics, the same networks at the end)
    run(tmp_path, *OPTIONS, "--n-epochs", "1", "--exp-name", "none", "--correction", "none")
    run_script(tmp_path, *OPTIONS, "--n-epochs", "1", "--exp-name", "baseline")
    none, baseline = rows(run_dir(tmp_path, "none")), rows(run_dir(tmp_path, "baseline"))
    assert [{k: row[k] for k in baseline[0]} for row in none] == baseline
    assert none[0]["is_ess"] == "1.0"
    a, b = (torch.load(os.path.join(run_dir(tmp_path, name), "checkpoint.pt"), weights_only=False)["state"]
            for name in ("none", "baseline"))
    for name in NETS:
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), (name, key)
    # ... and --correction is is not: from its first updates, other losses
    assert weighted[0]["critic_loss"] != none[0]["critic_loss"] and weighted[0]["actor_loss"] != none[0]["actor_loss"]


def test_tiny_teleport_run_has_one_more_action_and_logs_its_rate(tmp_path):
    # 32 exploring episodes: at the default threshold 0.93 about 40% teleport (0.41 at a policy output of 0)
    run(tmp_path, *OPTIONS, "--n-envs", "8", "--n-cycles", "4", "--n-epochs", "1", "--exp-name", "tele", "--teleport")
    path = run_dir(tmp_path, "tele")
    (row,) = rows(path)
    assert row["episodes"] == "32" and 0.1 < float(row["train_teleport_rate"]) < 0.9
    assert 0.0 <= float(row["test_teleport_rate"]) <= 1.0
    # threshold 0, the first version: exploration's random actions teleport half the time, every step
    run(tmp_path, *OPTIONS, "--n-epochs", "1", "--exp-name", "tele0", "--teleport", "--teleport-threshold", "0")
    assert float(rows(run_dir(tmp_path, "tele0"))[0]["train_teleport_rate"]) > 0.9
    state = torch.load(os.path.join(path, "checkpoint.pt"), weights_only=False)["state"]
    assert state["actor"]["net.6.weight"].shape[0] == 5  # FetchReach's 4 actions and the teleport
    assert state["critic"]["net.0.weight"].shape[1] == 10 + 3 + 5


def make_teleport_env(n, threshold=0.93):
    env = gym.make("FetchReach-v0")
    obs = env.reset(seed=0)[0]
    ag_slice = fork.goal_slice(obs["observation"], obs["achieved_goal"])
    assert ag_slice == slice(0, 3)  # FetchReach: the gripper's position
    vec = fork.TeleportVectorEnv(envs.make_vec("FetchReach-v0", n, 1), lambda rng: env.unwrapped._sample_goal(rng=rng),
                                 ag_slice, env.unwrapped.compute_reward, env.unwrapped._is_success, threshold)
    return vec, env.unwrapped


def test_teleport_jumps_to_a_random_point_and_stays_there():
    n, T, h = 3, 50, 0.5
    vec, task = make_teleport_env(n, h)
    plain = envs.make_vec("FetchReach-v0", n, 1)  # the same envs without the teleport
    rng = np.random.default_rng(0)
    for episode in range(2):  # the second: reset clears the teleports
        seed = 11 if episode == 0 else None
        obs, plain_obs = vec.reset(seed=seed)[0], plain.reset(seed=seed)[0]
        for k in obs:
            np.testing.assert_array_equal(obs[k], plain_obs[k])
        at = {0: 1, 2: 3}  # env 0 teleports at step 1, env 2 at step 3, env 1 never
        frozen = {}
        for t in range(T):  # the teleport dimension above 0 but not above the threshold h does nothing
            u = rng.uniform(-1, 1, (n, 5))
            u[:, -1] = [0.6 if t == at[0] else h if t < at[0] else rng.uniform(-1, 1), rng.uniform(-1, h),
                        0.51 if t == at[2] else 0.3 if t < at[2] else rng.uniform(-1, 1)]
            before = vec.teleported.copy()
            obs, reward, _, truncated, info = vec.step(u)
            plain_obs = plain.step(np.where(before[:, None], 0.0, u[:, :4]))[0]  # (once teleported: ignored)
            np.testing.assert_array_equal(vec.teleported, [t >= at[0], False, t >= at[2]])
            for i in range(n):
                if not vec.teleported[i]:  # as the plain env, with the first 4 actions
                    for k in obs:
                        np.testing.assert_array_equal(obs[k][i], plain_obs[k][i])
                    continue
                if t == at[i]:  # the jump: the achieved goal, and the observation's copy of it, elsewhere
                    frozen[i] = obs["observation"][i].copy()
                    np.testing.assert_array_equal(frozen[i][3:], plain_obs["observation"][i][3:])
                    assert np.linalg.norm(frozen[i][:3] - plain_obs["achieved_goal"][i]) > 1e-3
                    assert np.abs(frozen[i][:3] - task.initial_gripper_xpos).max() <= task.target_range  # a goal
                # absorbing: the same observation and achieved goal to the end, whatever the actions
                np.testing.assert_array_equal(obs["observation"][i], frozen[i])
                np.testing.assert_array_equal(obs["achieved_goal"][i], frozen[i][:3])
            d = np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"], axis=1)  # reward and success at the point
            np.testing.assert_array_equal(reward, -(d > 0.05).astype(np.float64))
            np.testing.assert_array_equal(info["is_success"], (d < 0.05).astype(np.float32))
        assert truncated.all()
        assert not np.array_equal(frozen[0][:3], frozen[2][:3])  # random points, one per teleport
        for i in (0, 2):
            assert np.linalg.norm(frozen[i][:3] - obs["desired_goal"][i]) > 1e-3  # not the episode's own goal


def test_teleport_points_are_the_task_goal_distribution():
    n = 8
    vec, task = make_teleport_env(n)
    points, goals = [], []
    for episode in range(25):
        obs = vec.reset(seed=5 if episode == 0 else None)[0]
        obs = vec.step(np.ones((n, 5)))[0]  # everyone teleports at once
        points.append(obs["achieved_goal"].copy())
        goals.append(obs["desired_goal"].copy())
    points, goals = np.concatenate(points), np.concatenate(goals)
    offset = points - task.initial_gripper_xpos
    assert np.abs(offset).max() <= 0.15 and (offset.max(0) - offset.min(0) > 0.25).all()  # the whole 0.3 m box
    assert np.abs(offset.mean(0)).max() < 0.03 and np.abs(offset.std(0) - 0.3 / 12**0.5).max() < 0.02  # uniform
    assert np.linalg.norm(points - goals, axis=1).min() > 1e-6  # never the desired goal itself
    assert np.mean(np.linalg.norm(points - goals, axis=1) < 0.05) < 0.05  # a teleport almost never succeeds


def test_importance_weights_by_hand():
    # One episode of T = 4 steps, 2-d goals; eps = 0.5, her_future_p f = 0.8.
    ag = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    ep = dict(ag=ag, u=torch.zeros(1, 4, 1))
    e, t = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 2, 1, 3])
    g = torch.tensor([[1.0, 0.0], [2.0, 0.0], [5.0, 0.0], [1.0, 0.1]])
    task_goals = torch.tensor([[5.0, 0.0], [5.0, 0.2], [1.0, 0.3], [9.0, 9.0]])
    # M_task: [1/4, 0, 2/4, 1/4]. M_future (steps t+1..T): row 0: 3 of 4 (steps 1-3); row 1: 1 of 2 (step 4);
    # row 2: 0 of 3; row 3: 0 of 1 (step 3 is near [1, 0.1] but is the transition's own step, not its future).
    # w = M_task / (0.2 M_task + 0.8 M_future): [0.25 / 0.65, 0, 5, 5], whose mean is 135/52.
    w = fork.importance_weights(ep, e, t, g, task_goals, 0.8, 0.5)
    torch.testing.assert_close(w, torch.tensor([4 / 27, 0.0, 52 / 27, 52 / 27]))
    # f = 0 (no relabelling: every goal is a desired goal, a task goal): all 1
    torch.testing.assert_close(fork.importance_weights(ep, e, t, task_goals, task_goals, 0.0, 0.5), torch.ones(4))
    # an absorbing teleport, its future all at g, beside a desired goal that the episode never came near
    ep = dict(ag=torch.tensor([[[0.0, 0.0]] + [[3.0, 3.0]] * 4]), u=torch.zeros(1, 4, 1))
    w = fork.importance_weights(ep, torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([[3.0, 3.0], [0.0, 1.0]]),
                                torch.tensor([[3.0, 3.2]] + [[0.0, 1.0]] * 9), 0.8, 0.5)
    # M_task 0.1 and 0.9; M_future 1 and 0: [0.1 / 0.82, 1 / 0.2] / mean
    raw = torch.tensor([0.1 / 0.82, 5.0])
    torch.testing.assert_close(w, raw / raw.mean())


def nets_and_batch(B=64, dim_x=7, dim_u=3):
    torch.manual_seed(0)
    actor, critic = fork.Actor(dim_x, dim_u, 32, 2, 1.0), fork.Critic(dim_x, dim_u, 32, 2, 1.0)
    nets = (actor, critic, copy.deepcopy(actor), copy.deepcopy(critic))
    optimizer = torch.optim.Adam([dict(params=actor.parameters(), lr=1e-3), dict(params=critic.parameters(), lr=1e-3)])
    norm = fork.Normalizer(dim_x, 0.01, 200.0, 5.0)
    gen = torch.Generator().manual_seed(1)
    x, u = torch.randn(2, B, dim_x, generator=gen), torch.rand(B, dim_u, generator=gen) * 2 - 1
    r = -(torch.rand(B, 1, generator=gen) < 0.7).float()
    return nets, optimizer, norm, x, u, r


def test_the_critic_loss_is_weighted_and_unweighted_is_ddpg_hers():
    nets, optimizer, norm, x, u, r = nets_and_batch()
    w = torch.rand(64, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():  # by hand
        xn = norm(x)
        target = (r + 0.98 * nets[3](xn[1], nets[2](xn[1]))).clamp(-50.0, 0.0)
        q = nets[1](xn[0], u)
    by_hand, unweighted = (w[:, None] * (q - target) ** 2).mean(), ((q - target) ** 2).mean()
    assert abs(by_hand - unweighted) > 0.05 * unweighted
    stats = fork.update(nets, optimizer, norm, x, u, r, w, 0.98, 50.0, 1.0)
    assert stats[1].item() == pytest.approx(by_hand.item(), rel=1e-5)
    # w = None: ddpg_her.py's update, the same step bit for bit
    a, b = nets_and_batch(), nets_and_batch()
    torch.testing.assert_close(fork.update(*a[:6], None, 0.98, 50.0, 1.0), ddpg_her.update(*b[:6], 0.98, 50.0, 1.0),
                               rtol=0, atol=0)
    for net_a, net_b in zip(a[0], b[0]):
        for p_a, p_b in zip(net_a.parameters(), net_b.parameters()):
            assert torch.equal(p_a, p_b)


@pytest.mark.parametrize("options, message", [
    (["--teleport", "--env-id", "HandReach-v0", "--correction", "none"],
     "--teleport draws its points from a Fetch task's goal distribution; HandReach-v0 is not one"),
    (["--teleport", "--save-model"], "--teleport adds an action that evaluate.py's env (the plain task) does not have"),
    (["--teleport", "--capture-video"], "run without --save-model and --capture-video"),
    (["--env-id", "HandManipulateBlockRotateZ-v0"], "which HandManipulateBlockRotateZ-v0's reward is not"),
    (["--correction", "usher"], "--correction"),
    (["--teleport", "--teleport-threshold", "1"], "--teleport-threshold 1.0: must be in [0, 1)"),
    (["--teleport", "--teleport-threshold", "-0.1"], "--teleport-threshold -0.1: must be in [0, 1)"),
])
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *OPTIONS, *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
