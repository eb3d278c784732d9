"""What every research fork keeps of ddpg_her.py (its own copy, as a single-file fork must): the observation
normaliser, the DDPG actor loss, and the polyak-averaged target networks behave as ddpg_her.py's. Each fork's own tests
check its idea; these check the copies, where a break (a sign, a running statistic that stops moving) would otherwise
pass every test (issue 32's sweep, tests/mutation_check.py '*@*')."""

import copy
import os
import sys

import pytest
import torch
from fork_checks import load_fork
from test_ddpg_her import TINY, run_dir

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ddpg_her  # noqa: E402

# ddpg_her.py's update signature, update(nets, optimizer, norm, x, u, r, gamma, clip_return, action_l2), and its actor
DDPG_UPDATE = ["ddpg_her_goal_td", "ddpg_her_qr", "ddpg_her_frequent", "hac_her"]
TARGETS = ["ddpg_her_nstep", "ddpg_her_prioritized", "ddpg_her_relay", "ddpg_her_relay_nstep", "sac_her", "td3_her",
           "ddpg_her_gamma_eps", *DDPG_UPDATE]  # the forks with polyak-averaged target networks
FORKS = [*TARGETS, "ppo_her"]
MODULES = {name: load_fork(name) for name in FORKS}  # name -> (module, script, runner)
PUSH = ["--env-id", "FetchPush-v0"]  # the relay forks need an object


@pytest.mark.parametrize("name", FORKS)
def test_normaliser_statistics_move_as_ddpg_hers(name):
    fork = MODULES[name][0]
    ours, theirs = ddpg_her.Normalizer(9, 0.01, 200.0, 5.0), fork.Normalizer(9, 0.01, 200.0, 5.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # three batches of different statistics: the running sums must take each
        x = torch.randn(37, 9, generator=g) * 3 + torch.arange(9.0)
        ours.update(x), theirs.update(x)
    assert theirs.count.item() == 3 * 37 and (theirs.mean.abs() > 0.5).any()
    for key in ("mean", "std", "count"):
        torch.testing.assert_close(getattr(theirs, key), getattr(ours, key), rtol=0, atol=0)
    x = torch.randn(5, 9, generator=g) * 6
    torch.testing.assert_close(theirs(x.clone()), ours(x.clone()), rtol=0, atol=0)


def hand_actor_loss(critic, actor, x0, action_l2):
    """The loss by hand, and its two terms, each large enough next to the comparison's tolerance that a flipped sign
    shows."""
    with torch.no_grad():
        pi = actor(x0)
        q, l2 = critic(x0, pi).mean().item(), (action_l2 * (pi / actor.max_u).square().mean()).item()
    assert abs(q) > 1e-3 and l2 > 1e-3, (q, l2)
    return -q + l2


def ddpg_nets(fork, dim_x, dim_u, max_u):
    torch.manual_seed(0)
    actor, critic = fork.Actor(dim_x, dim_u, 32, 2, max_u), fork.Critic(dim_x, dim_u, 32, 2, max_u)
    nets = (actor, critic, copy.deepcopy(actor), copy.deepcopy(critic))
    optimizer = torch.optim.Adam([p for net in nets[:2] for p in net.parameters()], lr=1e-3)
    return nets, optimizer


@pytest.mark.parametrize("name", ["ddpg_her_prioritized", "ddpg_her_relay", "ddpg_her_relay_nstep", "ddpg_her_gamma_eps",
                                  *DDPG_UPDATE])
def test_actor_loss_is_minus_q_plus_the_action_l2_penalty(name):
    """ddpg_her.py's actor loss -Q(o, pi(o)) + action_l2 |pi / max_u|^2, by hand, with the critic before the step (the
    relay forks: on their networks' input [o, g, gr], for both tasks' rows)."""
    fork = MODULES[name][0]
    dim_o, dim_g, dim_u, B, max_u, action_l2 = 4, 3, 2, 64, 2.0, 0.7
    relay = "relay" in name
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, B, dim_o + dim_g + (fork.GRIP if relay else 0), generator=g)).clamp(-3, 3)
    u, r = torch.rand(B, dim_u, generator=g) * 2 - 1, -(torch.rand(B, 1, generator=g) < 0.8).float()
    nets, optimizer = ddpg_nets(fork, dim_o + dim_g, dim_u, max_u)
    norm = fork.Normalizer(dim_o + dim_g, 0.01, 200.0, 5.0)  # nothing seen: mean 0, std 1, clip to [-5, 5]
    if relay:
        reach = (torch.arange(B) < B // 2)[:, None]
        expected = hand_actor_loss(nets[1], nets[0], norm.tasks(x, reach)[0], action_l2)
        stats = fork.update(nets, optimizer, norm, x, reach, u, r, 0.98, 50.0, action_l2)
    elif name == "ddpg_her_gamma_eps":  # the networks also take each transition's gamma and epsilon inputs
        gamma = 1.0 - 1.0 / (5.0 + 195.0 * torch.rand(B, 1, generator=g))
        cond = fork.cond_inputs(gamma, 0.01 + 0.09 * torch.rand(B, 1, generator=g), (5.0, 200.0), (0.01, 0.1))
        expected = hand_actor_loss(nets[1], nets[0], torch.cat([norm(x.clone())[0], cond], -1), action_l2)
        stats = fork.update(nets, optimizer, norm, x, u, r, gamma, cond, True, action_l2)
    else:
        expected = hand_actor_loss(nets[1], nets[0], norm(x.clone())[0], action_l2)
        stats = fork.update(nets, optimizer, norm, x, u, r, 0.98, 50.0, action_l2)
        stats = stats[0] if isinstance(stats, tuple) else stats  # (prioritised: the stats and the TD errors)
    assert stats[0].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", TARGETS)
def test_polyak_zero_makes_the_targets_the_networks(tmp_path, name):
    """Targets move as target <- polyak * target + (1 - polyak) * network after each cycle: with --polyak 0 they are
    the networks themselves after a cycle (a run whose weights are inverted keeps its initial targets)."""
    _, _, fork_run = MODULES[name]
    options = [*TINY, *(PUSH if "relay" in name else []), "--env-threads", "1", "--n-epochs", "1", "--n-cycles", "1"]
    fork_run(tmp_path, *options, "--polyak", "0", "--exp-name", "p0")
    state = torch.load(os.path.join(run_dir(tmp_path, "p0"), "checkpoint.pt"), weights_only=False)["state"]
    targets = [key for key in state if key.endswith("_target")]
    assert targets
    for key in targets:
        main = state[key.removesuffix("_target")] if key.removesuffix("_target") in state else None
        if main is None:  # td3_her: critic1_target, critic2_target -> critic1, critic2
            main = state[key.replace("_target", "")]
        for param, value in state[key].items():
            torch.testing.assert_close(value, main[param], rtol=0, atol=0, msg=f"{key}.{param}")
