"""research/ddpg_her_nstep.py: a smoke run with resume and evaluation, and the n-step target as unit tests on its
functions: n=1 is ddpg_her.py's target, a 3-step target computed by hand (rewards from compute_reward under the
relabelled goal, bootstrap from o[t+k]), the cut at the episode's end, and MHER(lambda), lambda=0 being 1-step."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY  # the tiny budget

import ddpg_her

fork, SCRIPT, run = load_fork("ddpg_her_nstep")  # the module, its path, test_ddpg_her.py's runner on it

ENV = gym.make("FetchReach-v0").unwrapped  # compute_reward: 0 within 0.05 of the goal, else -1
GAMMA, CLIP = 0.98, 50.0  # FetchReach's gamma = 1 - 1/T and clip_return = 1/(1 - gamma)


# ---- the target ---------------------------------------------------------------------------------------------------
def recorded_targets(monkeypatch):
    """Both scripts regress Q on the target with F.mse_loss(q, target): record each target they compute."""
    targets, mse_loss = [], torch.nn.functional.mse_loss
    monkeypatch.setattr(torch.nn.functional, "mse_loss", lambda q, target: targets.append(target.clone()) or
                        mse_loss(q, target))
    return targets


def walk_episodes(n_eps=8, T=50, seed=0):
    """FetchReach-shaped episodes (o: 10, goals: 3, u: 4) whose achieved goal walks by about 2 cm a step, so that
    relabelled goals within 5 cm (reward 0) are common, a few steps apart."""
    rng = np.random.default_rng(seed)
    ag = 1.0 + np.cumsum(rng.normal(0, 0.015, (n_eps, T + 1, 3)), 1)
    o = np.concatenate([ag, rng.normal(0, 1, (n_eps, T + 1, 7))], 2)
    g = np.repeat(ag[:, -1:] + rng.normal(0, 0.03, (n_eps, 1, 3)), T, 1)  # the desired goal: near the final state
    u = rng.uniform(-1, 1, (n_eps, T, 4))
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in dict(o=o, ag=ag, g=g, u=u).items()}


def one_update(module, nets, norm, ep, n_eps, n_step=1, mher_lambda=None, seed=3, batch_size=1024):
    """A batch sampled with `seed` and one update of `module` (ddpg_her or the fork), as its train_batch does."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    if module is ddpg_her:
        x, u, ag_next = ddpg_her.sample_transitions(ep, n_eps, batch_size, 0.8)
        r = ENV.compute_reward(ag_next, x[0, :, 10:], {}).float()[:, None]
        stats = ddpg_her.update(nets, optimizer, norm, x, u, r, GAMMA, CLIP, 1.0)
    else:
        x, u, ag_next, k = fork.sample_transitions(ep, n_eps, batch_size, 0.8, n_step, mher_lambda is not None)
        r, discount = fork.n_step_returns(ENV.compute_reward, ag_next, x[0, :, 10:], k, GAMMA, mher_lambda)
        stats = fork.update(nets, optimizer, norm, x, u, r, discount, CLIP, 1.0)
    return x, stats


def networks_and_normalizer(ep):
    torch.manual_seed(0)
    nets = [fork.Actor(13, 4, 16, 2, 1.0), fork.Critic(13, 4, 16, 2, 1.0)]
    nets = (*nets, *copy.deepcopy(nets))
    with torch.no_grad():  # targets unlike the main networks, and Q' of both signs: not all targets clip to 0
        for p in nets[2].parameters():
            p.add_(0.3 * torch.randn_like(p))
        nets[3].net[-1].bias.fill_(-0.2)
    norm = fork.Normalizer(13, 0.01, 200.0, 5.0)
    norm.update(torch.cat([ep["o"][:, :-1], ep["g"]], 2).flatten(0, 1))
    return nets, norm


@pytest.mark.parametrize("n_step, mher_lambda", [(1, None), (1, 0.7), (3, 0.0)])
def test_one_step_and_mher_lambda_zero_are_ddpg_her_target(monkeypatch, n_step, mher_lambda):
    """On the same batch (same seed): n=1, with or without MHER, and MHER(lambda=0) at n=3 regress on exactly
    ddpg_her.py's 1-step target r(ag[t+1], g') + gamma Q'(o[t+1], g', pi'(o[t+1])), and take the same step."""
    ep = walk_episodes()
    nets, norm = networks_and_normalizer(ep)
    targets = recorded_targets(monkeypatch)
    nets_base, nets_fork = copy.deepcopy(nets), copy.deepcopy(nets)
    x_base, stats_base = one_update(ddpg_her, nets_base, norm, ep, 8)
    x_fork, stats_fork = one_update(fork, nets_fork, norm, ep, 8, n_step, mher_lambda)
    torch.testing.assert_close(x_fork[:2], x_base, rtol=0, atol=0)  # the same transitions and goals
    base, ours = targets
    assert (base < -0.5).any() and ((base > -0.5) & (base < 0)).any()  # rewards 0 and -1, bootstraps not clipped
    torch.testing.assert_close(ours, base, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats_fork, stats_base, rtol=1e-5, atol=1e-6)
    for a, b in zip(nets_fork[:2], nets_base[:2]):
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # ...while the plain 3-step target on that batch is another one (the data tells the targets apart).
    one_update(fork, copy.deepcopy(nets), norm, ep, 8, n_step=3)
    assert (targets[-1] - base).abs().max() > 0.1


# A tiny deterministic set of episodes, T = 6: o[e, t] = (e, t, 1, 1); the achieved goals move along x by 0, 0.1 or
# 0.2 m a step (some stay put: more than one step achieves a relabelled goal); episode 0's desired goal is achieved
# at step 3 only, episode 1's never.
T_TINY, N_TINY = 6, 2
AG_X = [[0.0, 0.1, 0.1, 0.2, 0.3, 0.3, 0.5], [0.0, 0.0, 0.2, 0.3, 0.3, 0.3, 0.4]]
DESIRED = [[0.2, 0.0, 0.0], [5.0, 5.0, 5.0]]


def tiny_episodes():
    t = np.arange(T_TINY + 1, dtype=np.float32)
    o = np.stack([np.stack([np.full_like(t, e), t, np.ones_like(t), np.ones_like(t)], 1) for e in range(N_TINY)])
    ag = np.stack([np.stack([np.array(x, np.float32), 0 * t, 0 * t], 1) for x in AG_X])
    g = np.repeat(np.array(DESIRED, np.float32)[:, None], T_TINY, 1)
    u = np.zeros((N_TINY, T_TINY, 2), np.float32)
    return {k: torch.from_numpy(v) for k, v in dict(o=o, ag=ag, g=g, u=u).items()}


def pi_stub(o):  # pi'(o) of the stub target actor below, on one observation: depends on the step t = o[1]
    return np.array([0.05 * o[1], -0.05])


def q_stub(o, g, u):  # Q'(o, g, u) of the stub target critic: depends on the state's step, the goal and the action
    return -(0.1 + 0.01 * o[1] + 0.3 * g[0] + u[0])


class StubActor(torch.nn.Module):
    def forward(self, x):
        return torch.stack([0.05 * x[:, 1], torch.full_like(x[:, 1], -0.05)], 1)


class StubCritic(torch.nn.Module):
    def forward(self, x, u):
        return -(0.1 + 0.01 * x[:, 1:2] + 0.3 * x[:, 4:5] + u[:, :1])


def tiny_targets(monkeypatch, n_step, mher_lambda, batch_size=1500, her_future_p=0.8):
    """The fork's targets on a batch of the tiny episodes, with stub target networks and an identity normaliser (so
    that Q'(o[t+j], g', pi'(o[t+j])) is q_stub of the stored numbers); returns the batch's (e, t, g') and targets."""
    torch.manual_seed(4)
    ep = tiny_episodes()
    x, u, ag_next, k = fork.sample_transitions(ep, N_TINY, batch_size, her_future_p, n_step, mher_lambda is not None)
    r, discount = fork.n_step_returns(ENV.compute_reward, ag_next, x[0, :, 4:], k, GAMMA, mher_lambda)
    torch.manual_seed(0)
    nets = (fork.Actor(7, 2, 8, 1, 1.0), fork.Critic(7, 2, 8, 1, 1.0), StubActor(), StubCritic())
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    norm = fork.Normalizer(7, 0.01, 1e6, 1e6)  # nothing seen: mean 0, std 1, i.e. the identity
    targets = recorded_targets(monkeypatch)
    fork.update(nets, optimizer, norm, x, u, r, discount, CLIP, 1.0)
    e, t = x[0, :, 0].long().numpy(), x[0, :, 1].long().numpy()
    return ep, e, t, x[0, :, 4:].numpy(), k.numpy(), targets[0][:, 0].numpy()


def by_hand(ep, e, t, g, n_step, mher_lambda=None):
    """The n-step (or MHER(lambda)) target of one sample, a loop over its steps, from numpy rewards one at a time."""
    o, ag = ep["o"][e].numpy(), ep["ag"][e].numpy()
    k = min(n_step, T_TINY - t)
    step_targets = []  # the j-step targets, j = 1..k
    for j in range(1, k + 1):
        rewards = sum(GAMMA**i * float(ENV.compute_reward(ag[t + 1 + i], g, {})) for i in range(j))
        step_targets.append(rewards + GAMMA**j * q_stub(o[t + j], g, pi_stub(o[t + j])))
    if mher_lambda is None:
        y = step_targets[-1]
    else:
        w = np.array([mher_lambda ** (j - 1) for j in range(1, k + 1)])
        y = float((w / w.sum()) @ np.array(step_targets))
    return min(max(y, -CLIP), 0.0)


@pytest.mark.parametrize("mher_lambda", [None, 0.5, 1.0])
def test_three_step_target_by_hand(monkeypatch, mher_lambda):
    """y = sum_{i<k} gamma^i r(ag[t+1+i], g') + gamma^k Q'(o[t+k], g', pi'(o[t+k])), k = min(3, T - t), rewards by
    compute_reward under the relabelled goal g'; MHER(lambda): the 1..k-step targets averaged with lambda^(j-1)."""
    ep, e, t, g, k, targets = tiny_targets(monkeypatch, 3, mher_lambda)
    assert set(t) == set(range(T_TINY)) and set(e) == {0, 1}  # every step, those cut at the end included
    expected = np.array([by_hand(ep, e[b], t[b], g[b], 3, mher_lambda) for b in range(len(t))])
    np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-6)
    # The batch has targets that only the right rewards reach: several 0 rewards in a row, and none.
    rewards = np.array([[float(ENV.compute_reward(ep["ag"][e[b], min(t[b] + 1 + i, T_TINY)].numpy(), g[b], {}))
                         for i in range(3)] for b in range(len(t))])
    assert ((rewards == 0).sum(1) >= 2).any() and ((rewards == -1).all(1) & (k == 3)).any()


def test_the_cut_at_the_episodes_end():
    """Near the end, k = T - t < n: the sampler returns k, bootstraps from the final state o[T] (the time limit is no
    terminal state), and n_step_returns sums the k rewards inside the episode only, discounting Q' by gamma^k."""
    torch.manual_seed(5)
    ep = tiny_episodes()
    x, _, ag_next, k = fork.sample_transitions(ep, N_TINY, 2000, 0.0, 3)  # the desired goals: episode 1 never
    e, t = x[0, :, 0].long(), x[0, :, 1].long()
    torch.testing.assert_close(k, (T_TINY - t).clamp(max=3))
    assert set(k.tolist()) == {1, 2, 3}
    torch.testing.assert_close(x[1, :, :4], ep["o"][e, t + k])  # o[t+k]: o[T] for the cut ones
    assert (x[1, k < 3, 1] == T_TINY).all() and x.shape[0] == 2
    for i in range(3):  # the next achieved goals, the steps past the end repeating ag[T]
        torch.testing.assert_close(ag_next[i], ep["ag"][e, (t + 1 + i).clamp(max=T_TINY)])
    r, discount = fork.n_step_returns(ENV.compute_reward, ag_next, x[0, :, 4:], k, GAMMA)
    torch.testing.assert_close(discount[0, :, 0], GAMMA ** k.float())
    never = e == 1  # every reward -1: the sum counts exactly k of them
    expected = -sum(GAMMA**i * (i < k[never]).float() for i in range(3))
    torch.testing.assert_close(r[never, 0], expected)
    # MHER(lambda): the bootstrap states o[t+1], o[t+2], o[t+3], each cut at o[T], with no weight past k.
    x, _, ag_next, k = fork.sample_transitions(ep, N_TINY, 2000, 0.8, 3, every_step=True)
    e, t = x[0, :, 0].long(), x[0, :, 1].long()
    assert x.shape[0] == 4
    for j in (1, 2, 3):
        torch.testing.assert_close(x[j, :, :4], ep["o"][e, (t + j).clamp(max=T_TINY)])
    _, discount = fork.n_step_returns(ENV.compute_reward, ag_next, x[0, :, 4:], k, GAMMA, 0.5)
    j = torch.arange(1, 4)[:, None]
    assert (discount[:, :, 0][j > k] == 0).all() and (discount[:, :, 0][j <= k] > 0).all()


# ---- end to end (last, so that with -x a broken target stops the run before these slow tests) ------------------------
def test_runs_resumes_exactly_and_evaluates(tmp_path):
    _, resumed = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, [*TINY, "--env-threads", "1"], (
        "actor", "critic", "actor_target", "critic_target", "normalizer"))
    assert resumed["args"]["n_step"] == 3 and resumed["args"]["mher_lambda"] is None  # the defaults


@pytest.mark.parametrize("options, message", [(["--n-step", "0"], "--n-step must be >= 1, got 0"),
                                              (["--mher-lambda", "1.5"], "--mher-lambda must be in [0, 1], got 1.5")])
def test_bad_options_are_refused(tmp_path, options, message):
    proc = run(tmp_path, *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
