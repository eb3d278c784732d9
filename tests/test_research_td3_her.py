"""research/td3_her.py: a smoke run with resume and evaluation, and TD3's three changes as unit tests on its functions
(clipped double-Q target at the smoothed target action, both critics on that target, delayed actor updates on Q1)."""

import copy
import runpy
import signal
import sys

import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY  # the tiny budget

td3, SCRIPT, run = load_fork("td3_her")  # the module, its path, test_ddpg_her.py's runner on it

DIM_X, DIM_U, MAX_U, B = 7, 3, 2.0, 512  # max_u = 2: noise that is not scaled by max_u shows


def test_runs_resumes_exactly_and_evaluates(tmp_path):
    _, resumed = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, [*TINY, "--env-threads", "1"], (
        "actor", "critic1", "critic2", "actor_target", "critic1_target", "critic2_target", "normalizer"))
    assert set(resumed["state"]) >= {"actor_optimizer", "critic_optimizer"}


def test_a_bad_option_is_refused(tmp_path):  # (one: each run costs seconds of imports)
    proc = run(tmp_path, "--policy-frequency", "0", check=False)
    assert proc.returncode != 0 and "--policy-frequency must be >= 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_script_steps_the_actor_on_critic1(tmp_path, monkeypatch):
    """The main loop's wiring, which the unit tests below cannot see: a tiny run in this process (runpy keeps the
    script's globals), recording each network that an actor step freezes for its dQ/du. TD3's actor follows Q1."""
    frozen, requires_grad_ = [], torch.nn.Module.requires_grad_

    def recording(module, requires_grad=True):
        if not requires_grad:
            frozen.append(module)
        return requires_grad_(module, requires_grad)

    monkeypatch.setattr(torch.nn.Module, "requires_grad_", recording)
    monkeypatch.setattr(sys, "argv", [SCRIPT, *TINY, "--env-threads", "1", "--n-epochs", "1"])
    monkeypatch.chdir(tmp_path)
    handlers, threads = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}, torch.get_num_threads()
    try:
        with torch.random.fork_rng():  # (the run seeds torch's global generator)
            script = runpy.run_path(SCRIPT, run_name="__main__")
    finally:  # the run's Ctrl-C handling and thread count are this process's now: give them back
        for s, handler in handlers.items():
            signal.signal(s, handler)
        torch.set_num_threads(threads)
    script["run"].log_file.close()
    a = script["args"]
    assert len(frozen) == a.n_cycles * (a.n_batches // a.policy_frequency)  # each cycle: one per policy_frequency
    assert all(net is script["critic1"] for net in frozen), frozen


def make_nets(seed=0):
    """actor, critic1, critic2 and their targets, all different (fresh weights, not copies), the actor target's
    actions pushed towards +max_u, -max_u and 0 in its three dimensions (so that some smoothed actions are clipped)."""
    torch.manual_seed(seed)
    nets = [td3.Actor(DIM_X, DIM_U, 16, 2, MAX_U), td3.Critic(DIM_X, DIM_U, 16, 2, MAX_U),
            td3.Critic(DIM_X, DIM_U, 16, 2, MAX_U), td3.Actor(DIM_X, DIM_U, 16, 2, MAX_U),
            td3.Critic(DIM_X, DIM_U, 16, 2, MAX_U), td3.Critic(DIM_X, DIM_U, 16, 2, MAX_U)]
    with torch.no_grad():
        nets[3].net[-1].bias.copy_(torch.tensor([2.0, -2.0, 0.0]))
    return tuple(nets)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, B, DIM_X, generator=g)
    u = (torch.rand(B, DIM_U, generator=g) * 2 - 1) * MAX_U
    r = -(torch.rand(B, 1, generator=g) < 0.5).float()  # 0 or -1, as the Fetch rewards
    return x, u, r


def smoothed_by_hand(actor_target, x_next, sigma, c, seed):
    torch.manual_seed(seed)
    eps = torch.randn(len(x_next), DIM_U)  # the draw torch.randn_like(actions) makes after the same seed
    with torch.no_grad():
        pi = actor_target(x_next)
    return pi, (pi + (eps * sigma).clamp(-c, c) * MAX_U).clamp(-MAX_U, MAX_U)


def test_target_policy_smoothing_clips_noise_then_action():
    actor_target, (x, _, _) = make_nets()[3], batch()
    sigma, c = 1.0, 0.75  # noise up to +-c*max_u = 1.5 around actions near +-1.93 and 0
    torch.manual_seed(7)
    with torch.no_grad():
        a = td3.target_action(actor_target, x[1], sigma, c)
    pi, expected = smoothed_by_hand(actor_target, x[1], sigma, c, seed=7)
    torch.testing.assert_close(a, expected)
    assert a.abs().max() <= MAX_U and (a.abs() == MAX_U).float().mean() > 0.2  # the action is clipped to +-max_u
    noise = (a - pi)[:, 2]  # the dimension whose actions stay inside the range: the noise itself
    assert noise.abs().max() == pytest.approx(c * MAX_U)  # clipped to +-noise_clip * max_u, reached often
    assert (noise.abs() > c * MAX_U - 1e-5).float().mean() > 0.3 and noise.std() > 0.5
    torch.manual_seed(7)
    with torch.no_grad():
        torch.testing.assert_close(td3.target_action(actor_target, x[1], 0.0, c), pi)  # sigma 0: pi'(o')


def test_target_is_min_of_the_two_target_critics_at_the_smoothed_action():
    nets, (x, _, r) = make_nets(), batch()
    gamma, clip_return, sigma, c = 0.98, 50.0, 0.2, 0.5
    torch.manual_seed(3)
    with torch.no_grad():
        target = td3.td3_target(nets, x[1], r, gamma, clip_return, sigma, c)
        _, a = smoothed_by_hand(nets[3], x[1], sigma, c, seed=3)
        q1, q2 = nets[4](x[1], a), nets[5](x[1], a)
        q_at_pi = torch.min(nets[4](x[1], nets[3](x[1])), nets[5](x[1], nets[3](x[1])))
    expected = (r + gamma * torch.min(q1, q2)).clamp(-clip_return, 0.0)
    torch.testing.assert_close(target, expected)
    # The checks have teeth: either target critic is the smaller on many samples (so Q1', Q2' or max differ from
    # min) and the smoothing noise changes the target.
    assert 0.2 < (q1 < q2).float().mean() < 0.8
    assert not torch.allclose(expected, (r + gamma * torch.max(q1, q2)).clamp(-clip_return, 0.0))
    assert not torch.allclose(expected, (r + gamma * q_at_pi).clamp(-clip_return, 0.0))
    with torch.no_grad():  # rewards out of the range of returns, to see the clip
        assert td3.td3_target(nets, x[1], r + 100, gamma, clip_return, sigma, c).max() == 0.0
        assert td3.td3_target(nets, x[1], r - 100, gamma, clip_return, sigma, c).min() == -clip_return


def sgd_step_by_hand(net, loss_fn, lr):
    params = list(net.parameters())
    grads = torch.autograd.grad(loss_fn(), params)
    return [p.detach() - lr * g for p, g in zip(params, grads)]


def test_both_critics_regress_to_the_shared_target_and_nothing_else_moves():
    nets, (x, u, r) = make_nets(), batch()
    before = copy.deepcopy(nets)
    gamma, clip_return, sigma, c, lr = 0.98, 50.0, 0.2, 0.5, 0.1
    torch.manual_seed(5)
    with torch.no_grad():
        target = td3.td3_target(before, x[1], r, gamma, clip_return, sigma, c)
    expected = [sgd_step_by_hand(before[i], lambda i=i: torch.nn.functional.mse_loss(before[i](x[0], u), target), lr)
                for i in (1, 2)]
    optimizer = torch.optim.SGD(list(nets[1].parameters()) + list(nets[2].parameters()), lr=lr)
    torch.manual_seed(5)
    loss, q = td3.critic_update(nets, optimizer, x, u, r, gamma, clip_return, sigma, c)
    for i in (1, 2):
        for p, e in zip(nets[i].parameters(), expected[i - 1]):
            torch.testing.assert_close(p.detach(), e)
    with torch.no_grad():
        losses = [torch.nn.functional.mse_loss(before[i](x[0], u), target) for i in (1, 2)]
        torch.testing.assert_close(loss, (losses[0] + losses[1]) / 2)
        torch.testing.assert_close(q, before[1](x[0], u).mean())
    for i in (0, 3, 4, 5):  # the actor and the target networks are not the critic step's
        for p, p0 in zip(nets[i].parameters(), before[i].parameters()):
            assert torch.equal(p, p0)


def test_actor_follows_q1_only_with_the_action_l2_penalty():
    nets, (x, _, _) = make_nets(), batch()
    actor, critic1 = nets[0], nets[1]
    before = copy.deepcopy(nets)
    lr, action_l2 = 0.1, 1.0

    def loss_by_hand():
        pi = before[0](x[0])
        return -before[1](x[0], pi).mean() + action_l2 * (pi / MAX_U).square().mean()

    expected = sgd_step_by_hand(before[0], loss_by_hand, lr)
    loss = td3.actor_update(actor, critic1, torch.optim.SGD(actor.parameters(), lr=lr), x[0], action_l2)
    torch.testing.assert_close(loss, loss_by_hand().detach())
    for p, e in zip(actor.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)
    for i in (1, 2, 3, 4, 5):
        for p, p0 in zip(nets[i].parameters(), before[i].parameters()):
            assert torch.equal(p, p0)
    assert all(p.requires_grad for p in critic1.parameters())  # the critic trains again at its next step


@pytest.mark.parametrize("n, policy_frequency", [(4, 2), (6, 3), (3, 1)])
def test_the_actor_moves_only_at_every_policy_frequency_th_update(n, policy_frequency):
    """The real steps, as the script wires them: each critic step writes the batch that the actor step reads."""
    nets, (x, u, r) = make_nets(), batch()
    actor_optimizer = torch.optim.Adam(nets[0].parameters(), lr=1e-3)
    critic_optimizer = torch.optim.Adam(list(nets[1].parameters()) + list(nets[2].parameters()), lr=1e-3)
    obs, actors, critics = torch.zeros(B, DIM_X), [], []

    def snapshot(net):
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    def critic_step():  # records the actor as the previous update left it
        actors.append(snapshot(nets[0]))
        td3.critic_update(nets, critic_optimizer, x, u, r, 0.98, 50.0, 0.2, 0.5)
        critics.append(snapshot(nets[1]))
        obs.copy_(x[0])

    def actor_step():
        td3.actor_update(nets[0], nets[1], actor_optimizer, obs, 1.0)

    td3.updates(n, policy_frequency, critic_step, actor_step)
    actors.append(snapshot(nets[0]))
    assert len(critics) == n and all(not torch.equal(a, b) for a, b in zip(critics, critics[1:]))  # every update
    moved = [not torch.equal(a, b) for a, b in zip(actors, actors[1:])]  # moved[i]: in update i + 1
    assert moved == [(i + 1) % policy_frequency == 0 for i in range(n)], moved
