"""research/sac_her.py (SAC + HER): a tiny run resumed exactly and evaluated, and SAC's defining lines against hand
computations: the temperature's step toward the target entropy, the soft twin-critic target, the squashed Gaussian."""

import copy
import math

import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY, metrics, run_dir  # the tiny budget; metrics.csv without its timing columns

sac_her, SCRIPT, run = load_fork("sac_her")  # the module, its path, test_ddpg_her.py's runner on it

ONE_THREAD = ["--env-threads", "1"]  # TINY has --torch-threads 1


# ---- the fork runs, resumes exactly and is evaluated as ddpg_her.py ------------------------------------------------
def test_tiny_run_resumes_exactly_and_evaluates(tmp_path):
    # the temperature and its Adam state restored, or the resumed run's alpha (a metrics.csv column) would differ
    check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, [*TINY, *ONE_THREAD], (
        "actor", "critic", "critic_target", "temperature", "normalizer"))
    rows = metrics(run_dir(tmp_path, "parts"))
    assert 0 < float(rows[1]["alpha"]) < float(rows[0]["alpha"]) < 1  # init 1; the tiny policy's entropy is high


@pytest.mark.parametrize("options, message", [(["--alpha-lr", "0"], "--alpha-lr must be positive, got 0.0"),
                                              (["--init-alpha", "-1"], "--init-alpha must be positive, got -1.0")])
def test_bad_sac_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *TINY, *ONE_THREAD, *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---- SAC's defining lines -----------------------------------------------------------------------------------------
DIM_X, DIM_U, B = 6, 3, 64


def set_log_std(actor, log_std):
    """Makes the actor's log-std `log_std` for every input (zero weights, the bias that the tanh rescaling maps there)."""
    with torch.no_grad():
        actor.net[-1].weight[DIM_U:] = 0.0
        scaled = (log_std - sac_her.LOG_STD_MIN) / (0.5 * (sac_her.LOG_STD_MAX - sac_her.LOG_STD_MIN)) - 1
        actor.net[-1].bias[DIM_U:] = math.atanh(scaled)


def sac(init_alpha=1.0, max_u=1.0, seed=0):
    """Networks, temperature and the script's Adam (three groups), as the script builds them (fp32, CPU)."""
    torch.manual_seed(seed)
    actor = sac_her.Actor(DIM_X, DIM_U, 32, 2, max_u)
    critic = sac_her.Critic(DIM_X, DIM_U, 32, 2, max_u)
    critic_target, temperature = copy.deepcopy(critic), sac_her.Temperature(init_alpha)
    with torch.no_grad():  # target critics that differ from the critics and from each other (as after training)
        for p in critic_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    optimizer = torch.optim.Adam([dict(params=actor.parameters(), lr=1e-3), dict(params=critic.parameters(), lr=1e-3),
                                  dict(params=temperature.parameters(), lr=1e-3)], fused=True)
    norm = sac_her.Normalizer(DIM_X, 0.01, 200.0, 5.0)  # nothing seen yet: mean 0, std 1, i.e. clip to [-5, 5]
    return (actor, critic, critic_target, temperature), optimizer, norm


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, B, DIM_X, generator=g).clamp(-3, 3)  # inside the normaliser's clip: it passes x unchanged
    u = torch.rand(B, DIM_U, generator=g) * 2 - 1
    r = -(torch.rand(B, 1, generator=g) < 0.8).float()  # sparse rewards, -1 or 0
    return x, u, r


@pytest.mark.parametrize("log_std, below_target", [(-4.5, True), (0.0, False)])
def test_temperature_step_moves_alpha_toward_the_target_entropy(log_std, below_target):
    nets, optimizer, norm = sac(init_alpha=0.5)
    actor, temperature = nets[0], nets[3]
    set_log_std(actor, log_std)
    target_entropy = -DIM_U  # SAC's -dim(A)
    x, u, r = batch()
    with torch.no_grad():  # the policy's entropy, estimated: below the target for a narrow policy, above for a wide one
        entropy = -actor.sample(x[0].repeat(50, 1))[1].mean().item()
    assert (entropy < target_entropy - 1) if below_target else (entropy > target_entropy + 1), entropy
    log_alpha = temperature.log_alpha.item()
    stats = sac_her.update(nets, optimizer, norm, x, u, r, 0.98, 50.0, 1.0, target_entropy)
    assert stats[3].item() == pytest.approx(0.5)  # the alpha the update used, logged
    # J(alpha) = E[-alpha (log pi + target)]: d/d log(alpha) = alpha (entropy - target), its batch estimate exactly;
    # no gradient reaches the temperature from the critic's target or the actor's loss (alpha enters them detached)
    assert temperature.log_alpha.grad.item() == pytest.approx(0.5 * (stats[4].item() - target_entropy), rel=1e-5)
    # Adam's first step moves log(alpha) by the learning rate against the gradient: alpha up when the entropy is low
    step = temperature.log_alpha.item() - log_alpha
    assert step == pytest.approx(1e-3 if below_target else -1e-3, rel=1e-3)


def test_critic_target_is_the_soft_minimum_of_the_twin_targets_at_a_fresh_sample(monkeypatch):
    nets, optimizer, norm = sac(init_alpha=0.5)
    actor, critic, critic_target, _ = nets
    x, u, r = batch()
    gamma, clip_return = 0.9, 10.0
    sample, calls = actor.sample, []

    def spy(obs):  # the real sampler, its inputs and outputs recorded
        out = sample(obs)
        calls.append((obs.clone(), [t.detach().clone() for t in out]))
        return out

    monkeypatch.setattr(actor, "sample", spy)
    with torch.no_grad():
        q_old = [net(torch.cat([x[0], u], 1)) for net in critic.nets]  # the critics before the step
    stats = sac_her.update(nets, optimizer, norm, x, u, r, gamma, clip_return, 1.0, -DIM_U)
    (u_next, log_pi_next, _), = [out for obs, out in calls if torch.equal(obs, x[1])]  # a' drawn at o', once
    with torch.no_grad():  # by hand, each target critic on its own (max_u = 1: actions enter unscaled)
        q1, q2 = (net(torch.cat([x[1], u_next], 1)) for net in critic_target.nets)
    assert (q1 - q2).abs().mean() > 0.05 and (0.5 * log_pi_next).abs().mean() > 0.1  # the min and alpha matter
    soft = r + gamma * (torch.minimum(q1, q2) - 0.5 * log_pi_next)
    assert (soft < 0).float().mean() > 0.9  # mostly inside the clip's range: the clip does not hide the target
    target = soft.clamp(-clip_return, 0.0)
    critic_loss = 0.5 * sum(((q - target) ** 2).mean() for q in q_old)  # both critics regress on the one target
    assert stats[1].item() == pytest.approx(critic_loss.item(), rel=1e-5)
    assert stats[2].item() == pytest.approx(torch.cat(q_old).mean().item(), rel=1e-5)


def test_actor_loss_is_alpha_log_pi_minus_the_twin_minimum_at_a_reparameterised_sample(monkeypatch):
    """SAC's actor loss E[alpha log pi(a|o) - min(Q1, Q2)(o, a)] at the sample a drawn at o (plus ddpg_her.py's
    action L2 on the mean action), by hand: the entropy term's sign, the min and alpha all show in its value; and its
    gradient makes a wide policy with a flat critic wider still (the entropy bonus at work)."""
    nets, optimizer, norm = sac(init_alpha=0.5, max_u=2.0)
    actor, critic = nets[0], nets[1]
    x, u, r = batch()
    sample, calls = actor.sample, []

    def spy(obs):
        out = sample(obs)
        calls.append((obs.clone(), [t.detach().clone() for t in out]))
        return out

    monkeypatch.setattr(actor, "sample", spy)
    with torch.no_grad():
        critics_before = copy.deepcopy(critic)
    stats = sac_her.update(nets, optimizer, norm, x, u, r, 0.98, 50.0, 0.3, -DIM_U)
    (pi, log_pi, pi_mean), = [out for obs, out in calls if torch.equal(obs, x[0])]
    with torch.no_grad():
        q1, q2 = (net(torch.cat([x[0], pi / 2.0], 1)) for net in critics_before.nets)  # (actions enter as u / max_u)
    assert (0.5 * log_pi).abs().mean() > 0.1 and (q1 - q2).abs().mean() > 1e-3  # alpha log pi and the min matter
    by_hand = (0.5 * log_pi - torch.minimum(q1, q2)).mean() + 0.3 * (pi_mean / 2.0).square().mean()
    assert stats[0].item() == pytest.approx(by_hand.item(), rel=1e-5)
    # With a flat critic (last layer zero) and no L2, only alpha log pi trains the actor: its log-std must rise.
    nets, optimizer, norm = sac(init_alpha=1.0)
    actor, critic = nets[0], nets[1]
    with torch.no_grad():
        for net in critic.nets:
            net[-1].weight.zero_()
    set_log_std(actor, -1.0)
    for _ in range(20):
        sac_her.update(nets, optimizer, norm, x, u, r, 0.98, 50.0, 0.0, -DIM_U)
    with torch.no_grad():
        log_std = sac_her.LOG_STD_MIN + 0.5 * (sac_her.LOG_STD_MAX - sac_her.LOG_STD_MIN) * (
            torch.tanh(actor.net(x[0])[:, DIM_U:]) + 1)
    assert log_std.mean() > -1.0 + 0.005, log_std.mean()


@pytest.mark.parametrize("max_u", [1.0, 2.0])
def test_deterministic_action_and_the_squashed_gaussians_log_probability(max_u):
    (actor, *_), _, _ = sac(max_u=max_u)
    x = torch.randn(B, DIM_X)
    with torch.no_grad():
        out = actor.net(x)
    mean, log_std = out[:, :DIM_U], sac_her.LOG_STD_MIN + 3.5 * (torch.tanh(out[:, DIM_U:]) + 1)
    torch.testing.assert_close(actor(x), max_u * torch.tanh(mean))  # the test action: no noise
    torch.manual_seed(7)
    a, log_pi, a_mean = actor.sample(x)
    torch.manual_seed(7)
    u = mean + log_std.exp() * torch.randn(B, DIM_U)  # the same fixed sample, before the squashing
    torch.testing.assert_close(a, max_u * torch.tanh(u))
    torch.testing.assert_close(a_mean, actor(x))
    # By hand, in float64: the Gaussian's log-density of u minus log|da/du| = sum log(max_u (1 - tanh(u)^2))
    u64 = u.detach().double()
    gauss = torch.distributions.Normal(mean.double(), log_std.exp().double()).log_prob(u64).sum(1)
    hand = gauss - torch.log(1 - torch.tanh(u64) ** 2).sum(1) - DIM_U * math.log(max_u)
    torch.testing.assert_close(log_pi[:, 0].double(), hand, rtol=1e-5, atol=1e-4)
    # Reparameterised: the sample's gradient reaches the mean's and the log-std's outputs
    (a.sum() + log_pi.sum()).backward()
    grad = actor.net[-1].bias.grad
    assert (grad[:DIM_U].abs() > 0).all() and (grad[DIM_U:].abs() > 0).all()


def test_log_probability_stays_finite_where_tanh_rounds_to_one():
    (actor, *_), _, _ = sac()
    set_log_std(actor, -4.0)
    with torch.no_grad():  # mean 12: tanh(u) is 1.0 in float32, and log(1 - tanh(u)^2) would be -inf
        actor.net[-1].weight[:DIM_U] = 0.0
        actor.net[-1].bias[:DIM_U] = 12.0
    x = torch.randn(B, DIM_X)
    torch.manual_seed(3)
    a, log_pi, _ = actor.sample(x)
    torch.manual_seed(3)
    u = (12.0 + math.exp(-4.0) * torch.randn(B, DIM_U)).double()
    assert (a == 1.0).all()  # saturated
    gauss = torch.distributions.Normal(12.0, math.exp(-4.0)).log_prob(u).sum(1)
    hand = gauss - torch.log(1 - torch.tanh(u) ** 2).sum(1)  # float64 resolves 1 - tanh(12)^2 = 1.5e-10
    assert torch.isfinite(log_pi).all()
    torch.testing.assert_close(log_pi[:, 0].double(), hand, rtol=1e-5, atol=1e-3)
