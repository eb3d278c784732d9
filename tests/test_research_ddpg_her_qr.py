"""research/ddpg_her_qr.py (distributional RL, "combine HER with recent improvements": a quantile critic): a tiny run
resumed exactly and evaluated; by hand on small tensors: the quantile Huber loss (its fractions tau_i, indicator and
asymmetric weight), the target per quantile from the target networks with Baselines' clip (and TQC's truncation), the
actor's loss as minus the quantiles' mean plus the L2 penalty; quantile regression recovering the known quantiles of
fixed distributions; and the options refused."""

import copy

import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY  # the tiny budget

fork, SCRIPT, run = load_fork("ddpg_her_qr")  # the module, its path, test_ddpg_her.py's runner on it


def hand_quantile_huber(z, target, kappa):
    """QR-DQN's loss pair by pair, in plain Python: sum over i, mean over j, mean over the batch."""
    B, N = z.shape
    M = target.shape[1]
    total = 0.0
    for b in range(B):
        for i in range(N):
            tau = (2 * i + 1) / (2 * N)
            for j in range(M):
                u = float(target[b, j] - z[b, i])
                huber = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
                weight = tau if u >= 0 else 1 - tau
                total += weight * huber / kappa / M
    return total / B


def test_tiny_run_resumes_exactly_and_evaluates(tmp_path):
    options = [*TINY, "--env-threads", "1", "--n-quantiles", "7"]
    whole, _ = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, options, (
        "actor", "critic", "actor_target", "critic_target", "normalizer"))
    assert whole["state"]["critic"]["net.6.bias"].shape == (7,)  # the critic's output: one value per quantile


def test_quantile_huber_loss_by_hand():
    # Two quantiles (tau = 1/4, 3/4) against two target samples, worked on paper: pairs (u, weight, Huber u):
    # i=0: (0.5, 1/4, 0.125), (3, 1/4, 2.5); i=1: (-0.5, 1/4, 0.125), (2, 3/4, 1.5); sum 1.8125, / M = 0.90625.
    z, target = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 3.0]])
    assert fork.quantile_huber_loss(z, target, 1.0).item() == pytest.approx(0.90625, abs=1e-6)
    # kappa = 2, Huber / kappa: (0.0625, 2), (0.0625, 1); 0.25 * (0.0625 + 2 + 0.0625) + 0.75 * 1 = 1.28125, / M:
    assert fork.quantile_huber_loss(z, target, 2.0).item() == pytest.approx(0.640625, abs=1e-6)
    g = torch.Generator().manual_seed(0)  # a batch, more quantiles than target samples, both sides of kappa
    z, target = torch.randn(3, 5, generator=g) * 2, torch.randn(3, 4, generator=g) * 2
    for kappa in (1.0, 0.3):
        expected = hand_quantile_huber(z, target, kappa)
        assert fork.quantile_huber_loss(z, target, kappa).item() == pytest.approx(expected, rel=1e-5)


def qr_nets(n_quantiles, seed=0):
    """Actor and critic, and target networks that differ from them (a target computed with the main nets shows)."""
    torch.manual_seed(seed)
    actor, critic = fork.Actor(7, 2, 32, 2, 1.0), fork.Critic(7, 2, 32, 2, 1.0, n_quantiles=n_quantiles)
    actor_target, critic_target = fork.Actor(7, 2, 32, 2, 1.0), fork.Critic(7, 2, 32, 2, 1.0, n_quantiles=n_quantiles)
    with torch.no_grad():  # quantiles spread over [-80, 60] x 0.98: some clip at -50, some at 0, some not at all
        critic_target.net[-1].bias.copy_(torch.tensor([-80.0, -40.0, -10.0, 5.0, 30.0, 60.0])[:n_quantiles])
        critic_target.net[-1].weight.mul_(20.0)
    nets = (actor, critic, actor_target, critic_target)
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    return nets, optimizer


def batch(B=16):
    g = torch.Generator().manual_seed(1)
    x, u = torch.randn(2, B, 7, generator=g).clamp(-3, 3), torch.rand(B, 2, generator=g) * 2 - 1
    return x, u, -(torch.rand(B, 1, generator=g) < 0.7).float()


@pytest.mark.parametrize("drop_top", [0, 2])
def test_target_per_quantile_from_the_target_networks_clipped(drop_top):
    N, gamma = 6, 0.98
    clip = 1 / (1 - gamma)
    nets, optimizer = qr_nets(N)
    actor, critic, actor_target, critic_target = nets
    norm = fork.Normalizer(7, 0.01, 200.0, 5.0)
    x, u, r = batch()
    with torch.no_grad():  # by hand: each quantile of the target networks at (o', pi'(o')), then each clipped
        z_next = critic_target(norm(x[1]), actor_target(norm(x[1])))
        kept = z_next.sort(1).values[:, : N - drop_top]
        raw = r + gamma * kept
        target = torch.where(raw > 0, 0.0, torch.where(raw < -clip, -clip, raw))
        z = critic(norm(x[0]), u)
        pi = actor(norm(x[0]))
        q_pi = critic(norm(x[0]), pi)
    assert (raw > 0).float().mean() > 0.1 and (raw < -clip).float().mean() > 0.1  # the clip binds at both ends
    assert ((raw > -clip) & (raw < 0)).float().mean() > 0.1  # and leaves some quantiles alone
    assert z_next.std(1).mean() > 5  # distinct quantiles per transition: a mean or one quantile would show
    stats = fork.update(nets, optimizer, norm, x, u, r, gamma, clip, 1.0, 1.0, drop_top)
    assert stats[1].item() == pytest.approx(hand_quantile_huber(z, target, 1.0), rel=1e-5)
    assert stats[2].item() == pytest.approx(z.sum(1).div(N).mean().item(), rel=1e-5)  # mean_q: over the quantiles
    l2 = (pi / actor.max_u).square().mean().item()  # the actor's loss: minus the quantiles' mean, plus the L2 term
    assert stats[0].item() == pytest.approx(-q_pi.sum(1).div(N).mean().item() + l2, rel=1e-5)


def test_actor_climbs_the_mean_of_the_quantiles():
    """The actor's gradient is that of -mean_i Z_i(o, pi(o)) + L2, not of one quantile's (e.g. the first or last)."""
    N = 5
    nets, optimizer = qr_nets(N, seed=3)
    actor, critic = nets[:2]
    with torch.no_grad():  # quantiles that pull the action different ways: a wrong one gives another gradient
        critic.net[-1].weight.mul_(torch.linspace(-30.0, 30.0, N)[:, None])
    norm = fork.Normalizer(7, 0.01, 200.0, 5.0)
    x, u, r = batch()
    pi = actor(norm(x[0]))
    expected = -critic(norm(x[0]), pi).mean(1).mean() + (pi / actor.max_u).square().mean()
    expected_grad = torch.autograd.grad(expected, list(actor.parameters()))
    optimizer = torch.optim.SGD(actor.parameters(), lr=0.0)  # no step: the gradients left in .grad are compared
    stats = fork.update(nets, optimizer, norm, x, u, r, 0.98, 50.0, 1.0)
    assert stats[0].item() == pytest.approx(expected.item(), rel=1e-5)
    for p, grad in zip(actor.parameters(), expected_grad):
        torch.testing.assert_close(p.grad, grad, rtol=1e-4, atol=1e-6)
    assert max(g.abs().max().item() for g in expected_grad) > 1e-2


def test_quantile_regression_recovers_known_quantiles():
    """A critic fitted by the quantile Huber loss to samples of fixed distributions (one per input: uniform on
    [lo, lo + W]) outputs, in order, their quantiles at tau_i = (2i+1)/(2N). With kappa > 0 the minimiser is the Huber
    quantile: for a uniform density 1/W (and the quantile farther than kappa from the ends) it sits at
    lo + W tau + kappa (1/2 - tau), shifted kappa (1/2 - tau) towards the median (from the loss's stationary point)."""
    torch.manual_seed(0)
    N, lows, widths = 5, torch.tensor([-40.0, -30.0, -25.0]), torch.tensor([40.0, 20.0, 10.0])
    tau = (2 * torch.arange(N) + 1) / (2 * N)
    for kappa in (1.0, 0.3):
        critic = fork.Critic(3, 1, 32, 2, 1.0, n_quantiles=N)
        optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
        inputs, action = torch.eye(3), torch.zeros(3, 1)
        for step in range(1500):
            if step == 1000:  # a smaller last step: less noise around the fixed point
                optimizer.param_groups[0]["lr"] = 3e-4
            k = torch.randint(0, 3, (64,))
            samples = lows[k, None] + widths[k, None] * torch.rand(64, 16)
            loss = fork.quantile_huber_loss(critic(inputs[k], action[k]), samples, kappa)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            z = critic(inputs, action)
        true = lows[:, None] + widths[:, None] * tau + kappa * (0.5 - tau)
        assert (z.diff(dim=1) > 0).all(), z  # ordered
        assert ((z - true).abs() <= 0.4).all(), (kappa, z, true)  # near the true ones (a wrong tau_i: >= 1 off)


@pytest.mark.parametrize("options, message", [
    (["--n-quantiles", "0"], "--n-quantiles must be positive and --kappa > 0, got 0 and 1.0"),
    (["--kappa", "0"], "--n-quantiles must be positive and --kappa > 0, got 25 and 0.0"),
    (["--drop-top-quantiles", "25"], "--drop-top-quantiles must be in [0, n_quantiles) = [0, 25), got 25"),
    (["--drop-top-quantiles", "-1"], "--drop-top-quantiles must be in [0, n_quantiles) = [0, 25), got -1"),
])
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *TINY, "--env-threads", "1", *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
