"""research/ddpg_her_prioritized.py: HER's replay drawn by PER's priorities (Schaul et al. 2016, proportional).

The defining property as unit tests on the fork's functions: draws follow p^alpha / sum p^alpha over the stored
slots; an update sets the replayed slots' priorities to |TD error| + eps (new episodes get the largest so far); with
importance weights the critic's loss is the mean of w * TD^2, w = (N P(i))^-beta / max. And one tiny run in a
subprocess: resumed it ends as an uninterrupted run does (the priorities included), and evaluate.py reads its model.
"""

import copy

import numpy as np
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY  # the tiny budget

fork, SCRIPT, run = load_fork("ddpg_her_prioritized")  # the module, its path, test_ddpg_her.py's runner on it

DIMS = dict(o=1, g=1, ag=1, u=1)


def replay_of(n_eps, T, size_eps, alpha, eps=1e-6):
    """A CPU replay buffer of size_eps episodes with n_eps stored; o[e, t] = 10 e + t names the slot (e, t)."""
    replay = fork.EpisodeReplay(size_eps * T, T, DIMS, np.random.default_rng(0), "cpu", alpha, eps)
    ids = 10.0 * torch.arange(n_eps)[:, None] + torch.arange(T + 1)[None, :]
    batch = dict(o=ids[:, :, None], ag=torch.rand(n_eps, T + 1, 1), g=torch.rand(n_eps, T, 1),
                 u=torch.rand(n_eps, T, 1) * 2 - 1)
    replay.store(batch)
    return replay


@pytest.mark.parametrize("alpha", [0.6, 0.0])
def test_draws_follow_priority_to_the_alpha(alpha):
    """3 stored episodes x 4 steps (room for 4) given distinct priorities p: 200,000 draws hit each (e, t) with
    frequency p^alpha / sum p^alpha over the 12 stored slots (alpha = 0: uniform), and never an empty slot."""
    T, n, eps = 4, 200_000, 1e-6
    replay = replay_of(3, T, 4, alpha, eps)
    p = 1.5 ** torch.arange(12.0, dtype=torch.float64)  # 1 ... 86, distinct
    replay.update_priorities(torch.arange(12), p - eps)  # p = |TD error| + eps, set as an update sets them
    torch.manual_seed(0)
    x, u, ag_next, i, w = replay.sample(n, her_future_p=0.0)
    assert w is None  # (no beta: no importance weights)
    o = x[0, :, 0].long()  # the slot that was replayed, read from its observation
    e, t = o // 10, o % 10
    assert torch.equal(e * T + t, i)  # the returned slots are those replayed (their priorities are updated)
    counts = torch.bincount(e * T + t, minlength=16).double()
    assert counts[12:].sum() == 0  # the 4th episode's slots hold no episode: never drawn
    expected = p ** alpha
    expected /= expected.sum()
    freq = counts[:12] / n
    chi2 = (n * (freq - expected).square() / expected).sum().item()
    assert chi2 < 31.26, chi2  # chi-square, 11 degrees of freedom: 31.26 is its 99.9% quantile
    # max |freq - P| < 0.004: the standard deviation of a frequency is <= 0.5 / sqrt(n) = 0.0011
    assert (freq - expected).abs().max() < 0.004, (freq - expected).abs().max()
    # The test can tell: the next alpha (or uniform for alpha 0.6) is far outside the bound.
    other = p ** (alpha + 0.3)
    other /= other.sum()
    assert (n * (freq - other).square() / other).sum() > 1000


def networks(dim_x, dim_u, gamma=0.98):
    torch.manual_seed(1)
    actor = fork.Actor(dim_x, dim_u, 16, 2, 1.0)
    critic = fork.Critic(dim_x, dim_u, 16, 2, 1.0)
    nets = (actor, critic, copy.deepcopy(actor), copy.deepcopy(critic))
    for p in nets[3].parameters():  # targets that differ from the main networks, as they do after a cycle
        p.data.add_(0.3 * torch.randn_like(p))
    optimizer = torch.optim.Adam([dict(params=actor.parameters(), lr=1e-3), dict(params=critic.parameters(), lr=1e-3)])
    norm = fork.Normalizer(dim_x, 0.01, 200.0, 5.0)
    return nets, optimizer, norm


def td_before_update(nets, norm, x, u, r, gamma, clip_return):
    """target - Q of each replayed transition, with the networks before the gradient step (as in PER)."""
    actor, critic, actor_target, critic_target = nets
    with torch.no_grad():
        xn = norm(x)
        target = (r + gamma * critic_target(xn[1], actor_target(xn[1]))).clamp(-clip_return, 0.0)
        return target - critic(xn[0], u)


def test_update_sets_replayed_priorities_to_abs_td_error_plus_eps():
    """After one update, each replayed slot's priority p is |TD error| + eps of that transition as replayed (a slot
    drawn twice: one of its values), kept as p^alpha; every other slot keeps its own, the max p follows; new
    episodes get the max (and the first ones PER's p_1 = 1)."""
    T, alpha, eps, gamma, clip_return = 5, 0.6, 0.5, 0.98, 50.0  # eps large enough that leaving it out shows
    replay = replay_of(10, T, 12, alpha, eps)
    assert torch.equal(replay.priority.p_alpha[:10], torch.ones(10, T, dtype=torch.float64))
    assert torch.equal(replay.priority.p_alpha[10:], torch.zeros(2, T, dtype=torch.float64))  # (nothing stored)
    before = (torch.rand(12, T, dtype=torch.float64) + 0.1) * 2
    before[10:] = 0  # (no episode stored there)
    replay.priority.p_alpha.copy_(before)
    replay.priority.max.fill_(0.5)  # = eps, below every new p: the running max must rise
    nets, optimizer, norm = networks(2, 1)
    torch.manual_seed(3)
    x, u, ag_next, i, w = replay.sample(16, her_future_p=0.8)
    r = -(torch.rand(16, 1) < 0.5).float()
    expected = td_before_update(nets, norm, x, u, r, gamma, clip_return).abs().flatten() + eps
    losses, td = fork.update(nets, optimizer, norm, x, u, r, gamma, clip_return, 1.0)
    replay.update_priorities(i, td)
    after = replay.priority.p_alpha.flatten()
    for slot in range(12 * T):
        drawn = i == slot
        if drawn.any():
            assert any(torch.isclose(after[slot], v.double() ** alpha, rtol=1e-5, atol=0) for v in expected[drawn])
        else:
            assert after[slot] == before.flatten()[slot], slot
    assert (after[i] != before.flatten()[i]).all()
    assert expected.max() > 0.5 and torch.isclose(replay.priority.max.float(), expected.max())  # raised to the new max
    # A new episode's slots get the largest priority so far (the raised one); a resume's store (idx given) leaves
    # priorities alone.
    one = dict(o=torch.zeros(1, T + 1, 1), ag=torch.zeros(1, T + 1, 1), g=torch.zeros(1, T, 1), u=torch.zeros(1, T, 1))
    replay.store(one)
    raised = torch.full((T,), expected.max().item() ** alpha, dtype=torch.float64)
    assert torch.allclose(replay.priority.p_alpha[10], raised, rtol=1e-5)
    replay.store(one, np.array([11]))
    assert torch.equal(replay.priority.p_alpha[11], torch.zeros(T, dtype=torch.float64))


def test_importance_weights_weigh_the_critics_squared_errors():
    """With beta, w_i = (N P(i))^-beta / max_j (N P(j))^-beta over the N stored slots, and the critic's loss is the
    mean of w * (target - Q)^2; without beta, the plain mean."""
    T, alpha, beta, gamma, clip_return = 4, 0.6, torch.tensor(0.7), 0.98, 50.0
    replay = replay_of(3, T, 4, alpha)
    p = torch.linspace(0.2, 3.0, 12, dtype=torch.float64)
    replay.update_priorities(torch.arange(12), p - 1e-6)  # (the 4th episode's slots: none stored, p^alpha 0)
    torch.manual_seed(4)
    x, u, ag_next, i, w = replay.sample(64, her_future_p=0.8, beta=beta)
    prob = p ** alpha / (p ** alpha).sum()
    all_w = (12 * prob) ** -beta.double()
    torch.testing.assert_close(w, (all_w[i] / all_w.max()).float()[:, None])
    assert w.max() <= 1 and w.min() < 0.5  # (normalised by the buffer's max: the weight of its smallest priority)

    nets, optimizer, norm = networks(2, 1)
    r = -(torch.rand(64, 1) < 0.5).float()
    td = td_before_update(nets, norm, x, u, r, gamma, clip_return)
    state = copy.deepcopy([n.state_dict() for n in nets]), copy.deepcopy(optimizer.state_dict())
    losses, _ = fork.update(nets, optimizer, norm, x, u, r, gamma, clip_return, 1.0, w)
    torch.testing.assert_close(losses[1], (w * td.square()).mean())
    assert not torch.isclose(losses[1], td.square().mean(), rtol=1e-3)  # the weights matter here
    for net, s in zip(nets, state[0]):  # the same step without weights: the plain mean of squared errors
        net.load_state_dict(s)
    optimizer.load_state_dict(state[1])
    losses, _ = fork.update(nets, optimizer, norm, x, u, r, gamma, clip_return, 1.0)
    torch.testing.assert_close(losses[1], td.square().mean())


def test_resume_continues_exactly_and_evaluate_reads_the_model(tmp_path):
    # 6 episodes of room, 4 new an epoch: epoch 2 overwrites old episodes (new ones get the max priority), and the
    # resume must restore priorities that the updates changed after their episodes were written to replay/.
    small = [*TINY, "--env-threads", "1", "--buffer-size", "300"]
    whole, _ = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, small, (
        "actor", "critic", "actor_target", "critic_target", "normalizer", "priority"))
    p_alpha = whole["state"]["priority"]["p_alpha"]
    assert (p_alpha[:6] > 0).all() and len(p_alpha[:6].unique()) > 50  # every stored slot has one; updates set many
