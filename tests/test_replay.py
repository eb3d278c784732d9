"""The replay buffer and HER 'future' relabelling of ddpg_her.py, and the four scripts staying copies of each other."""

import difflib
import os
import re
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import ddpg_her  # noqa: E402

T, N_EPS = 50, 7


def episodes():
    """Episodes whose every entry encodes where it came from: ag[e, t] = (e, t, 0), o[e, t] = (e, t, 1, 1), and
    desired goals g[e, t] = (e, -1, 0), which no achieved goal equals."""
    e, t = np.meshgrid(np.arange(N_EPS), np.arange(T + 1), indexing="ij")
    ag = np.stack([e, t, np.zeros_like(e)], -1).astype(np.float32)
    o = np.stack([e, t, np.ones_like(e), np.ones_like(e)], -1).astype(np.float32)
    g = np.stack([e[:, :T], -np.ones_like(e[:, :T]), np.zeros_like(e[:, :T])], -1).astype(np.float32)
    u = np.stack([e[:, :T], t[:, :T], e[:, :T], t[:, :T]], -1).astype(np.float32)
    return dict(o=o, ag=ag, g=g, u=u)


def sample(ep, n, p, seed):
    """ddpg_her.sample_transitions on torch tensors of `ep`, seeded, as numpy arrays."""
    torch.manual_seed(seed)
    out = ddpg_her.sample_transitions({k: torch.from_numpy(v) for k, v in ep.items()}, N_EPS, n, p)
    return [a.numpy() for a in out]


def reference_sample(ep, n, her_future_p, rng):
    """Baselines' her_sampler.py 'future' strategy in numpy, as ddpg_her.py sampled before its replay moved to torch:
    the distribution the torch sampler must keep."""
    n_eps, T = ep["u"].shape[:2]
    e, t = rng.integers(0, n_eps, n), rng.integers(0, T, n)
    future_t = t + 1 + (rng.random(n) * (T - t)).astype(np.int64)
    g = np.where((rng.random(n) < her_future_p)[:, None], ep["ag"][e, future_t], ep["g"][e, t])
    return np.stack([np.concatenate([ep["o"][e, t], g], 1), np.concatenate([ep["o"][e, t + 1], g], 1)])


@pytest.mark.parametrize("p", [0.0, 0.8, 1.0])
def test_future_relabelling(p):
    n = 20_000
    x, u, ag_next = sample(episodes(), n, p, 0)
    assert x.shape == (2, n, 4 + 3) and x.dtype == np.float32
    o, o2, goal = x[0, :, :4], x[1, :, :4], x[0, :, 4:]
    e, t = o[:, 0].astype(int), o[:, 1].astype(int)
    # o' is the next observation of the same episode, u the action taken at t, ag_next the goal achieved at t+1.
    np.testing.assert_array_equal(o2[:, 0], e)
    np.testing.assert_array_equal(o2[:, 1], t + 1)
    np.testing.assert_array_equal(u[:, :2], np.stack([e, t], 1))
    np.testing.assert_array_equal(ag_next[:, :2], np.stack([e, t + 1], 1))
    # Both halves carry the same goal.
    np.testing.assert_array_equal(x[1, :, 4:], goal)
    np.testing.assert_array_equal(goal[:, 0], e)  # always a goal of the same episode
    relabelled = goal[:, 1] >= 0
    assert abs(relabelled.mean() - p) < 0.015
    # A relabelled goal was achieved at a uniformly drawn later step t' in {t+1, ..., T} (Baselines' 'future').
    future = goal[relabelled, 1].astype(int)
    assert np.all(future > t[relabelled]) and np.all(future <= T)
    if p > 0:
        # For t = 0 the T choices are equally likely: each within 3.5 standard deviations of n/T.
        f0 = future[t[relabelled] == 0]
        counts = np.bincount(f0, minlength=T + 1)[1:]
        assert np.all(np.abs(counts - len(f0) / T) < 3.5 * np.sqrt(len(f0) / T)), counts
    # Every step and every episode is drawn.
    assert set(np.unique(e)) == set(range(N_EPS)) and set(np.unique(t)) == set(range(T))


def test_future_offsets_are_uniform_for_every_step():
    """The whole distribution of t' given t: uniform on {t+1, ..., T} for every t, the final state T included (a
    chi-square test over all (t, t') cells, and the final state's share alone)."""
    n = 400_000
    x, _, _ = sample(episodes(), n, 1.0, 3)
    t, future = x[0, :, 1].astype(int), x[0, :, 5].astype(int)
    assert (future > t).all() and (future <= T).all()
    counts = np.zeros((T, T + 1))
    np.add.at(counts, (t, future), 1)
    n_t = counts.sum(1, keepdims=True)
    expected = np.where(np.arange(T + 1)[None, :] > np.arange(T)[:, None], n_t / (T - np.arange(T))[:, None], 0.0)
    cells = expected > 0
    chi2 = ((counts[cells] - expected[cells]) ** 2 / expected[cells]).sum()
    dof = cells.sum() - T
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)  # about 6 standard deviations above its mean
    # The final state is the goal of 1/(T - t) of the relabelled samples of step t, e.g. 2% at t = 0.
    final = counts[:, T].sum() / expected[:, T].sum()
    assert 0.97 < final < 1.03, final


def test_the_torch_sampler_keeps_the_numpy_reference_distribution():
    """Two-sample chi-square tests of the torch sampler against Baselines' numpy sampler (as ddpg_her.py sampled
    before): the joint distribution of (t, t') over relabelled and kept goals, of the episode, and of (e, t)."""
    n, ep = 200_000, episodes()
    ours = sample(ep, n, 0.8, 5)[0]
    ref = reference_sample(ep, n, 0.8, np.random.default_rng(5))

    def cells(x):  # e, t, and t' (or -1: the episode's own goal kept)
        return x[0, :, 0].astype(int), x[0, :, 1].astype(int), np.where(x[0, :, 5] >= 0, x[0, :, 5], -1).astype(int)

    for key in (lambda e, t, f: t * (T + 2) + f + 1, lambda e, t, f: e, lambda e, t, f: e * T + t):
        a, b = (np.bincount(key(*cells(x)), minlength=N_EPS * (T + 2) ** 2) for x in (ours, ref))
        used = (a + b) > 0
        chi2, dof = ((a[used] - b[used]) ** 2 / (a[used] + b[used])).sum(), used.sum() - 1
        assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)


def test_relabelled_rewards_come_from_the_env():
    """With the env's compute_reward on the sampler's tensors, a goal relabelled to the very next achieved goal gets
    reward 0, others -1."""
    import gymnasium as gym

    env = gym.make("FetchReach-v0")
    torch.manual_seed(1)
    x, _, ag_next = ddpg_her.sample_transitions({k: torch.from_numpy(v) for k, v in episodes().items()}, N_EPS, 5000,
                                                1.0)
    r = env.unwrapped.compute_reward(ag_next, x[0, :, 4:], {})
    assert isinstance(r, torch.Tensor)
    np.testing.assert_array_equal((r == 0).numpy(), (x[0, :, 5] == x[0, :, 1] + 1).numpy())


def test_replay_fills_in_order_then_overwrites_random_episodes():
    dims = dict(o=4, ag=3, g=3, u=4)
    replay = ddpg_her.EpisodeReplay(5 * T, T, dims, np.random.default_rng(0))  # room for 5 episodes
    ep = episodes()
    replay.store({k: v[:3] for k, v in ep.items()})
    assert replay.n == 3
    np.testing.assert_array_equal(replay.ep["ag"][:3].numpy(), ep["ag"][:3])
    replay.store({k: v[3:7] for k, v in ep.items()})  # 4 more: 2 fill the buffer, 2 overwrite random old ones
    assert replay.n == 5
    np.testing.assert_array_equal(replay.ep["ag"][3:5].numpy(), ep["ag"][3:5])
    stored = sorted(int(a[0, 0]) for a in replay.ep["ag"])
    assert replay.n_eps.item() == 5  # the count a CUDA graph reads
    assert {5, 6} <= set(stored) and len(set(stored)) == 5
    x, _, _ = replay.sample(1000, 0.8)
    assert set(np.unique(x[0, :, 0].numpy()).astype(int)) == set(stored)


def test_a_slot_drawn_twice_keeps_the_later_episode():
    """Overwriting picks random slots, so one store can draw a slot twice: the later episode must win, whole (numpy's
    rule; on a GPU two writes to one slot would race and could mix the two episodes)."""
    dims = dict(o=4, ag=3, g=3, u=4)
    replay = ddpg_her.EpisodeReplay(3 * T, T, dims, np.random.default_rng(0))
    ep = episodes()
    replay.store({k: v[:3] for k, v in ep.items()})
    replay.store({k: v[3:6] for k, v in ep.items()}, idx=np.array([1, 2, 1]))  # episodes 3 and 5 both go to slot 1
    assert [int(replay.ep["ag"][i, 0, 0]) for i in range(3)] == [0, 5, 4]
    for k in ep:
        np.testing.assert_array_equal(replay.ep[k][1].numpy(), ep[k][5])


# The lines in which the four scripts may differ: their configuration, and nothing else.
CONFIG_LINES = re.compile(r"^(#|DENSE = |USE_HER = |    env_id: str = |    replay_k: |    \"\"\"HER 'future' "
                          r"|    her_future_p = |                # Baselines: the normaliser sees |\s+\(\"must be >= 0\")")


@pytest.mark.parametrize("script", ["ddpg_her_dense.py", "ddpg.py", "ddpg_dense.py"])
def test_the_four_scripts_differ_only_in_their_configuration(script):
    """A fix to one script must reach the others: they repeat each other on purpose, in everything but the config."""
    lines = {name: open(os.path.join(ROOT, name)).read().splitlines() for name in ("ddpg_her.py", script)}
    diff = [line for line in difflib.unified_diff(lines["ddpg_her.py"], lines[script], lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    unexpected = [line for line in diff if not CONFIG_LINES.match(line[1:])]
    assert not unexpected, f"{script} differs from ddpg_her.py outside its configuration:\n" + "\n".join(unexpected)
