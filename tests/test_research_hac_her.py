"""research/hac_her.py (the paper's "HER+HRL": Hierarchical Actor-Critic with two levels, the high level's action
replaced in hindsight by the goal the low level reached): a tiny run resumed exactly, whose model.pt evaluate.py refuses
with a message; the transitions stored by a run (hindsight actions, penalties only for missed tested subgoals,
subgoals in the box, tested subgoals acted without noise); and by hand, on small tensors: the low level's goal (its
window's subgoal) and HER within its window, the high level's transitions, the penalty's reward -H with no bootstrap,
the subgoal box; and the options refused."""

import copy
import glob
import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY, metrics, run_dir

fork, SCRIPT, fork_run = load_fork("hac_her")  # the module, its path, test_ddpg_her.py's runner on it
OPTIONS = [*TINY, "--env-threads", "1"]  # FetchReach-v0: T = 50; H = 10 (the default): 5 subgoals an episode
T, H, K, EPS = 50, 10, 5, 0.05  # EPS: Fetch's success threshold


def stored_episodes(path):
    """The episodes of a run's replay buffer (replay/*.npz, in the order stored), as one dict of arrays."""
    parts = [np.load(f) for f in sorted(glob.glob(os.path.join(path, "replay", "*.npz")))]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0].files if key != "idx"}


def reached_by_hand(ep):  # (n, K): did the low level end each H-step window within EPS of its subgoal?
    return np.linalg.norm(ep["ag"][:, H::H] - ep["sg"], axis=-1) <= EPS


def test_tiny_run_resumes_exactly_stores_hacs_transitions_and_evaluate_py_refuses_it(tmp_path):
    # evaluate.py must refuse this two-level policy, clearly
    names = [f"{level}_{part}" for level in ("low", "high")
             for part in ("actor", "critic", "actor_target", "critic_target", "normalizer")]
    check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, OPTIONS, names,
                                        refused="holds no single actor: hac_her.py's policy has two levels")
    whole_dir, path = run_dir(tmp_path, "whole"), run_dir(tmp_path, "parts")
    rows = metrics(path)
    assert rows[1]["env_steps"] == "400"  # low-level steps
    assert {"subgoal_success", "subgoal_penalties", "high_mean_q", "high_critic_loss"} <= rows[0].keys()
    model = torch.load(os.path.join(path, "model.pt"), weights_only=False)
    assert {"low_actor", "high_actor", "low_normalizer", "high_normalizer", "subgoal_box"} <= model.keys()

    # The whole run's 8 episodes (40 subgoals), as stored
    ep = stored_episodes(whole_dir)
    assert ep["sg"].shape == (8, K, 3) and ep["hu"].shape == (8, K, 3) and ep["penalty"].shape == (8, K, 1)
    reached = reached_by_hand(ep)
    # hindsight actions: a missed subgoal's is the achieved goal at the end of its H steps; a reached one's, itself
    end = ep["ag"][:, H::H]
    np.testing.assert_array_equal(ep["hu"][~reached], end[~reached])
    np.testing.assert_array_equal(ep["hu"][reached], ep["sg"][reached])
    assert (~reached).sum() >= 10 and (ep["hu"] != ep["sg"]).any(-1).sum() == (~reached).sum()
    # penalties only for missed subgoals, and only some of them (tested with probability 0.3)
    penalty = ep["penalty"][..., 0] > 0
    assert not (penalty & reached).any() and 0 < penalty.sum() < (~reached).sum()
    # every subgoal in the box (config.json)
    lo, hi = np.array(json.load(open(os.path.join(whole_dir, "config.json")))["subgoal_box"], np.float32)
    assert (ep["sg"] >= lo).all() and (ep["sg"] <= hi).all()


def test_tested_subgoals_are_acted_without_noise_and_penalised_when_missed(tmp_path):
    # Every subgoal tested, every other action uniformly random: the low level's actions of the first cycle (before
    # any update, the normaliser empty: mean 0, std 1, clip 5) are the seeded actor's, noise-free.
    fork_run(tmp_path, *OPTIONS, "--n-epochs", "1", "--n-cycles", "1", "--subgoal-test-p", "1", "--random-eps", "1",
             "--no-bf16-matmul", "--exp-name", "tested")
    path = run_dir(tmp_path, "tested")
    ep = stored_episodes(path)
    penalty, reached = ep["penalty"][..., 0] > 0, reached_by_hand(ep)
    np.testing.assert_array_equal(penalty, ~reached)  # all tested: every missed subgoal is penalised
    assert penalty.any()
    torch.manual_seed(1)  # the script's seed; the low level's actor is the first network it builds
    actor = fork.Actor(10 + 3, 4, 32, 3, 1.0)
    x = np.concatenate([ep["o"][:, :T], np.repeat(ep["sg"], H, axis=1)], -1)  # [o_t, subgoal of t's window]
    with torch.no_grad():
        u = actor(torch.from_numpy(x).clamp(-5, 5))
    torch.testing.assert_close(torch.from_numpy(ep["u"]), u, rtol=1e-5, atol=1e-6)  # (noise: uniform in [-1, 1])


def small_episodes(n_eps=4, dim_g=3, seed=0):
    """Fake episodes of T = 50 steps, H = 10: o[e, t] = (e, t) names the row; goals random in a 10 cm cube, so that
    some are within EPS of others (both rewards occur)."""
    rng = np.random.default_rng(seed)
    e, t = np.meshgrid(np.arange(n_eps), np.arange(T + 1), indexing="ij")
    cube = lambda *shape: rng.uniform(0, 0.1, (*shape, dim_g)).astype(np.float32)  # noqa: E731
    ep = dict(o=np.stack([e, t], -1).astype(np.float32), ag=cube(n_eps, T + 1), g=cube(n_eps, T),
              u=rng.normal(size=(n_eps, T, 4)).astype(np.float32), sg=cube(n_eps, K), hu=cube(n_eps, K),
              penalty=(rng.random((n_eps, K, 1)) < 0.5).astype(np.float32))
    return {k: torch.from_numpy(v) for k, v in ep.items()}


def rows_of(x):  # the (episode, step) of each sampled transition and of its next observation
    return x[0, :, 0].long(), x[0, :, 1].long(), x[1, :, 1].long()


@pytest.mark.parametrize("her_future_p", [0.0, 1.0])
def test_low_level_goal_is_its_windows_subgoal_and_her_stays_in_the_window(her_future_p):
    ep, n = small_episodes(), 20_000
    torch.manual_seed(0)
    x, u, ag_next = fork.sample_transitions(ep, 4, n, her_future_p, H)
    e, t, t_next = rows_of(x)
    g = x[0, :, 2:]
    assert (t_next == t + 1).all() and torch.equal(x[1, :, 2:], g)
    assert torch.equal(u, ep["u"][e, t]) and torch.equal(ag_next, ep["ag"][e, t + 1])
    if her_future_p == 0:
        assert torch.equal(g, ep["sg"][e, t // H])  # the subgoal of step t's window, not the episode's goal
        # the low level's reward (the env's compute_reward, as the script calls it) is against that subgoal
        env = gym.make("FetchReach-v0").unwrapped
        r = env.compute_reward(ag_next, g, {})
        by_hand = -(torch.linalg.norm(ep["ag"][e, t + 1] - ep["sg"][e, t // H], dim=-1) > EPS).float()
        assert torch.equal(torch.as_tensor(r).float(), by_hand) and 0.05 < (by_hand == 0).float().mean() < 0.95
    else:  # an achieved goal of a later step of the same H-step window: t < t' <= (t // H + 1) H, each of them
        match = (g[:, None, :] == ep["ag"][e]).all(-1)  # (n, T + 1): which rows of the episode's ag g is
        assert (match.sum(1) == 1).all()
        t_goal = match.float().argmax(1)
        assert ((t_goal > t) & (t_goal <= (t // H + 1) * H)).all()
        for k in range(K):  # every later step of the window is drawn, the window's end included
            window = t_goal[(t >= k * H + 1) & (t < k * H + 2)]  # t = kH + 1: t' in kH + 2 .. (k+1)H
            assert set(window.tolist()) == set(range(k * H + 2, (k + 1) * H + 1))


@pytest.mark.parametrize("her_future_p", [0.0, 1.0])
def test_high_level_transitions_hindsight_actions_and_penalties(her_future_p):
    ep, n = small_episodes(), 20_000
    torch.manual_seed(0)
    x, u, ag_next, penalty = fork.sample_high_transitions(ep, 4, n, her_future_p, H)
    e, t, t_next = rows_of(x)
    k, penalty = t // H, penalty[:, 0]
    assert (t % H == 0).all() and (t_next == t + H).all() and set(k.tolist()) == set(range(K))
    assert torch.equal(ag_next, ep["ag"][e, t + H])  # the achieved goal at the end of the low level's H steps
    flagged = ep["penalty"][e, k, 0] > 0  # a tested subgoal that was missed
    assert not (penalty & ~flagged).any()  # penalty transitions only there, for half of their draws
    assert abs(penalty[flagged].float().mean() - 0.5) < 0.03
    assert torch.equal(u[penalty], ep["sg"][e, k][penalty])  # the penalty: the subgoal proposed
    assert torch.equal(u[~penalty], ep["hu"][e, k][~penalty])  # else the action in hindsight
    g = x[0, :, 2:]
    assert torch.equal(x[1, :, 2:], g) and torch.equal(g[penalty], ep["g"][e, t][penalty])  # never relabelled
    if her_future_p == 0:
        assert torch.equal(g, ep["g"][e, t])
    else:  # the end of a later window: ag row k'H, k < k' <= K
        match = (g[~penalty][:, None, :] == ep["ag"][e[~penalty]]).all(-1)
        t_goal = match.float().argmax(1)
        assert (match.sum(1) == 1).all() and (t_goal % H == 0).all() and (t_goal > t[~penalty]).all()
        assert set(t_goal[t[~penalty] == 0].tolist()) == set(range(H, T + 1, H))


def test_hindsight_action_replaces_only_missed_subgoals_and_penalises_only_tested_misses():
    env = gym.make("FetchPush-v0").unwrapped
    subgoal = np.array([[1.3, 0.7, 0.42]] * 4, np.float32)
    offsets = np.array([[0.01, 0, 0], [0.2, 0, 0], [0, 0.03, 0], [0, 0, 0.1]], np.float32)  # reached, missed, ...
    ag_end = subgoal + offsets
    testing = np.array([True, True, False, False])
    hu, penalty, reached = fork.hindsight_action(subgoal, ag_end, testing, env.compute_reward)
    np.testing.assert_array_equal(reached, [True, False, True, False])
    np.testing.assert_array_equal(hu, np.where(reached[:, None], subgoal, ag_end))
    np.testing.assert_array_equal(hu[[1, 3]], ag_end[[1, 3]])  # missed: the goal the low level reached
    np.testing.assert_array_equal(penalty[:, 0], [False, True, False, False])  # tested and missed, only
    hu, penalty_kept, _ = fork.hindsight_action(subgoal, ag_end, testing, env.compute_reward, replace=False)
    np.testing.assert_array_equal(hu, subgoal)  # --no-hindsight-actions: the subgoals as proposed, the same penalties
    np.testing.assert_array_equal(penalty_kept, penalty)


def test_penalty_transitions_get_reward_minus_h_and_no_bootstrap():
    env = gym.make("FetchPush-v0").unwrapped
    B, dim_x, dim_g, gamma = 256, 7, 3, 0.98
    g = torch.Generator().manual_seed(1)
    goal = torch.rand(B, dim_g, generator=g) * 0.1
    ag_next = goal + (torch.rand(B, dim_g, generator=g) - 0.5) * 0.1  # some within 5 cm, some not
    penalty = torch.rand(B, 1, generator=g) < 0.3
    r, gammas = fork.high_rewards(ag_next, goal, penalty, env.compute_reward, H, gamma)
    env_r = -(torch.linalg.norm(ag_next - goal, dim=-1) > EPS).float()[:, None]
    assert torch.equal(r, torch.where(penalty, -float(H), env_r)) and (r == 0).any() and (r == -1).any()
    assert torch.equal(gammas, torch.where(penalty, 0.0, gamma))
    # In the update the penalty's target is -H whatever the next state's Q: with Q' > 0 (the target critic's bias
    # +5), a bootstrapped penalty would give -H + gamma Q' > -H.
    torch.manual_seed(0)
    actor, critic = fork.Actor(dim_x, dim_g, 32, 2, 1.0), fork.Critic(dim_x, dim_g, 32, 2, 1.0)
    critic_target = copy.deepcopy(critic)
    with torch.no_grad():
        critic_target.net[-1].bias.fill_(5.0)
    nets = (actor, critic, copy.deepcopy(actor), critic_target)
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    norm = fork.Normalizer(dim_x, 0.01, 200.0, 5.0)
    x, u = torch.randn(2, B, dim_x, generator=g).clamp(-3, 3), torch.rand(B, dim_g, generator=g) * 2 - 1
    with torch.no_grad():
        q_next = critic_target(x[1], nets[2](x[1]))
        target = torch.where(penalty, -float(H), (env_r + gamma * q_next).clamp(-H, 0))  # by hand
        bootstrapped = (r + gamma * q_next).clamp(-H, 0)
        q = critic(x[0], u)
    assert (q_next > 2).all() and ((target - bootstrapped).abs()[penalty[:, 0]] > 1).all()
    stats = fork.update(nets, optimizer, norm, x, u, r, gammas, float(H), 1.0)
    assert stats[1].item() == pytest.approx(((q - target) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("env_id", ["FetchPush-v0", "FetchPickAndPlace-v0"])
def test_subgoal_box_holds_the_tasks_goals_and_bounds_the_high_levels_subgoals(env_id):
    env = gym.make(env_id)
    lo, hi = fork.subgoal_box(env, EPS)
    goals = np.array([obs[key] for seed in range(1000, 1300) for obs in [env.reset(seed=seed)[0]]
                      for key in ("desired_goal", "achieved_goal")])  # other seeds than the box's
    assert (goals >= lo + 0.04).all() and (goals <= hi - 0.04).all()  # inside, with (nearly) the 5 cm margin
    assert np.allclose(hi[:2] - lo[:2], 0.3 + 2 * EPS, atol=0.01)  # the tasks' +-15 cm, and the margin
    height = hi[2] - lo[2]
    assert (0.4 < height < 0.6) if "PickAndPlace" in env_id else (height == pytest.approx(2 * EPS, abs=1e-4))
    # The high actor's actions, tanh in [-1, 1], are subgoals in the box; its corners are the box's
    a = torch.rand(1000, 3) * 2 - 1
    for sub in (fork.to_subgoal(a.numpy(), lo, hi), fork.to_subgoal(a, *map(torch.from_numpy, (lo, hi))).numpy()):
        assert (sub >= lo).all() and (sub <= hi).all()
    np.testing.assert_allclose(fork.to_subgoal(np.array([-1.0, 1.0])[:, None], lo, hi), np.stack([lo, hi]), atol=1e-6)
    sub = fork.to_subgoal(a.numpy(), lo, hi)
    np.testing.assert_allclose(fork.to_action(sub, lo, hi), a.numpy(), atol=1e-5)


@pytest.mark.parametrize("options, message", [
    (["--subgoal-horizon", "7"], "--subgoal-horizon 7 must divide the episode length T = 50"),
    (["--subgoal-horizon", "0"], "--subgoal-horizon 0 must divide"),
    (["--subgoal-test-p", "1.5"], "--subgoal-test-p must be in [0, 1]"),
    (["--subgoal-margin", "-0.1"], "--subgoal-margin > 0, got 0.3 and -0.1"),
    (["--subgoal-margin", "0"], "--subgoal-margin > 0, got 0.3 and 0.0"),
    (["--capture-video"], "--capture-video records evaluate.py's test episode of one actor"),
])
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = fork_run(tmp_path, *OPTIONS, *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
