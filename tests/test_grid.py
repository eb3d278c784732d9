"""scripts/grid.py and scripts/hparam_search.py for real, on a local Ray instance, with tiny runs (--smoke): a figure's
grid end to end, killed mid-way and started again, a failing run, bad input, the Tune search."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import grid  # noqa: E402

ENV = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")


def start(*options, script="grid.py"):
    command = [os.path.join(ROOT, "scripts", script)] if script.endswith(".sh") else [sys.executable, os.path.join(
        ROOT, "scripts", script)]
    return subprocess.Popen(command + list(options), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ENV)


def finish(process, timeout=240):
    output = process.communicate(timeout=timeout)[0]
    return process.returncode, output


def rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [line.split(",")[0] for line in f.read().splitlines()[1:]]


def read(path):
    with open(path) as f:
        return f.read()


def test_figure_grid_end_to_end_killed_and_resumed(tmp_path):
    """figure3.sh --smoke on a part of the figure, two runs one after the other (one CPU): kill the grid while the
    second runs, start it again: the first is not redone, the second resumes without losing an epoch; then the
    figure and the table."""
    out = str(tmp_path / "grid")
    options = ["--smoke", "--envs", "FetchReach-v0", "--configs", "ddpg_her", "ddpg_dense", "--epochs", "20",
               "--extra", "--n-cycles 12", "--num-cpus", "1", "--cpus-per-run", "1", "--out", out,
               "--progress-every", "5"]
    process = start(*options, script="figure3.sh")
    first = second = None
    deadline = time.time() + 180
    while time.time() < deadline:  # wait for: the first run done, the second with a completed epoch
        first = (glob.glob(f"{out}/runs/FetchReach-v0__ddpg_her__1__*") or [None])[0]
        second = (glob.glob(f"{out}/runs/FetchReachDense-v0__ddpg_dense__1__*") or [None])[0]
        if second and os.path.exists(f"{second}/metrics.csv") and rows(second):
            break
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.2)
    assert first and "done:" in read(f"{first}/log.txt")
    process.send_signal(signal.SIGINT)  # Ctrl-C
    rc, output = finish(process)
    assert rc == 130, output
    assert "interrupted: stopping 1 runs" in output
    log = read(f"{second}/log.txt")
    assert "interrupted after" in log and "done:" not in log
    completed = len(rows(second))
    assert 1 <= completed < 20
    first_log = read(f"{first}/log.txt")

    rc, output = finish(start(*options, script="figure3.sh"))
    assert rc == 0, output
    assert "2/2 runs done (1 were done before), 0 failed" in output
    assert read(f"{first}/log.txt") == first_log  # not redone
    assert glob.glob(f"{out}/runs/*") == glob.glob(f"{out}/runs/*__1__*") and len(glob.glob(f"{out}/runs/*")) == 2
    log = read(f"{second}/log.txt")
    assert f"resumed runs/{os.path.basename(second)} after epoch {completed} " in log, log
    assert rows(second) == [str(epoch) for epoch in range(1, 21)]  # no epoch lost, none done twice
    for ext in ("png", "pdf", "md"):
        assert os.path.getsize(f"{out}/figure3_smoke.{ext}") > 300
    table = read(f"{out}/figure3_smoke.md")
    assert "| FetchReach-v0 | ddpg_her | 1 | 20 |" in table and "| FetchReach-v0 | ddpg_dense | 1 | 20 |" in table
    assert json.load(open(f"{out}/grid.json"))["envs"] == ["FetchReach-v0"]
    # More epochs later: the same grid, its finished runs extended (resumed), not redone.
    more = [o if o != "20" else "FetchReach-v0=22" for o in options]
    rc, output = finish(start(*more, script="figure3.sh"))
    assert rc == 0 and "2/2 runs done (0 were done before), 0 failed" in output, output
    for run in (first, second):
        assert rows(run) == [str(epoch) for epoch in range(1, 23)]
        assert f"resumed runs/{os.path.basename(run)} after epoch 20 " in read(f"{run}/log.txt")
    assert json.load(open(f"{out}/grid.json"))["epochs"] == {"FetchReach-v0": 22}
    # Logs kept without their checkpoint (a clone of results/) are never deleted: the run fails, saying why.
    os.remove(f"{first}/checkpoint.pt")
    result = grid.train(dict(env="FetchReach-v0", config="ddpg_her", seed=1, epochs=23), dict(out=out))
    assert result["rc"] == 1 and "has 22 completed epochs but no checkpoint.pt" in result["tail"]
    assert rows(first) == [str(epoch) for epoch in range(1, 23)]


def test_failing_run_is_retried_recorded_and_the_grid_goes_on(tmp_path):
    # A buffer of 150 transitions holds one cycle of 2 Fetch episodes (T=50) but not of 2 hand episodes (T=100):
    # the hand run fails at run time, after its environment is built; the Fetch run must still finish.
    out = str(tmp_path / "grid")
    rc, output = finish(start("--smoke", "--envs", "FetchReach-v0", "HandManipulateBlockRotateZ-v0", "--configs",
                              "ddpg", "--extra", "--buffer-size 150", "--cpus-per-run", "1", "--max-retries", "1",
                              "--out", out))
    assert rc == 1, output
    key = "HandManipulateBlockRotateZ-v0__ddpg__1"
    assert f"FAILED {key} (attempt 1 of 2, exit code 1), retrying" in output
    assert f"FAILED {key} (attempt 2 of 2, exit code 1);" in output
    assert "cannot hold one cycle" in output  # the tail of the run's output
    assert "1/2 runs done (0 were done before), 1 failed" in output
    assert read(f"{out}/failures.txt").count(f"### ") == 2
    assert "done:" in read(glob.glob(f"{out}/runs/FetchReach-v0__ddpg__1__*/log.txt")[0])
    assert os.path.exists(f"{out}/grid_smoke.png")  # the figure of what finished


def test_a_fork_in_another_folder_runs_on_the_grid_beside_the_baseline(tmp_path):
    """A copy of ddpg_her.py outside the repository's root (a research fork) is a configuration, named by its file:
    it imports the project's modules from there, and its runs and curves stand beside the baseline's."""
    fork = tmp_path / "research" / "my_idea.py"
    fork.parent.mkdir()
    shutil.copy(os.path.join(ROOT, "ddpg_her.py"), fork)
    out = str(tmp_path / "grid")
    rc, output = finish(start("--smoke", "--envs", "FetchReach-v0", "--configs", "ddpg_her", str(fork),
                              "--cpus-per-run", "1", "--out", out))
    assert rc == 0, output
    for exp in ("ddpg_her", "my_idea"):
        assert rows(glob.glob(f"{out}/runs/FetchReach-v0__{exp}__1__*")[0]) == ["1"]
        assert f"| {exp} |" in read(f"{out}/grid_smoke.md")


@pytest.mark.parametrize("options, message", [
    (["--figure", "figure5"], "invalid choice: 'figure5'"),
    (["--envs", "FetchPushh-v0"], "unknown environment 'FetchPushh-v0'"),
    (["--figure", "figure3", "--configs", "td3"], "unknown configuration 'td3'"),
    (["--figure", "figure3", "--extra", "--n-cyclez 3"], "--n-cyclez"),
    (["--figure", "figure3", "--extra", "--polyak 2"], "--polyak must be in [0, 1]"),
    (["--figure", "figure3", "--extra", "--seed 3"], "--extra --seed: the grid sets it"),
    (["--figure", "figure3", "--cpus-per-run", "0"], "must be positive"),
    (["--figure", "figure3", "--epochs", "10", "FetchPush=3"], "--epochs FetchPush=3: give N or ENV=N with N >= 1"),
    (["--figure", "figure3", "--epochs", "FetchPush-v0=0"], "--epochs FetchPush-v0=0: give N or ENV=N"),
])
def test_bad_input_is_refused_before_anything_starts(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as error:
        grid.main(options + ["--out", str(tmp_path / "grid")])
    assert error.value.code == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "grid" / "runs")


def test_a_figure_runs_the_papers_budget_unless_extra_replaces_it(tmp_path):
    cases = [([], ["--paper-budget"]), (["--extra", ""], []), (["--extra", "--n-cycles 10"], ["--n-cycles", "10"])]
    for i, (options, extra) in enumerate(cases):
        parser, args = grid.parse(["--figure", "figure3", "--out", str(tmp_path / str(i))] + options)
        runs, spec = grid.check(parser, args)
        assert spec["extra"] == extra and len(runs) == 80 and {r["epochs"] for r in runs} == {50}


def test_a_grid_directory_of_another_grid_is_refused_and_seeds_may_be_added(tmp_path, capsys):
    out = str(tmp_path / "grid")
    parser, args = grid.parse(["--figure", "figure3", "--smoke", "--seeds", "1", "--out", out])
    grid.check(parser, args)  # writes grid.json, starts nothing
    parser, args = grid.parse(["--figure", "figure3", "--smoke", "--seeds", "1", "2", "--out", out])
    runs, _ = grid.check(parser, args)  # a seed added: the same grid, extended (seed 1's runs are skipped as done)
    assert sorted({r["seed"] for r in runs}) == [1, 2] and json.load(open(f"{out}/grid.json"))["seeds"] == [1, 2]
    for options, message in [(["--seeds", "2"], "seeds: [1, 2] there, [2] now (seeds may be added, not left out)"),
                             (["--seeds", "1", "2", "--extra", "--n-cycles 3"], "holds a different grid (extra: ")]:
        with pytest.raises(SystemExit):
            grid.main(["--figure", "figure3", "--smoke", *options, "--out", out])
        assert message in capsys.readouterr().err


def test_hparam_search_smoke_on_tune(tmp_path):
    out = str(tmp_path / "search")
    options = ["--smoke", "--configs", "ddpg_her", "research/td3_her", "--cpus-per-run", "1", "--out", out]
    rc, output = finish(start(*options, script="hparam_search.py"))
    assert rc == 0, output
    table = read(f"{out}/hparam_search.md").splitlines()
    assert len(table) == 4 and table[2].startswith("| 1 |") and table[3].startswith("| 2 |")
    assert all(line.endswith("| 2/2 |") for line in table[2:])  # both configurations ran each combination
    combinations = [line.split(" | ")[1:8] for line in table[2:]]
    assert combinations[0] != combinations[1]
    # Each trial ran its combination: the values Tune sampled are those in the run's config.json.
    assert len(glob.glob(f"{out}/trials/*/runs/*/config.json")) == 4
    for path in glob.glob(f"{out}/trials/*/runs/*/config.json"):
        params = json.load(open(os.path.join(path.split("/runs/")[0], "trial.json")))
        config = json.load(open(path))
        assert config["actor_lr"] == params["actor_lr"] and config["action_l2"] == params["action_l2"]
        assert config["batch_size"] == params["batch_size"]  # x 1 worker in --smoke
        assert config["exp_name"] == os.path.basename(params["config"])  # research/td3_her runs as td3_her
    # Started again: Tune restores the finished search, nothing is rerun.
    rc, output = finish(start(*options, script="hparam_search.py"))
    assert rc == 0 and "continuing the search" in output, output
    assert read(f"{out}/hparam_search.md").splitlines() == table
    assert len(glob.glob(f"{out}/trials/*/runs/*")) == 4


@pytest.mark.parametrize("configs, message", [
    (["research/nope"], "unknown configuration 'research/nope': no research/nope.py"),
    (["ddpg_her", "research/sac_her"], "research/sac_her has no --noise-eps, which the search sets")])
def test_hparam_search_refuses_a_config_it_cannot_search(tmp_path, capsys, configs, message):
    import hparam_search
    with pytest.raises(SystemExit) as error:
        hparam_search.main(["--smoke", "--configs", *configs, "--out", str(tmp_path / "search")])
    assert error.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "search")


@pytest.mark.slow
@pytest.mark.parametrize("figure, n_envs", [("figure3", 4), ("figure4", 4), ("appendix_c", 13)])
def test_figure_script_smoke_draws_its_figure_and_table(tmp_path, figure, n_envs):
    """`bash scripts/FIGURE.sh --smoke`, as the README gives it (with its output in a temporary directory): every
    environment x configuration of the figure, seed 1, one tiny epoch, on a local Ray instance; then the figure and
    the table. (appendix_c's 52 runs take about 4 minutes on 2 cores.)"""
    out = str(tmp_path / figure)
    rc, output = finish(start("--smoke", "--cpus-per-run", "1", "--out", out, script=f"{figure}.sh"), timeout=1200)
    n = n_envs * 4
    assert rc == 0 and f"{n}/{n} runs done (0 were done before), 0 failed" in output, output[-3000:]
    for ext in ("png", "pdf"):
        assert os.path.getsize(f"{out}/{figure}_smoke.{ext}") > 5_000
    table = read(f"{out}/{figure}_smoke.md").split("\n\n")[0].splitlines()[2:]
    assert len(table) == n and all(row.split(" | ")[2:4] == ["1", "1"] for row in table), table  # 1 seed, 1 epoch
    assert {row.split(" | ")[0].lstrip("| ") for row in table} == set(grid.FIGURES[figure])


@pytest.mark.slow
def test_research_smoke_runs_every_comparison_end_to_end(tmp_path):
    """`scripts/research.sh --smoke`: every part of docs/research.md's campaign (each fork and ddpg_her.py, the utd and
    polyak grids) with a tiny budget on a local Ray instance, each part's figure and table drawn."""
    process = subprocess.Popen([os.path.join(ROOT, "scripts", "research.sh"), "--smoke"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=dict(ENV, OUT=str(tmp_path)))
    rc, output = finish(process, timeout=1800)
    assert rc == 0, output[-3000:]
    every = ["ddpg_her", "ddpg_her_nstep", "td3_her", "sac_her", "ddpg_her_prioritized"]
    fetch = every + ["ddpg_her_relay", "ddpg_her_relay_nstep"]  # (the reach task needs an object: not on the hand)
    for part, exps in [("screen", fetch), ("push", fetch), ("utd", every[:2] + fetch[-2:]), ("batch256", fetch[-2:-1]),
                       ("utd80", fetch[-1:]), ("utd80_polyak_0.9", fetch[-1:]), ("combined_polyak_0.9", fetch[-1:]),
                       ("combined_polyak_0.8", fetch[-1:]), ("pnp_screen", every[:1] + fetch[-1:]),
                       ("pnp_screen_utd80_polyak_0.9", fetch[-1:]), ("pnp_screen_utd120_polyak_0.9", fetch[-1:]),
                       ("pnp_screen_nstep", every[1:2]), ("pnp_screen_forks", every[2:] + fetch[-2:-1]),
                       ("pnp", fetch), ("hand", every), ("polyak_0.8", every[:1]), ("polyak_0.9", every[:1]),
                       ("polyak_0.98", every[:1]), ("mher", every[1:2]),
                       ("rfr_push", ["ddpg_her", "ddpg_her_gamma_eps"]), ("rfr_gamma_only", ["ddpg_her_gamma_eps"]),
                       ("rfr_eps_only", ["ddpg_her_gamma_eps"]), ("rfr_ppo_reach", ["ddpg_her", "ppo_her"]),
                       *[(f"rfr_ppo_{p}", ["ppo_her"]) for p in ("reach_no_hindsight", "push", "push_no_hindsight")],
                       *[(p, ["ddpg_her_goal_td"]) for p in ("rfr_goal_td", "rfr_goal_td_future")],
                       *[(p, ["ddpg_her_qr"]) for p in ("rfr_qr", "rfr_qr_tqc")],
                       *[(f"rfr_frequent_{p}", ["ddpg_her_frequent"]) for p in ("50hz", "100hz", "250hz",
                                                                                 "250hz_param_noise", "250hz_nstep",
                                                                                 "250hz_both")],
                       ("rfr_hac", ["hac_her"]), ("rfr_hac_pnp", ["ddpg_her", "hac_her"]),
                       ("rfr_hac_no_hindsight_actions", ["hac_her"]),
                       *[(f"rfr_unbiased{p}", ["ddpg_her_unbiased"]) for p in ("_teleport_none", "_teleport", "",
                                                                                "_reach")]]:
        n = len(exps)
        assert f"{n}/{n} runs done (0 were done before), 0 failed" in output
        table = f"{tmp_path}/{part}/grid_smoke.md"
        for exp in exps:
            assert f"| {exp} |" in read(table), (part, exp)
    configs = glob.glob(f"{tmp_path}/utd/runs/*/config.json")  # the part's one change: 3x the updates per cycle
    assert len(configs) == 4 and all(json.loads(read(c))["n_batches"] == 120 for c in configs)
    configs = glob.glob(f"{tmp_path}/mher/runs/*/config.json")  # the part's one change: MHER(lambda)
    assert len(configs) == 1 and json.loads(read(configs[0]))["mher_lambda"] == 0.7
    # issue 32's parts: each folder's one change (the fork's own condition)
    for part, expected in [("rfr_frequent_250hz_both", dict(frequency_hz=250, param_noise=True, noise_eps=0.0,
                                                              n_step=1)),
                           ("rfr_frequent_50hz", dict(frequency_hz=50, param_noise=False, n_step=0)),
                           ("rfr_unbiased_teleport_none", dict(teleport=True, correction="none")),
                           ("rfr_unbiased_teleport", dict(teleport=True, correction="is")),
                           ("rfr_ppo_push_no_hindsight", dict(hindsight=False)),
                           ("rfr_hac_no_hindsight_actions", dict(hindsight_actions=False)),
                           ("rfr_goal_td_future", dict(buffer_goal_frac=0.0)),
                           ("rfr_qr_tqc", dict(drop_top_quantiles=2)),
                           ("rfr_gamma_only", dict(sample_gamma=True, sample_eps=False))]:
        configs = [json.loads(read(c)) for c in glob.glob(f"{tmp_path}/{part}/runs/*/config.json")]
        assert configs and all({k: c[k] for k in expected} == expected for c in configs), (part, configs)
    goal_parts = ("utd80", "utd80_polyak_0.9", "combined_polyak_0.9", "combined_polyak_0.8",  # each one change
                  "pnp_screen_utd80_polyak_0.9", "pnp_screen_utd120_polyak_0.9")
    configs = [json.loads(read(c)) for part in goal_parts for c in glob.glob(f"{tmp_path}/{part}/runs/*/config.json")]
    assert sorted((c["n_batches"], c["polyak"]) for c in configs) == [(2, 0.8), (2, 0.9), (80, 0.9), (80, 0.9),
                                                                      (80, 0.95), (120, 0.9)]
