"""research/ddpg_her_relay_nstep.py (the reach task and n-step returns together): n=1 is ddpg_her_relay.py's target on
the same batch, a 3-step target by hand for both tasks (the main task's rewards from the object, the reach task's
from the gripper, each under its own goal; the cut at the episode's end), a smoke run with resume and evaluation."""

import copy

import gymnasium as gym
import numpy as np
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY  # the tiny budget
from test_research_ddpg_her_nstep import recorded_targets  # every F.mse_loss(q, target) target, recorded

fork, SCRIPT, run = load_fork("ddpg_her_relay_nstep")  # the module, its path, test_ddpg_her.py's runner on it
relay = load_fork("ddpg_her_relay")[0]
PUSH = [*TINY, "--env-id", "FetchPush-v0", "--env-threads", "1"]  # (tyro: the later --env-id wins)
ENV = gym.make("FetchPush-v0").unwrapped  # compute_reward: 0 within 0.05 of the goal, else -1
GAMMA, CLIP = 0.98, 50.0

# Tiny deterministic episodes, T = 6: o[e, t] = (gripper x, 0, 0, e, t); the gripper and the object (ag) move along x
# by 0, 0.1 or 0.2 m a step, so that some relabelled goals are achieved at several steps; episode 0's desired goal is
# reached at one step, episode 1's never.
T, N_EPS, DIM_O = 6, 2, 5
GRIP_X = [[0.0, 0.2, 0.3, 0.3, 0.5, 0.6, 0.6], [0.1, 0.1, 0.3, 0.4, 0.4, 0.6, 0.8]]
OBJ_X = [[0.0, 0.1, 0.1, 0.2, 0.3, 0.3, 0.5], [0.0, 0.0, 0.2, 0.3, 0.3, 0.3, 0.4]]
DESIRED = [[0.2, 0.0, 0.0], [5.0, 5.0, 5.0]]


def tiny_episodes():
    t = np.arange(T + 1, dtype=np.float32)
    o = np.stack([np.stack([np.array(GRIP_X[e], np.float32), 0 * t, 0 * t, np.full_like(t, e), t], 1)
                  for e in range(N_EPS)])
    ag = np.stack([np.stack([np.array(x, np.float32), 0 * t, 0 * t], 1) for x in OBJ_X])
    g = np.repeat(np.array(DESIRED, np.float32)[:, None], T, 1)
    u = np.zeros((N_EPS, T, 2), np.float32)
    return {k: torch.from_numpy(v) for k, v in dict(o=o, ag=ag, g=g, u=u).items()}


def pi_stub(o):  # pi'(o) of the stub target actor below: depends on the step t = o[4]
    return np.array([0.05 * o[4], -0.05])


def q_stub(o, goal, u):  # Q' of the stub target critic: the step, the task's goal (the other slot is 0), the action
    return -(0.1 + 0.01 * o[4] + 0.3 * goal[0] + u[0])


class StubActor(torch.nn.Module):
    def forward(self, x):
        return torch.stack([0.05 * x[:, 4], torch.full_like(x[:, 4], -0.05)], 1)


class StubCritic(torch.nn.Module):  # x: [o (5), g (3), gr (3)], one goal slot empty (0) per task
    def forward(self, x, u):
        return -(0.1 + 0.01 * x[:, 4:5] + 0.3 * (x[:, 5:6] + x[:, 8:9]) + u[:, :1])


def targets_on_a_batch(monkeypatch, module, n_step=None, target_nets=None, seed=4, batch_size=2000):
    """`module`'s targets on a batch of the tiny episodes, half of it the reach task, with an identity normaliser;
    target_nets: stub target networks (default: random ones). Returns the batch and its targets."""
    torch.manual_seed(seed)
    ep = tiny_episodes()
    dim = DIM_O + 3
    torch.manual_seed(0)
    nets = [module.Actor(dim, 2, 8, 1, 1.0), module.Critic(dim, 2, 8, 1, 1.0)]
    nets = (*nets, *(target_nets or copy.deepcopy(nets)))
    if target_nets is None:
        with torch.no_grad():  # Q' unlike Q and of both signs: not all targets clip to 0
            nets[3].net[-1].bias.fill_(-0.5)
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    norm = module.Normalizer(dim, 0.01, 1e6, 1e6)  # nothing seen: mean 0, std 1, i.e. the identity
    targets = recorded_targets(monkeypatch)
    torch.manual_seed(seed)
    if module is relay:
        x, u, achieved, goal, reach = relay.sample_transitions(ep, N_EPS, batch_size, 0.8, 0.5)
        r = ENV.compute_reward(achieved, goal, {}).float()[:, None]
        relay.update(nets, optimizer, norm, x, reach, u, r, GAMMA, CLIP, 1.0)
        k = None
    else:
        x, u, achieved, goal, reach, k = fork.sample_transitions(ep, N_EPS, batch_size, 0.8, 0.5, n_step)
        r, discount = fork.n_step_returns(ENV.compute_reward, achieved, goal, k, GAMMA)
        fork.update(nets, optimizer, norm, x, reach, u, r, discount, CLIP, 1.0)
    return ep, x, reach[:, 0], k, targets[0][:, 0]


def test_one_step_is_the_relay_forks_target(monkeypatch):
    """On the same batch (same seed), --n-step 1 regresses on exactly ddpg_her_relay.py's 1-step targets, both tasks."""
    _, x_relay, reach, _, base = targets_on_a_batch(monkeypatch, relay)
    _, x_fork, reach_fork, _, ours = targets_on_a_batch(monkeypatch, fork, n_step=1)
    torch.testing.assert_close(x_fork, x_relay, rtol=0, atol=0)  # the same transitions, goals and tasks
    assert (reach == reach_fork).all() and reach.any() and not reach.all()
    assert (base < -0.5).any() and ((base > -0.5) & (base < 0)).any()  # rewards 0 and -1, bootstraps not clipped
    torch.testing.assert_close(ours, base, rtol=1e-6, atol=1e-6)
    _, _, _, _, three = targets_on_a_batch(monkeypatch, fork, n_step=3)  # ...and 3 steps give other targets
    assert (three - base).abs().max() > 0.1


def by_hand(ep, e, t, goal, reach, n_step):
    """One sample's n-step target, a loop over its steps: the reach task's rewards compare the gripper's positions
    with its goal gr, the main task's the object's positions with g; the bootstrap from o[t+k], k = min(n, T - t)."""
    o = ep["o"][e].numpy()
    position = o[:, :3] if reach else ep["ag"][e].numpy()
    k = min(n_step, T - t)
    y = sum(GAMMA**i * float(ENV.compute_reward(position[t + 1 + i], goal, {})) for i in range(k))
    y += GAMMA**k * q_stub(o[t + k], goal, pi_stub(o[t + k]))
    return min(max(y, -CLIP), 0.0)


def test_three_step_target_by_hand_for_both_tasks(monkeypatch):
    ep, x, reach, k, targets = targets_on_a_batch(monkeypatch, fork, 3, (StubActor(), StubCritic()))
    e, t = x[0, :, 3].long().numpy(), x[0, :, 4].long().numpy()
    g, gr = x[0, :, DIM_O : DIM_O + 3].numpy(), x[0, :, DIM_O + 3 :].numpy()
    goal = np.where(reach.numpy()[:, None], gr, g)
    np.testing.assert_array_equal(k.numpy(), np.minimum(3, T - t))  # every step, those cut at the end included
    assert set(t) == set(range(T)) and set(k.tolist()) == {1, 2, 3}
    expected = np.array([by_hand(ep, e[b], t[b], goal[b], reach[b], 3) for b in range(len(t))])
    np.testing.assert_allclose(targets.numpy(), expected, rtol=1e-5, atol=1e-6)
    # The batch has rows that only the right task's positions reach: rewarded steps in each task, and targets that
    # differ if the reach task's rewards came from the object instead of the gripper.
    wrong = np.array([by_hand(ep, e[b], t[b], goal[b], not reach[b], 3) for b in range(len(t))])
    differs = np.abs(wrong - expected) > 0.1
    assert differs[reach.numpy()].any() and differs[~reach.numpy()].any()


# ---- end to end (last, so that with -x a broken target stops the run before these slow tests) ------------------------
def test_runs_resumes_exactly_and_evaluates(tmp_path):
    check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, PUSH, (
        "actor", "critic", "actor_target", "critic_target", "normalizer"), env_id="FetchPush-v0")


def test_bad_n_step_is_refused(tmp_path):
    proc = run(tmp_path, "--n-step", "0", check=False)
    assert proc.returncode != 0 and "--n-step must be >= 1, got 0" in proc.stderr and "Traceback" not in proc.stderr
