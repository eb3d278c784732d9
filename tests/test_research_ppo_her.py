"""research/ppo_her.py (the paper's "on-policy HER": PPO with hindsight goals, HPG's importance weights): a tiny run
resumed exactly and evaluated; by hand on small tensors: PPO's clipped surrogate, GAE, the Gaussian policy, one update;
the per-decision hindsight weights (a relabelled goal equal to the original weighs 1, known log-probabilities give the
product, self-normalised per step); the relabelled goals and their recomputed rewards; --no-hindsight's own goals
alone; and the options refused."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY, metrics, run_dir  # the tiny budget

import envs

fork, SCRIPT, run = load_fork("ppo_her")  # the module, its path, test_ddpg_her.py's runner on it
T, DIM_O, DIM_G, DIM_U = 50, 10, 3, 4  # FetchReach-v0's


def test_tiny_run_resumes_exactly_and_evaluates(tmp_path):
    whole, _ = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, [*TINY, "--env-threads", "1"],
                                                   ("actor", "critic", "normalizer"))
    rows = metrics(run_dir(tmp_path, "whole"))
    assert float(rows[-1]["updates"]) == 8 and 0 < float(rows[-1]["weight_ess"]) <= 1  # 2 x 2 cycles x 2 updates
    assert whole["state"]["normalizer"]["count"].item() == 2 * 2 * 2 * 5 * T  # [o, g] of 5 goals per episode


def test_no_hindsight_run_says_so(tmp_path):
    proc = run(tmp_path, *TINY, "--env-threads", "1", "--n-epochs", "1", "--no-hindsight", "--exp-name", "plain")
    assert "no hindsight" in proc.stdout, proc.stdout
    assert math.isnan(float(metrics(run_dir(tmp_path, "plain"))[0]["weight_ess"]))


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.1, 0.7])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, -2.0])
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    logp_old = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.5])
    logp = (logp_old + ratio.log()).requires_grad_()
    loss, log_ratio = fork.clipped_surrogate(logp, logp_old, adv, w, 0.2)
    # -min(r A, clip(r, 0.8, 1.2) A): -0.5 (r below 1 - eps, A > 0: unclipped), 1, -1.2 (clipped), 1.1, 1.6 (clipped)
    by_hand = torch.tensor([-0.5, 1.0, -1.2, 1.1, 1.6])
    assert loss.item() == pytest.approx((w * by_hand).mean().item(), abs=1e-6)
    torch.testing.assert_close(log_ratio, ratio.log())
    loss.backward()  # the clipped samples pass no gradient; the others -w A r / 5 (d r / d logp = r)
    torch.testing.assert_close(logp.grad, torch.tensor([-0.5, 2 * 1.0, 0.0, 1.1, 0.0]) / 5)


def test_dual_clip_bounds_a_negative_advantages_loss_and_a_huge_ratio_stays_finite():
    """Dual-clip PPO: with A < 0 the loss is at most -c A (PPO's clip leaves -A r unbounded as r grows); with A > 0,
    or a ratio below c, PPO's loss. A ratio of exp(100), a relabelled goal's action unlikely before the update, gives
    a finite loss and finite gradients."""
    ratio = torch.tensor([5.0, 2.0, 5.0, 0.5])
    adv = torch.tensor([-1.0, -1.0, 1.0, -2.0])
    logp_old = torch.zeros(4)
    logp = (logp_old + ratio.log()).requires_grad_()
    loss, _ = fork.clipped_surrogate(logp, logp_old, adv, torch.ones(4), 0.2, dual_clip=3.0)
    # PPO's: 5 (A < 0, r above 1 + eps: unclipped), 2, -1.2, 1.6; the dual clip: min(5, 3) = 3 for the first alone
    assert loss.item() == pytest.approx((3.0 + 2.0 - 1.2 + 1.6) / 4, abs=1e-6)
    loss.backward()  # the dual-clipped sample passes no gradient
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 2.0, 0.0, 0.0]) / 4)
    logp = torch.tensor([100.0, 0.0], requires_grad=True)  # exp(100): inf in float32
    loss, _ = fork.clipped_surrogate(logp, torch.zeros(2), torch.tensor([-1.0, 1.0]), torch.ones(2), 0.2, 3.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all() and loss.item() == pytest.approx((3 - 1) / 2)


def test_gae_by_hand():
    gamma, lam = 0.9, 0.8
    r = torch.tensor([[-1.0, -1.0, 0.0], [0.0, -1.0, -1.0]])
    v = torch.tensor([[-2.0, -1.5, -0.5, 0.3], [-1.0, -3.0, -2.0, -4.0]])
    adv = fork.gae(r, v, gamma, lam)
    for i in range(2):
        delta = [r[i, t] + gamma * v[i, t + 1] - v[i, t] for t in range(3)]
        for t in range(3):
            by_hand = sum((gamma * lam) ** (s - t) * delta[s] for s in range(t, 3))
            assert adv[i, t].item() == pytest.approx(by_hand.item(), abs=1e-6)
    # lambda = 1: the discounted return to the end, bootstrapped on V(o_T), less V(o_t)
    ret = fork.gae(r, v, gamma, 1.0) + v[:, :3]
    assert ret[0, 0].item() == pytest.approx(-1 - 0.9 + 0.9**3 * 0.3, abs=1e-6)


def test_gaussian_policy_log_prob_and_deterministic_action():
    torch.manual_seed(0)
    actor = fork.Actor(DIM_O + DIM_G, DIM_U, 16, 2, 1.0, init_log_std=-0.5)
    x = torch.randn(6, DIM_O + DIM_G) * 3
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([2.0, -2.0, 0.3, 0.0]))  # two means outside the action box
        mean = actor.mean(x)
        u = actor.sample(x)
    expected = torch.distributions.Normal(mean, torch.full((DIM_U,), math.exp(-0.5))).log_prob(u).sum(-1)
    torch.testing.assert_close(fork.log_prob(mean, actor.log_std, u), expected)
    torch.testing.assert_close(actor(x), mean.clamp(-1.0, 1.0))  # the test action: the mean, clipped
    assert (actor(x)[:, 0] == 1).all() and (actor(x)[:, 1] == -1).all() and (u.abs() > 1).any()  # samples unclipped


def test_update_by_hand_weights_both_losses():
    torch.manual_seed(0)
    B, dim_x = 64, DIM_O + DIM_G
    actor, critic = fork.Actor(dim_x, DIM_U, 16, 2, 1.0), fork.Critic(dim_x, 16, 2)
    with torch.no_grad():
        critic.net[-1].bias.fill_(-3.0)
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=1e-3)
    g = torch.Generator().manual_seed(1)
    mb = dict(x=torch.randn(B, dim_x, generator=g), u=torch.randn(B, DIM_U, generator=g),
              adv=torch.randn(B, generator=g) * 2 + 1, ret=-torch.rand(B, generator=g) * 10,
              w=torch.rand(B, generator=g) * 3)
    with torch.no_grad():
        logp_now = fork.log_prob(actor.mean(mb["x"]), actor.log_std, mb["u"])
        mb["logp"] = logp_now - 0.3 * torch.randn(B, generator=g)  # ratios away from 1: some clipped
        adv = (mb["adv"] - mb["adv"].mean()) / mb["adv"].std()
        ratio = (logp_now - mb["logp"]).exp()
        pg = (mb["w"] * -torch.min(adv * ratio, adv * ratio.clamp(0.8, 1.2))).mean()
        v = critic(mb["x"])
        vl = 0.5 * (mb["w"] * (v - mb["ret"]) ** 2).mean()
    assert 0.05 < ((ratio - 1).abs() > 0.2).float().mean() < 0.95
    stats = fork.update(actor, critic, optimizer, mb, 0.2, 0.0, 0.5, 0.5)
    assert stats[0].item() == pytest.approx(pg.item(), rel=1e-4)
    assert stats[1].item() == pytest.approx(vl.item(), rel=1e-4)
    assert stats[2].item() == pytest.approx(v.mean().item(), rel=1e-5)
    assert stats[3].item() == pytest.approx(DIM_U * 0.5 * math.log(2 * math.pi * math.e), rel=1e-5)  # log-std 0
    assert stats[5].item() == pytest.approx(((ratio - 1).abs() > 0.2).float().mean().item())


def test_hindsight_weights_are_the_per_decision_products():
    # one episode, its own goal and one relabelled: known log-probabilities
    own, other = torch.tensor([-1.0, -2.0, -0.5, -1.0]), torch.tensor([-1.5, -1.0, -0.5, -3.0])
    w = fork.hindsight_weights(torch.stack([own, other])[None], normalise=False)
    prods = [math.exp(sum(other[k] - own[k] for k in range(t + 1))) for t in range(4)]  # prod_{k<=t} ratio
    torch.testing.assert_close(w[0, 1], torch.tensor(prods))
    torch.testing.assert_close(w[0, 0], torch.ones(4))  # the episode's own goal weighs 1
    # three episodes, three relabelled goals each: self-normalised, each step's weights divided by their mean
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 4, 5, generator=g) * 2
    raw = fork.hindsight_weights(logp, normalise=False)
    assert raw[:, 1:].max() / raw[:, 1:].min() > 100  # very unequal
    by_hand = raw[:, 1:] / raw[:, 1:].mean((0, 1), keepdim=True)
    normalised = fork.hindsight_weights(logp)
    torch.testing.assert_close(normalised[:, 1:], by_hand)
    torch.testing.assert_close(normalised[:, 0], torch.ones(3, 5))
    torch.testing.assert_close(normalised[:, 1:].mean((0, 1)), torch.ones(5))
    # a relabelled goal whose log-probabilities are the original's weighs 1, raw or normalised
    same = torch.randn(2, 1, 6, generator=g).expand(2, 3, 6)
    torch.testing.assert_close(fork.hindsight_weights(same), torch.ones(2, 3, 6))
    torch.testing.assert_close(fork.hindsight_weights(same, normalise=False), torch.ones(2, 3, 6))


def nets_and_episodes(n, seed=0, ag_equal_g=False):
    torch.manual_seed(seed)
    dim_x = DIM_O + DIM_G
    actor, critic = fork.Actor(dim_x, DIM_U, 16, 2, 1.0), fork.Critic(dim_x, 16, 2)
    with torch.no_grad():
        actor.net[-1].weight.mul_(100.0)  # means that depend on the goal: the weights are not all 1
        actor.log_std.fill_(-1.0)
    norm = fork.Normalizer(dim_x, 0.01, 200.0, 5.0)
    g = torch.Generator().manual_seed(seed + 1)
    goal = torch.rand(n, 1, DIM_G, generator=g) * 0.3
    # achieved goals: a walk that passes within the threshold of some of its own later points
    ag = goal + torch.cumsum(torch.randn(n, T + 1, DIM_G, generator=g) * 0.02, 1) if not ag_equal_g else \
        goal.expand(n, T + 1, DIM_G)
    ep = dict(o=torch.randn(n, T + 1, DIM_O, generator=g), ag=ag.contiguous(),
              g=goal.expand(n, T, DIM_G).contiguous(), u=torch.randn(n, T, DIM_U, generator=g))
    return actor, critic, norm, ep


def test_relabelled_goals_and_their_recomputed_rewards():
    env = gym.make("FetchReach-v0").unwrapped
    actor, critic, norm, ep = nets_and_episodes(3)
    n, k = 3, 4
    torch.manual_seed(5)
    goals = fork.hindsight_goals(ep, k)
    torch.manual_seed(5)  # the same draw inside cycle_samples
    data = fork.cycle_samples(ep, actor, critic, norm, env.compute_reward, k, 0.98, 0.95, 50.0)
    assert goals.shape == (n, 1 + k, T, DIM_G) and len(data["r"]) == n * (1 + k) * T
    torch.testing.assert_close(goals[:, 0], ep["g"])  # the episode's own goal first
    for i in range(n):
        for j in range(1, 1 + k):
            assert (goals[i, j] == goals[i, j, :1]).all()  # one goal along the episode
            assert ((ep["ag"][i, 1:] == goals[i, j, 0]).all(1)).any()  # achieved in the same episode, at 1..T
    r = data["r"].view(n, 1 + k, T).numpy()
    d = np.linalg.norm(ep["ag"][:, None, 1:].numpy() - goals.numpy(), axis=-1)
    np.testing.assert_array_equal(r, -(d > 0.05).astype(np.float32))  # r_t = -[|ag_{t+1} - g'| > 0.05], by hand
    assert (r[:, 1:] == 0).mean() > 0.05 and (r[:, 1:] == -1).mean() > 0.05  # both outcomes for relabelled goals
    assert (r[:, 1:] != r[:, :1]).mean() > 0.05  # not the episode's own goal's rewards
    # the inputs are [o_t, g'] normalised, and the normaliser saw every goal's rows
    x = torch.cat([ep["o"][:, None, :T].expand(n, 1 + k, T, DIM_O), goals], -1).reshape(-1, DIM_O + DIM_G)
    torch.testing.assert_close(data["x"], norm(x))
    assert norm.count.item() == n * (1 + k) * T
    w = data["w"].view(n, 1 + k, T)
    assert (w[:, 0] == 1).all() and w[:, 1:].std() > 0.1  # goal-dependent means: unequal weights
    torch.testing.assert_close(w[:, 1:].mean((0, 1)), torch.ones(T))


def test_a_relabelled_goal_equal_to_the_original_weighs_one_with_its_rewards():
    env = gym.make("FetchReach-v0").unwrapped
    actor, critic, norm, ep = nets_and_episodes(2, ag_equal_g=True)  # every achieved goal is the desired goal
    data = fork.cycle_samples(ep, actor, critic, norm, env.compute_reward, 3, 0.98, 0.95, 50.0)
    torch.testing.assert_close(data["w"], torch.ones(2 * 4 * T))
    assert (data["r"] == 0).all()
    logp = data["logp"].view(2, 4, T)
    torch.testing.assert_close(logp, logp[:, :1].expand(2, 4, T))


def test_no_hindsight_uses_only_the_episodes_own_goals():
    env = gym.make("FetchReach-v0").unwrapped
    actor, critic, norm, ep = nets_and_episodes(3)
    data = fork.cycle_samples(ep, actor, critic, norm, env.compute_reward, 4, 0.98, 0.95, 50.0, hindsight=False)
    assert all(len(v) == 3 * T for v in data.values())
    x = torch.cat([ep["o"][:, :T], ep["g"]], -1).reshape(-1, DIM_O + DIM_G)
    torch.testing.assert_close(data["x"], norm(x))
    expected = env.compute_reward(ep["ag"][:, 1:].numpy(), ep["g"].numpy(), {}).reshape(-1)
    np.testing.assert_array_equal(data["r"].numpy(), expected)
    assert (data["w"] == 1).all() and norm.count.item() == 3 * T
    with torch.no_grad():  # old log-probabilities, values and GAE of the own goal
        v = critic(norm(torch.cat([ep["o"], torch.cat([ep["g"], ep["g"][:, -1:]], 1)], -1)))
        adv = fork.gae(data["r"].view(3, T), v, 0.98, 0.95)
    torch.testing.assert_close(data["adv"], adv.reshape(-1))
    torch.testing.assert_close(data["ret"], (adv + v[:, :T]).clamp(-50, 0).reshape(-1))


@pytest.mark.parametrize("options, message", [
    (["--clip-coef", "0"], "--clip-coef must be positive, got 0.0"),
    (["--gae-lambda", "1.5"], "--gae-lambda must be in [0, 1], got 1.5"),
    (["--max-grad-norm", "-1"], "--max-grad-norm must be positive, got -1.0"),
    (["--replay-k", "0"], "--replay-k 0 gives no hindsight goal; use --no-hindsight"),
    (["--dual-clip", "0.5"], "--dual-clip must be 0 (off) or > 1, got 0.5"),
])
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *TINY, "--env-threads", "1", *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
