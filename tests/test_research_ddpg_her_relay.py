"""research/ddpg_her_relay.py: a smoke run with resume and evaluation, and the reach task as unit tests on its
functions: which rows are the reach task's and what their goals and rewards compare, the networks' input for each
task (the main task's is ddpg_her.py's [o, g] with an empty slot, as evaluate.py feeds it), and RHER's exploration."""

import numpy as np
import pytest
import torch
from fork_checks import check_resumes_exactly_and_evaluates, load_fork
from test_ddpg_her import TINY  # the tiny budget

fork, SCRIPT, run = load_fork("ddpg_her_relay")  # the module, its path, test_ddpg_her.py's runner on it
PUSH = [*TINY, "--env-id", "FetchPush-v0", "--env-threads", "1"]  # (tyro: the later --env-id wins)
N_EPS, T, DIM_O, DIM_G = 6, 5, 8, 3


def episodes():
    """Entries that name their episode, step and column: o[e, t, j] = 1000 e + 10 t + j, ag = o's + 0.5, g = -o's."""
    e, t = torch.arange(N_EPS)[:, None, None], torch.arange(T + 1)[None, :, None]
    o = 1000.0 * e + 10.0 * t + torch.arange(DIM_O)
    ag = 1000.0 * e + 10.0 * t + torch.arange(DIM_G) + 0.5
    return dict(o=o, ag=ag, g=-ag[:, :T], u=torch.zeros(N_EPS, T, 4))


@pytest.mark.parametrize("reach_fraction", [0.0, 0.25, 1.0])
def test_reach_rows_goals_and_what_their_rewards_compare(reach_fraction):
    torch.manual_seed(0)
    ep, n = episodes(), 4000
    x, u, achieved, goal, reach = fork.sample_transitions(ep, N_EPS, n, 0.8, reach_fraction)
    assert x.shape == (2, n, DIM_O + 2 * DIM_G) and reach.shape == (n, 1)
    assert reach.sum() == round(reach_fraction * n) and reach[: round(reach_fraction * n)].all()  # the first rows
    o, g, gr = x[0, :, :DIM_O], x[0, :, DIM_O : DIM_O + DIM_G], x[0, :, DIM_O + DIM_G :]
    e, t = (o[:, 0] // 1000).long(), (o[:, 0] % 1000 / 10).long()
    assert (x[1, :, :DIM_O] == ep["o"][e, t + 1]).all() and (x[1, :, DIM_O:] == x[0, :, DIM_O:]).all()
    # the gripper's goal: the object at t (ag[e, t]) or a later gripper position o[e, t' > t, :3], about 80% of rows
    is_object = (gr == ep["ag"][e, t]).all(1)
    t_later = (gr[:, 0] % 1000 / 10).long()
    is_later_grip = (gr == ep["o"][e, t_later, :DIM_G]).all(1) & (t_later > t) & (gr[:, 0] // 1000 == e)
    assert (is_object | is_later_grip).all() and 0.75 < is_later_grip.float().mean() < 0.85
    rows = reach[:, 0]  # the reach task compares the gripper's next position with gr; the main task, ddpg_her.py's
    assert (achieved[rows] == ep["o"][e, t + 1, :DIM_G][rows]).all() and (goal[rows] == gr[rows]).all()
    assert (achieved[~rows] == ep["ag"][e, t + 1][~rows]).all() and (goal[~rows] == g[~rows]).all()


def test_networks_input_per_task_and_the_main_task_is_what_evaluate_feeds():
    torch.manual_seed(0)
    norm = fork.Normalizer(DIM_O + DIM_G, 0.01, 200.0, 5.0)
    norm.update(torch.randn(1000, DIM_O + DIM_G) * 3 + 1)
    x = torch.randn(2, 6, DIM_O + 2 * DIM_G)
    reach = torch.tensor([True, False, True, False, False, True])[:, None]
    inp = norm.tasks(x, reach)
    xn = norm(x[..., : DIM_O + DIM_G])
    gr = ((x[..., DIM_O + DIM_G :] - norm.mean[DIM_O:]) / norm.std[DIM_O:]).clamp(-5, 5)  # g's statistics
    main, r = ~reach[:, 0], reach[:, 0]
    torch.testing.assert_close(inp[..., :DIM_O], xn[..., :DIM_O])
    torch.testing.assert_close(inp[:, main, DIM_O:], torch.cat([xn[:, main, DIM_O:], torch.zeros(2, 3, DIM_G)], -1))
    torch.testing.assert_close(inp[:, r, DIM_O:], torch.cat([torch.zeros(2, 3, DIM_G), gr[:, r]], -1))
    actor = fork.Actor(DIM_O + DIM_G, 4, 16, 2, 1.0)  # evaluate.py's actor: [o, g] in, the main task's input
    torch.testing.assert_close(actor(xn[0]), actor(norm.tasks(x[0], torch.zeros(6, 1, dtype=torch.bool))))


def test_only_envs_away_from_the_object_explore_the_reach_task():
    rng = np.random.default_rng(0)
    o, ag = np.zeros((20_000, DIM_O)), np.zeros((20_000, DIM_G))
    ag[:10_000, 0] = 0.1  # far: 0.1 m from the gripper; the others: at the gripper
    reaching = fork.reaching_envs(o, ag, rng, 0.5, 0.03)
    assert not reaching[10_000:].any() and 0.48 < reaching[:10_000].mean() < 0.52
    assert fork.reaching_envs(o, ag, rng, 0.5, 0.2).sum() == 0  # within a wider radius: nobody


# ---- end to end (last, so that with -x a broken unit stops the run before these slow tests) ---------------------------
def test_runs_resumes_exactly_and_evaluates(tmp_path):
    check_resumes_exactly_and_evaluates(tmp_path, SCRIPT, PUSH, (
        "actor", "critic", "actor_target", "critic_target", "normalizer"), env_id="FetchPush-v0")


@pytest.mark.parametrize("options, message", [
    (["--env-id", "FetchReach-v0"], "the reach task needs a Fetch task with an object"),
    (["--reach-fraction", "1.5"], "--reach-fraction must be in [0, 1], got 1.5")])
def test_bad_options_are_refused(tmp_path, options, message):
    proc = run(tmp_path, *options, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
