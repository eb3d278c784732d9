"""research/ddpg_her_gamma_eps.py (the paper's "richer value functions": gamma and epsilon as inputs): a tiny run
resumed exactly and evaluated; each replayed transition's own gamma and epsilon, by hand: its reward recomputed at its
epsilon, its target bootstrapped and clipped with its gamma, their distributions and the networks' inputs; acting
with the task's own; and the options refused."""

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY  # the tiny budget

import envs

fork, SCRIPT, run = load_fork("ddpg_her_gamma_eps")  # the module, its path, test_ddpg_her.py's runner on it
HORIZONS, EPS = (5.0, 200.0), (0.01, 0.1)  # the defaults


def test_tiny_run_resumes_exactly_and_evaluates_with_the_tasks_gamma_and_epsilon(tmp_path):
    whole, _ = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, [*TINY, "--env-threads", "1"], (
        "actor", "critic", "actor_target", "critic_target", "normalizer"))
    task = fork.cond_inputs(torch.tensor([0.98]), torch.tensor([0.05]), HORIZONS, EPS)  # FetchReach: T = 50, 5 cm
    torch.testing.assert_close(whole["state"]["actor"]["task_cond"], task)
    torch.testing.assert_close(task, torch.tensor([math.log(50) / math.log(200), 0.5]))


@pytest.mark.parametrize("env_id", ["FetchPush-v0", "HandReach-v0"])
def test_reward_is_recomputed_at_each_transitions_epsilon(env_id):
    env = gym.make(env_id).unwrapped
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4000, env.observation_space["desired_goal"].shape[0]))
    ag = g + rng.normal(size=g.shape) * env.distance_threshold
    d = envs.goal_distance(ag, g)
    eps = rng.uniform(*EPS, size=(4000, 1))
    r = fork.thresholded_reward(torch.from_numpy(ag), torch.from_numpy(g), torch.from_numpy(eps))
    assert r.shape == (4000, 1)
    np.testing.assert_array_equal(r[:, 0].numpy(), -(d > eps[:, 0]).astype(np.float32))  # its own epsilon, by hand
    assert 0.2 < (r == 0).float().mean() < 0.8  # both outcomes, and they depend on eps:
    at_task = fork.thresholded_reward(torch.from_numpy(ag), torch.from_numpy(g), torch.full((4000, 1),
                                                                                              env.distance_threshold))
    np.testing.assert_array_equal(at_task[:, 0].numpy(), env.compute_reward(ag, g, {}))  # the task's, at its epsilon
    assert (at_task != r).float().mean() > 0.1


def test_target_bootstraps_and_clips_with_each_transitions_gamma():
    B, dim_x, dim_u = 256, 7, 2
    torch.manual_seed(0)
    actor, critic = fork.Actor(dim_x, dim_u, 32, 2, 1.0), fork.Critic(dim_x, dim_u, 32, 2, 1.0)
    critic_target = copy.deepcopy(critic)
    with torch.no_grad():  # target Q-values near -30: below the clip's -1/(1-gamma) for the short horizons
        critic_target.net[-1].bias.fill_(-30.0)
    nets = (actor, critic, copy.deepcopy(actor), critic_target)
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    norm = fork.Normalizer(dim_x, 0.01, 200.0, 5.0)
    g = torch.Generator().manual_seed(1)
    x, u = torch.randn(2, B, dim_x, generator=g).clamp(-3, 3), torch.rand(B, dim_u, generator=g) * 2 - 1
    r = -(torch.rand(B, 1, generator=g) < 0.7).float()
    gamma, eps, cond = fork.conditions(B, True, True, 0.98, 0.05, HORIZONS, EPS, "cpu")
    with torch.no_grad():  # by hand: each row's own gamma, in the bootstrap and in the clip
        xc = torch.cat([x, cond.expand(2, B, 2)], -1)
        q_next = critic_target(xc[1], nets[2](xc[1]))
        target = torch.clamp(r + gamma * q_next, max=0.0)
        target = torch.where(target < -1 / (1 - gamma), -1 / (1 - gamma), target)
        q = critic(xc[0], u)
    clipped = (r + gamma * q_next < -1 / (1 - gamma)).float().mean()
    assert 0.2 < clipped < 0.9  # the clip binds for some rows and not for others
    stats = fork.update(nets, optimizer, norm, x, u, r, gamma, cond, True, 1.0)
    assert stats[1].item() == pytest.approx(((q - target) ** 2).mean().item(), rel=1e-5)
    assert stats[2].item() == pytest.approx(q.mean().item(), rel=1e-5)


def test_gammas_and_epsilons_drawn_and_their_inputs():
    torch.manual_seed(0)
    n = 200_000
    gamma, eps, cond = fork.conditions(n, True, True, 0.98, 0.05, HORIZONS, EPS, "cpu")
    horizon = 1 / (1 - gamma.double())
    u = (horizon.log() - math.log(5)) / math.log(40)  # log-uniform horizon: uniform in [0, 1] on the log scale
    assert u.min() > -1e-4 and u.max() < 1 + 1e-4 and abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    v = (eps - 0.01) / 0.09
    assert v.min() >= 0 and v.max() <= 1 and abs(v.mean() - 0.5) < 0.005
    torch.testing.assert_close(cond, torch.cat([horizon.log().float() / math.log(200), eps / 0.1], 1), rtol=1e-4,
                               atol=1e-5)
    gamma, eps, _ = fork.conditions(8, False, False, 0.98, 0.05, HORIZONS, EPS, "cpu")
    assert (gamma == torch.tensor(0.98)).all() and (eps == torch.tensor(0.05)).all()  # not drawn: the task's


def test_the_actor_acts_with_the_tasks_conditions_on_o_and_g():
    torch.manual_seed(0)
    actor = fork.Actor(5, 2, 16, 2, 1.0)
    actor.task_cond.copy_(torch.tensor([0.7, 0.5]))
    x = torch.randn(4, 5)
    torch.testing.assert_close(actor(x), actor(torch.cat([x, torch.tensor([[0.7, 0.5]]).expand(4, 2)], 1)))
    assert not torch.allclose(actor(x), actor(torch.cat([x, torch.zeros(4, 2)], 1)))


@pytest.mark.parametrize("options, message", [
    (["--horizon-range", "10", "5"], "--horizon-range needs 1 <= min < max"),
    (["--eps-range", "0", "0.1"], "--eps-range 0 < min < max"),
    (["--horizon-range", "60", "100"], "the task's horizon 1/(1-gamma) = 50 is outside --horizon-range (60.0, 100.0)"),
    (["--eps-range", "0.06", "0.1"], "the task's success threshold 0.05 is outside --eps-range (0.06, 0.1)"),
    (["--env-id", "HandManipulateBlockRotateZ-v0"], "which HandManipulateBlockRotateZ-v0's is not"),
])
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *TINY, "--env-threads", "1", *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
