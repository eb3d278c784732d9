"""research/ddpg_her_frequent.py (the paper's "RL with very frequent actions") and the envs' n_substeps option: the
default env is the explicit n_substeps=20 one bit for bit, the start state does not depend on the frequency, a step
simulates n_substeps * 2 ms, an action means the same speed at any frequency, bad n_substeps are refused; the fork at
25 Hz is ddpg_her.py metric for metric, at 50 Hz it keeps the seconds per episode and the discount per second and
resumes exactly with both remedies; the n-step target by hand, and parameter noise perturbs the weights per env and
adapts its std to the target distance."""

import copy
import json
import math
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from fork_checks import ROOT, check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import SCRIPT as DDPG_HER
from test_ddpg_her import TINY, metrics, run_dir

import envs  # noqa: F401  (registers the ids)

fork, SCRIPT, run = load_fork("ddpg_her_frequent")  # the module, its path, test_ddpg_her.py's runner on it
TIMESTEP = 0.002  # MuJoCo's step in every model here
torch.set_num_threads(1)  # tiny tensors: on a shared machine more threads only wait for each other


# ---- the envs' n_substeps -----------------------------------------------------------------------------------------
def rollout_states(env, seed, n_steps, actions_seed=0):
    obs, _ = env.reset(seed=seed)
    rng, out = np.random.default_rng(actions_seed), [obs]
    for _ in range(n_steps):
        out.append(env.step(rng.uniform(-1, 1, env.action_space.shape))[0])
    return out


@pytest.mark.parametrize("env_id", ["FetchPickAndPlace-v0", "HandManipulateBlockRotateZ-v0"])
def test_default_env_is_explicit_n_substeps_20_bit_for_bit(env_id):
    default, explicit = gym.make(env_id), gym.make(env_id, n_substeps=20)
    assert explicit.unwrapped.dt == default.unwrapped.dt == 0.04 and explicit.spec.max_episode_steps == \
        default.spec.max_episode_steps
    for a, b in zip(rollout_states(default, 3, 5), rollout_states(explicit, 3, 5)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    vec_default, vec_explicit = gym.make_vec(env_id, num_envs=2, nthread=1), envs.make_vec(env_id, 2, 1, n_substeps=20)
    actions = np.random.default_rng(1).uniform(-1, 1, (2, *default.action_space.shape))
    for vec in (vec_default, vec_explicit):
        vec.reset(seed=5)
    for a, b in zip(vec_default.step(actions)[0].values(), vec_explicit.step(actions)[0].values()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_id", ["FetchPush-v0", "HandManipulateBlockRotateZ-v0"])
def test_start_state_and_goal_do_not_depend_on_the_frequency(env_id):
    """Warm-up (Fetch) and settling (hand) run steps of 20 substeps whatever n_substeps."""
    states = []
    for k in (20, 2):
        env = gym.make(env_id, n_substeps=k)
        obs, _ = env.reset(seed=7)
        data = env.unwrapped.data
        states.append((data.qpos.copy(), data.qvel.copy(), obs["achieved_goal"], obs["desired_goal"]))
    for a, b in zip(*states):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", [10, 5, 2])
def test_a_step_simulates_n_substeps_and_an_episode_the_same_seconds(k):
    env = gym.make("FetchReach-v0", n_substeps=k, max_episode_steps=50 * 20 // k)
    assert env.unwrapped.dt == pytest.approx(k * TIMESTEP) and env.unwrapped.n_substeps == k
    env.reset(seed=0)
    data, steps = env.unwrapped.data, 0
    t0 = data.time
    while True:
        _, _, terminated, truncated, _ = env.step(np.zeros(4))
        steps += 1
        assert data.time - t0 == pytest.approx(steps * k * TIMESTEP)
        if terminated or truncated:
            break
    assert steps == 50 * 20 // k and data.time - t0 == pytest.approx(2.0)  # the 25 Hz episode's 50 x 40 ms
    # With absolute targets (the hand's actions), two steps of 10 substeps are one step of 20, bit for bit.
    ends = []
    for k, n in ((20, 1), (10, 2)):
        hand = gym.make("HandReach-v0", n_substeps=k)
        hand.reset(seed=2)
        for _ in range(n):
            hand.step(np.full(20, 0.3))
        ends.append(hand.unwrapped.data.qpos.copy())
    np.testing.assert_array_equal(*ends)


def test_an_action_means_the_same_speed_at_any_frequency():
    """The weld (mocap) and position actuators pull with a force set by the action's offset: the gripper covers about
    the same distance in 0.4 s at 25 and 250 Hz under a constant action (scaling offsets by k/20 would give 1/7)."""
    moved = {}
    for k in (20, 2):
        env = gym.make("FetchPickAndPlace-v0", n_substeps=k, max_episode_steps=1000)
        obs, _ = env.reset(seed=0)
        start = obs["observation"][[0, 9]] + [0, obs["observation"][10]]  # gripper x, finger opening
        for _ in range(round(0.4 / (k * TIMESTEP))):
            obs = env.step(np.array([1.0, 0.0, 0.0, 0.02]))[0]
        moved[k] = obs["observation"][[0, 9]] + [0, obs["observation"][10]] - start
    assert moved[20][0] > 0.2 and moved[20][1] > 0.05  # it moves, and opens
    ratio = moved[2] / moved[20]
    assert 0.8 < ratio[0] < 1.5 and 0.9 < ratio[1] < 1.1, moved


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "2", None])
def test_bad_n_substeps_are_refused(bad):
    with pytest.raises(ValueError, match="n_substeps must be a positive integer"):
        gym.make("FetchReach-v0", n_substeps=bad)
    with pytest.raises(ValueError, match="n_substeps must be a positive integer"):
        gym.make_vec("HandReach-v0", num_envs=2, n_substeps=bad)


# ---- the fork, end to end -----------------------------------------------------------------------------------------
def test_at_25_hz_without_remedies_it_is_ddpg_her(tmp_path):
    run(tmp_path, *TINY, "--env-threads", "1", "--n-epochs", "1", "--exp-name", "fork")
    run(tmp_path, *TINY, "--env-threads", "1", "--n-epochs", "1", "--exp-name", "base", script=DDPG_HER)
    rows, base = metrics(run_dir(tmp_path, "fork")), metrics(run_dir(tmp_path, "base"))
    assert [{k: row[k] for k in base[0]} for row in rows] == base
    assert rows[0]["sim_seconds"] == str(float(rows[0]["env_steps"]) * 0.04)


def test_50_hz_with_both_remedies_resumes_exactly_same_seconds_and_discount_per_second(tmp_path):
    options = [*TINY, "--env-threads", "1", "--n-cycles", "1", "--frequency-hz", "50", "--param-noise", "--n-step", "2"]
    whole, _ = check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, options, (
        "actor", "critic", "actor_target", "critic_target", "normalizer", "param_noise"))
    with open(os.path.join(run_dir(tmp_path, "whole"), "config.json")) as f:
        config = json.load(f)
    assert config["T"] == 100 and config["env_kwargs"] == dict(n_substeps=10, max_episode_steps=100)
    assert config["gamma"] == pytest.approx(0.98**0.5, abs=1e-12)  # per second as at 25 Hz: gamma^2 per 40 ms
    assert config["gamma"] ** 100 == pytest.approx(0.98**50)  # the same discount over an episode's 2 s
    assert config["n_step_steps"] == 4 and config["step_seconds"] == pytest.approx(0.02)
    rows = metrics(run_dir(tmp_path, "whole"))
    assert [int(r["env_steps"]) for r in rows] == [200, 400] and [int(r["episodes"]) for r in rows] == [2, 4]
    assert [float(r["sim_seconds"]) for r in rows] == pytest.approx([4.0, 8.0])  # 2 s an episode, as at 25 Hz
    assert float(rows[-1]["param_noise_std"]) != 0.05 and float(rows[-1]["param_noise_distance"]) > 0  # adapted
    assert whole["env_kwargs"] == config["env_kwargs"]  # model.pt and checkpoint.pt record the env's frequency
    proc = run(tmp_path, run_dir(tmp_path, "parts"), "--episodes", "1", script=os.path.join(ROOT, "evaluate.py"))
    assert "FetchReach-v0 (n_substeps=10, max_episode_steps=100): test success" in proc.stdout, proc.stdout


@pytest.mark.parametrize("options, message", [
    (["--frequency-hz", "30"], "--frequency-hz must be one of 25, 50, 100, 125, 250, 500"),
    (["--n-step", "-1"], "--n-step must be >= 0"),
    (["--param-noise-alpha", "1"], "--param-noise-alpha > 1"),
])
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *TINY, "--env-threads", "1", *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---- the n-step target --------------------------------------------------------------------------------------------
ENV = gym.make("FetchReach-v0").unwrapped  # compute_reward: 0 within 0.05 of the goal, else -1


def walk_episodes(n_eps=6, T=40, seed=0):
    """Episodes whose o encodes (episode, step) in its first two features; ag walks ~2 cm a step."""
    rng = np.random.default_rng(seed)
    ag = 1.0 + np.cumsum(rng.normal(0, 0.015, (n_eps, T + 1, 3)), 1)
    index = np.stack(np.meshgrid(np.arange(n_eps), np.arange(T + 1), indexing="ij"), 2)
    o = np.concatenate([index, ag, rng.normal(0, 1, (n_eps, T + 1, 5))], 2)
    g = np.repeat(ag[:, -1:] + rng.normal(0, 0.03, (n_eps, 1, 3)), T, 1)
    u = rng.uniform(-1, 1, (n_eps, T, 4))
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in dict(o=o, ag=ag, g=g, u=u).items()}


def test_n_step_target_by_hand():
    T, n, gamma, dim_o = 40, 4, 0.98**0.5, 10
    ep = walk_episodes(T=T)
    torch.manual_seed(0)
    x, u, ag_next, k = fork.sample_transitions(ep, 6, 512, 0.8, n)
    r, discount = fork.n_step_returns(ENV.compute_reward, ag_next, x[0, :, dim_o:], k, gamma)
    cut, seen = 0, set()
    for row in range(512):
        e, t = int(x[0, row, 0]), int(x[0, row, 1])
        g = x[0, row, dim_o:].numpy()
        steps = min(n, T - t)
        cut += steps < n
        assert k[row] == steps
        np.testing.assert_array_equal(x[1, row], torch.cat([ep["o"][e, t + steps], x[0, row, dim_o:]]))
        np.testing.assert_array_equal(u[row], ep["u"][e, t])
        rewards = [float(ENV.compute_reward(ep["ag"][e, t + 1 + i].numpy(), g, {})) for i in range(steps)]
        seen |= set(rewards)
        assert r[row, 0].item() == pytest.approx(sum(gamma**i * ri for i, ri in enumerate(rewards)), abs=1e-5)
        assert discount[row, 0].item() == pytest.approx(gamma**steps, rel=1e-6)
    assert 10 < cut and seen == {0.0, -1.0}  # targets cut at the episode's end, and both rewards
    # The update regresses Q on r + gamma^k Q'(o[t+k], g', pi'(o[t+k])), clipped to [-clip, 0].
    torch.manual_seed(1)
    nets = [fork.Actor(13, 4, 16, 2, 1.0), fork.Critic(13, 4, 16, 2, 1.0)]
    nets = (*nets, *copy.deepcopy(nets))
    with torch.no_grad():
        nets[3].net[-1].bias.fill_(-0.3)
    norm = fork.Normalizer(13, 0.01, 200.0, 5.0)
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    with torch.no_grad():
        xn = norm(x.clone())
        target = (r + discount * nets[3](xn[1], nets[2](xn[1]))).clamp(-50.0, 0.0)
        q = nets[1](xn[0], u)
    stats = fork.update(nets, optimizer, norm, x, u, r, discount, 50.0, 1.0)
    assert stats[1].item() == pytest.approx(((q - target) ** 2).mean().item(), rel=1e-5)


# ---- parameter-space noise ----------------------------------------------------------------------------------------
def small_actor(seed=0):
    torch.manual_seed(seed)
    return fork.Actor(7, 3, 16, 2, 1.0)


def copy_actor(actor, noise, i):
    """A copy of the actor whose parameters have env i's noise added."""
    copy_i = copy.deepcopy(actor)
    with torch.no_grad():
        for p, n in zip(copy_i.net.parameters(), noise):
            p.add_(n[i])
    return copy_i


def test_param_noise_perturbs_each_envs_weights_for_its_rows():
    actor, noise_spec = small_actor(), fork.ParamNoise(0.1, 0.2, 1.01)
    noise = noise_spec.sample(actor, 3)
    params = list(actor.net.parameters())
    assert [tuple(n.shape) for n in noise] == [(3, *p.shape) for p in params]
    flat = torch.cat([n.flatten(1) for n in noise], 1)
    assert flat.std().item() == pytest.approx(0.1, rel=0.1) and not torch.equal(flat[0], flat[1])
    x = torch.randn(3, 5, 7)
    with torch.no_grad():
        out = fork.perturbed_actions(actor, x, fork.perturb(actor, noise))
        torch.testing.assert_close(fork.perturbed_actions(actor, x[:1], fork.perturb(actor)), actor(x[0])[None])
        for i in range(3):  # by hand: a copy of the actor with env i's noise added to its weights
            torch.testing.assert_close(out[i], copy_actor(actor, noise, i)(x[i]))
        assert (out - actor(x)).abs().max() > 0.01
    with torch.no_grad():  # the RMS over envs, rows and action dims, as a fraction of max_u (1 here)
        by_hand = (out.new_tensor(np.stack([copy_actor(actor, noise, i)(x[0]).numpy() for i in range(3)]))
                   - actor(x[0])).square().mean().sqrt()
    assert fork.action_distance(actor, x[0], noise) == pytest.approx(by_hand.item(), rel=1e-5)


def test_param_noise_adapts_its_std_to_the_target_distance():
    noise_spec = fork.ParamNoise(0.1, 0.2, 1.01)
    noise_spec.adapt(0.3)
    assert noise_spec.std.item() == pytest.approx(0.1 / 1.01) and noise_spec.distance.item() == 0.3
    noise_spec.adapt(0.1)
    assert noise_spec.std.item() == pytest.approx(0.1)
    # Adapted once per cycle on real distances, from far too large and far too small: the distance reaches the target.
    actor, x = small_actor(1), torch.randn(256, 7)
    for std in (1.0, 0.001):
        noise_spec = fork.ParamNoise(std, 0.2, 1.05)
        for _ in range(400):
            noise_spec.adapt(fork.action_distance(actor, x, noise_spec.sample(actor, 4)))
        tail = [fork.action_distance(actor, x, noise_spec.sample(actor, 4)) for _ in range(20)]
        assert 0.13 < np.mean(tail) < 0.27, (std, noise_spec.std, tail)
    assert math.isfinite(noise_spec.std.item())
