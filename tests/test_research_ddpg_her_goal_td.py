"""research/ddpg_her_goal_td.py (the paper's "automatic hindsight goals generation": replay the candidate goal of
largest |TD error|): a tiny run resumed exactly and evaluated; by hand on a small buffer: where the candidates come
from (future steps t' > t of the same episode; achieved goals of stored episodes), the chosen goal is the candidate of
largest |TD error| (a critic whose answer is known), its reward recomputed, the batched |TD errors| equal to one
candidate at a time; one future candidate is ddpg_her.py's batch and run; and the options refused."""

import copy

import gymnasium as gym
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY, metrics, run_dir  # the tiny budget

import ddpg_her
import envs  # noqa: F401  (registers the ids)

fork, SCRIPT, run = load_fork("ddpg_her_goal_td")  # the module, its path, test_ddpg_her.py's runner on it
T, N_SLOTS, N_EPS, DIM_O, DIM_G, DIM_U = 10, 8, 6, 4, 3, 2
COMPUTE_REWARD = gym.make("FetchReach-v0").unwrapped.compute_reward  # -[distance > 0.05]


def episodes():
    """N_SLOTS episode slots, the first N_EPS stored: o[e, s] = [e, s, noise], ag[e, s] = [0.01 e, 0.01 s, 0] (so
    rewards between them are both -1 and 0), the desired goals 5 (no candidate), unfilled slots 99."""
    gen = torch.Generator().manual_seed(0)
    e = torch.arange(N_SLOTS, dtype=torch.float32)[:, None, None].expand(N_SLOTS, T + 1, 1)
    s = torch.arange(T + 1, dtype=torch.float32)[None, :, None].expand(N_SLOTS, T + 1, 1)
    o = torch.cat([e, s, torch.randn(N_SLOTS, T + 1, DIM_O - 2, generator=gen)], 2)
    ag = torch.cat([0.01 * e, 0.01 * s, torch.zeros(N_SLOTS, T + 1, 1)], 2)
    o[N_EPS:], ag[N_EPS:] = 99.0, 99.0
    return dict(o=o, ag=ag, g=torch.full((N_SLOTS, T, DIM_G), 5.0), u=torch.randn(N_SLOTS, T, DIM_U, generator=gen))


def decode(goals):  # an achieved goal's episode and step
    return (goals[..., 0] / 0.01).round().long(), (goals[..., 1] / 0.01).round().long()


class GoalLinearQ(torch.nn.Module):  # a critic whose answer is known: Q([o, g], u) = w . g
    def __init__(self, w):
        super().__init__()
        self.w = torch.tensor(w)

    def forward(self, x, u):
        return x[:, DIM_O:] @ self.w[:, None]


def test_tiny_run_resumes_exactly_and_evaluates(tmp_path):
    whole, _ = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, [*TINY, "--env-threads", "1"], (
        "actor", "critic", "actor_target", "critic_target", "normalizer"))
    shares = [float(row["buffer_goal_share"]) for row in metrics(run_dir(tmp_path, "whole"))]
    assert len(shares) == 2 and all(0.0 < share < 0.8 for share in shares)  # some chosen goals are buffer goals


def test_candidates_are_future_goals_of_the_episode_and_achieved_goals_of_the_buffer():
    ep, n, k, n_buffer, seen = episodes(), 4000, 6, 2, []

    def spy(o, o_next, u, ag_next, goals):  # records the candidates; random scores
        seen.append((o, o_next, u, ag_next, goals))
        return torch.rand(goals.shape[:2])

    torch.manual_seed(0)
    x, u, _, _ = fork.sample_goal_td(ep, torch.tensor(float(N_EPS)), n, 0.8, k, n_buffer, spy, COMPUTE_REWARD)
    ((o, o_next, u_seen, ag_next, goals),) = seen
    e, t = o[:, 0].long(), o[:, 1].long()  # each transition's episode and step
    torch.testing.assert_close(o, x[0, :, :DIM_O])
    torch.testing.assert_close(o_next, ep["o"][e, t + 1])  # the candidates are scored on the transition replayed
    torch.testing.assert_close(ag_next, ep["ag"][e, t + 1])
    torch.testing.assert_close(u_seen, u)
    assert goals.shape == (n, k, DIM_G)
    ce, cs = decode(goals)
    future_e, future_s = ce[:, : k - n_buffer], cs[:, : k - n_buffer]
    assert (future_e == e[:, None]).all()  # the transition's own episode, ...
    assert (future_s > t[:, None]).all() and (future_s <= T).all()  # ... at a later step t' in {t+1, ..., T}
    assert (future_s == T).any() and ((future_s == t[:, None] + 1).float().mean() > 0.1)
    near = t == T - 1  # t' uniform in {t+1, ..., T}: from t = 0, the mean of 1..T
    assert (future_s[near] == T).all() and abs(future_s[t == 0].float().mean() - (T + 1) / 2) < 0.3
    buffer_e, buffer_s = ce[:, k - n_buffer :], cs[:, k - n_buffer :]
    assert (buffer_e < N_EPS).all() and (buffer_s >= 0).all() and (buffer_s <= T).all()  # stored goals only
    assert set(buffer_e.flatten().tolist()) == set(range(N_EPS)) and set(buffer_s.flatten().tolist()) == set(
        range(T + 1))  # any stored episode and any of its T+1 achieved goals
    assert abs((buffer_e != e[:, None]).float().mean() - (1 - 1 / N_EPS)) < 0.03  # not the transition's own
    torch.testing.assert_close(goals, ep["ag"][ce, cs])  # each candidate is a stored achieved goal


def test_replays_the_candidate_of_largest_td_error_with_its_reward_recomputed():
    ep, n, k, n_buffer, seen = episodes(), 4000, 4, 2, []
    w = [30.0, -20.0, 0.0]
    # the critic's Q = w . g; the target critic's 0, so that the target is the reward: |TD| = |r(ag', g) - w . g|
    nets = (None, GoalLinearQ(w), lambda x: torch.zeros(len(x), DIM_U), lambda x, u: torch.zeros(len(x), 1))
    norm = fork.Normalizer(DIM_O + DIM_G, 0.01, 200.0, 200.0)  # nothing seen: the identity

    def td_abs(o, o_next, u, ag_next, goals):
        seen.append((ag_next, goals))
        return fork.goal_td_errors(nets, norm, o, o_next, u, ag_next, goals, COMPUTE_REWARD, 0.98, 50.0)

    torch.manual_seed(1)
    x, u, r, from_buffer = fork.sample_goal_td(ep, torch.tensor(float(N_EPS)), n, 0.8, k, n_buffer, td_abs,
                                               COMPUTE_REWARD)
    ((ag_next, goals),) = seen
    # by hand, one candidate at a time
    r_cand = torch.stack([torch.as_tensor(COMPUTE_REWARD(ag_next, goals[:, j], {})) for j in range(k)], 1)
    td = (r_cand - goals @ torch.tensor(w)).abs()
    best = td.argmax(1)
    assert (best != 0).float().mean() > 0.5 and (best != (r_cand - goals @ torch.tensor(w)).argmax(1)).any()
    g = x[0, :, DIM_O:]
    torch.testing.assert_close(x[1, :, DIM_O:], g)
    relabelled = (g != 5.0).any(1)
    assert abs(relabelled.float().mean() - 0.8) < 0.03  # her_future_p
    torch.testing.assert_close(g[relabelled], goals[torch.arange(n), best][relabelled])  # the largest |TD error|
    assert (g[~relabelled] == 5.0).all()  # the rest keep the episode's own goal
    assert r.shape == (n, 1)
    torch.testing.assert_close(r[:, 0], torch.as_tensor(COMPUTE_REWARD(ag_next, g, {})))  # for the goal replayed
    assert 0.2 < (r[relabelled] == 0).float().mean() < 0.9
    torch.testing.assert_close(r[relabelled, 0], r_cand[torch.arange(n), best][relabelled])
    torch.testing.assert_close(from_buffer, (relabelled & (best >= k - n_buffer)).float())
    assert 0.1 < from_buffer.mean() < 0.7


def test_td_errors_of_all_candidates_in_one_pass_equal_one_candidate_at_a_time():
    n, k = 64, 5
    torch.manual_seed(0)
    actor = ddpg_her.Actor(DIM_O + DIM_G, DIM_U, 32, 2, 1.0)
    critic = ddpg_her.Critic(DIM_O + DIM_G, DIM_U, 32, 2, 1.0)
    actor_target, critic_target = copy.deepcopy(actor), ddpg_her.Critic(DIM_O + DIM_G, DIM_U, 32, 2, 1.0)
    with torch.no_grad():
        actor_target.net[-1].bias.fill_(0.5)
    nets = (actor, critic, actor_target, critic_target)
    norm = fork.Normalizer(DIM_O + DIM_G, 0.01, 200.0, 5.0)
    norm.update(torch.randn(500, DIM_O + DIM_G) * 0.1 + 0.3)
    o, o_next, u = torch.randn(n, DIM_O), torch.randn(n, DIM_O), torch.rand(n, DIM_U) * 2 - 1
    ag_next = torch.rand(n, DIM_G) * 0.1
    goals = ag_next[:, None] + torch.randn(n, k, DIM_G) * 0.03  # rewards of both kinds
    gamma, clip_return = 0.98, 0.3  # a tight clip, so that it binds below too
    td = fork.goal_td_errors(nets, norm, o, o_next, u, ag_next, goals, COMPUTE_REWARD, gamma, clip_return)
    by_hand, unclipped, rewards = [], [], []
    with torch.no_grad():
        for j in range(k):
            r = torch.as_tensor(COMPUTE_REWARD(ag_next, goals[:, j], {}))[:, None]
            rewards.append(r)
            x_next = norm(torch.cat([o_next, goals[:, j]], 1))
            unclipped.append(r + gamma * critic_target(x_next, actor_target(x_next)))
            target = unclipped[-1].clamp(-clip_return, 0.0)
            by_hand.append((target - critic(norm(torch.cat([o, goals[:, j]], 1)), u))[:, 0].abs())
    assert td.shape == (n, k)
    torch.testing.assert_close(td, torch.stack(by_hand, 1))
    assert 0.2 < (torch.cat(rewards) == 0).float().mean() < 0.8
    unclipped = torch.cat(unclipped)
    assert (unclipped > 0).float().mean() > 0.05 and (unclipped < -clip_return).float().mean() > 0.05
    assert (unclipped.abs() < clip_return).float().mean() > 0.05


def test_one_future_candidate_draws_ddpg_hers_batch():
    ep = episodes()

    def never(*_):
        raise AssertionError("one candidate: nothing to score")

    torch.manual_seed(3)
    x, u, ag_next = ddpg_her.sample_transitions(ep, torch.tensor(float(N_EPS)), 2000, 0.8)
    torch.manual_seed(3)
    x_fork, u_fork, r, from_buffer = fork.sample_goal_td(ep, torch.tensor(float(N_EPS)), 2000, 0.8, 1, 0, never,
                                                         COMPUTE_REWARD)
    assert torch.equal(x_fork, x) and torch.equal(u_fork, u) and not from_buffer.any()
    assert torch.equal(r[:, 0], torch.as_tensor(COMPUTE_REWARD(ag_next, x[0, :, DIM_O:], {})))


def test_one_future_candidate_is_ddpg_hers_run(tmp_path):
    options = [*TINY, "--env-threads", "1", "--n-epochs", "1"]
    run(tmp_path, *options, "--n-candidates", "1", "--buffer-goal-frac", "0", "--exp-name", "fork")
    run(tmp_path, *options, "--exp-name", "base", script=ddpg_her.__file__)
    fork_rows = metrics(run_dir(tmp_path, "fork"))
    assert [row.pop("buffer_goal_share") for row in fork_rows] == ["0.0"]
    assert fork_rows == metrics(run_dir(tmp_path, "base"))


@pytest.mark.parametrize("options, message", [
    (["--n-candidates", "0"], "--n-candidates must be >= 1 and --buffer-goal-frac in [0, 1], got 0 and 0.5"),
    (["--buffer-goal-frac", "1.5"], "--n-candidates must be >= 1 and --buffer-goal-frac in [0, 1], got 4 and 1.5"),
    (["--n-candidates", "3"], "--buffer-goal-frac 0.5 of --n-candidates 3 is not a whole number of candidates"),
])
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *TINY, "--env-threads", "1", *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
