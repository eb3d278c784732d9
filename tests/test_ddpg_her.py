"""ddpg_her.py end to end, in subprocesses: options, outputs, determinism, resume, evaluation, and (slow) learning."""

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import requires_gl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "ddpg_her.py")
# A run of seconds: 1 epoch of 2 cycles, 2 envs, 2 updates of 32 transitions per cycle, 2 test episodes.
TINY = ["--env-id", "FetchReach-v0", "--n-envs", "2", "--n-cycles", "2", "--n-batches", "2", "--batch-size", "32",
        "--n-test-rollouts", "1", "--hidden", "32", "--buffer-size", "10000"]
TIMING = {"sps", "elapsed_s"}  # the only columns of metrics.csv allowed to differ between identical runs


def run(cwd, *options, check=True, timeout=300):
    env = dict(os.environ, MUJOCO_GL="egl", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, SCRIPT, *options], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_dir(cwd, exp_name):
    (path,) = glob.glob(os.path.join(cwd, "runs", f"*__{exp_name}__*"))
    return path


def metrics(path):
    with open(os.path.join(path, "metrics.csv")) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def test_help_explains_every_option():
    proc = run(ROOT, "--help")
    for option in ["--env-id", "--n-envs", "--batch-size", "--paper-budget", "--replay-k", "--resume",
                   "--save-model", "--capture-video", "--track", "--wandb-group", "--bf16-matmul"]:
        assert option in proc.stdout
    assert "19 MPI workers" in proc.stdout  # the docstrings reach --help


@pytest.mark.parametrize(
    "options, message",
    [
        (["--env-id", "FetchPsh-v0"], "unknown environment id 'FetchPsh-v0'; valid ids are: FetchReach-v0"),
        (["--env-id", "Pendulum-v1"], "Pendulum-v1 is not a goal environment"),
        (["--env-id", "FetchPushDense-v0"], "use ddpg_her_dense.py"),
        (["--batch-size", "0"], "--batch-size must be positive, got 0"),
        (["--n-envs", "-2"], "--n-envs must be positive, got -2"),
        (["--random-eps", "1.5"], "--random-eps must be in [0, 1], got 1.5"),
        (["--buffer-size", "60"], "--buffer-size 60 cannot hold one cycle"),
        (["--resume", "runs/nowhere"], "no checkpoint.pt there"),
    ],
)
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *options, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tiny_run_writes_logs_config_and_checkpoints(tmp_path):
    proc = run(tmp_path, *TINY, "--n-epochs", "1", "--exp-name", "tiny", "--save-model")
    path = run_dir(tmp_path, "tiny")
    assert os.path.basename(path).startswith("FetchReach-v0__tiny__1__")
    rows = metrics(path)
    assert len(rows) == 1 and rows[0]["env_steps"] == "200" and rows[0]["episodes"] == "4"
    for key in ["test_success", "train_success", "mean_q", "actor_loss", "critic_loss"]:
        assert rows[0][key] != ""
    config = json.load(open(os.path.join(path, "config.json")))
    assert config["T"] == 50 and config["gamma"] == pytest.approx(0.98) and config["her_future_p"] == pytest.approx(0.8)
    assert os.path.exists(os.path.join(path, "checkpoint.pt")) and os.path.exists(os.path.join(path, "model.pt"))
    assert "epoch 1/1 | steps 200 | episodes 4 | test success" in proc.stdout


def test_same_seed_same_results(tmp_path):
    run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", "a")
    run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", "b")
    run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", "c", "--seed", "2")
    a, b, c = (metrics(run_dir(tmp_path, name)) for name in "abc")
    assert a == b
    assert a != c


def test_resume_continues_exactly(tmp_path):
    run(tmp_path, *TINY, "--n-epochs", "3", "--exp-name", "whole")
    run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", "parts")
    path = run_dir(tmp_path, "parts")
    proc = run(tmp_path, "--resume", path, "--n-epochs", "3")
    assert "resumed" in proc.stdout and "after epoch 2" in proc.stdout
    assert "resumed" in open(os.path.join(path, "log.txt")).read()
    assert metrics(path) == metrics(run_dir(tmp_path, "whole"))


def evaluate(cwd, *options):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), *options], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ, MUJOCO_GL="egl"), timeout=300)
    return proc


def start(cwd, *options):
    """A run in the background, in its own process group (so a test can kill it with its env workers)."""
    env = dict(os.environ, MUJOCO_GL="egl", WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, SCRIPT, *options], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def wait_for(proc, text, timeout=120):
    """Read the run's output until a line contains `text`; returns the output so far."""
    out, deadline = "", time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        out += line
        if text in line:
            return out
        assert line or proc.poll() is None, f"the run ended before printing {text!r}:\n{out}"
    raise AssertionError(f"no {text!r} within {timeout} s:\n{out}")


def test_kill_9_then_resume_keeps_the_completed_epochs(tmp_path):
    proc = start(tmp_path, *TINY, "--n-epochs", "1000", "--exp-name", "killed")
    wait_for(proc, "epoch 3/1000")  # epoch 2's files are written before epoch 3 starts (epoch 3's may not be yet)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its env workers, with no chance to clean up
    proc.wait()
    path = run_dir(tmp_path, "killed")
    done = len(metrics(path))
    assert done >= 2
    resumed = run(tmp_path, "--resume", path, "--n-epochs", str(done + 1))
    assert f"resumed {os.path.join('runs', os.path.basename(path))} after epoch" in resumed.stdout
    assert [int(row["epoch"]) for row in metrics(path)] == list(range(1, done + 2))


def test_ctrl_c_says_how_to_resume(tmp_path):
    proc = start(tmp_path, *TINY, "--n-epochs", "1000", "--exp-name", "stopped")
    wait_for(proc, "epoch 1/1000")
    os.kill(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130
    assert "interrupted after" in out
    assert "completed epochs; continue from there with: python ddpg_her.py --resume" in out
    assert "Traceback" not in out


def test_a_dead_env_worker_stops_the_run_within_seconds(tmp_path):
    proc = start(tmp_path, *TINY, "--n-epochs", "1000", "--exp-name", "crash")
    wait_for(proc, "epoch 1/1000")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [pid for pid in children if "ddpg_her.py" in open(f"/proc/{pid}/cmdline").read()]
    assert workers, children
    os.kill(int(workers[0]), signal.SIGKILL)
    t = time.time()
    out = proc.communicate(timeout=60)[0]
    assert time.time() - t < 30 and proc.returncode == 1
    assert "an env worker died" in out and "--resume" in out


def test_evaluation_entry_loads_a_checkpoint(tmp_path):
    run(tmp_path, *TINY, "--n-epochs", "1", "--exp-name", "ev", "--save-model")
    path = run_dir(tmp_path, "ev")
    proc = evaluate(tmp_path, os.path.join(path, "model.pt"), "--episodes", "3")
    assert proc.returncode == 0, proc.stderr
    assert "FetchReach-v0: test success" in proc.stdout and "over 3 deterministic episodes" in proc.stdout
    # The same policy from the full checkpoint gives the same result: same actor and normaliser, same seeds.
    again = evaluate(tmp_path, os.path.join(path, "checkpoint.pt"), "--episodes", "3")
    assert again.stdout.split("(")[0] == proc.stdout.split("(")[0]
    bad = evaluate(tmp_path, os.path.join(path, "nothing.pt"))
    assert bad.returncode != 0 and "needs an existing checkpoint file" in bad.stderr and "Traceback" not in bad.stderr


@requires_gl
def test_videos_of_training_and_evaluation(tmp_path):
    run(tmp_path, *TINY, "--n-epochs", "1", "--exp-name", "vid", "--save-model", "--capture-video")
    path = run_dir(tmp_path, "vid")
    assert glob.glob(os.path.join(tmp_path, "videos", os.path.basename(path), "epoch001.*"))
    proc = evaluate(tmp_path, os.path.join(path, "model.pt"), "--episodes", "2", "--capture-video")
    assert proc.returncode == 0, proc.stderr
    assert len(glob.glob(os.path.join(tmp_path, "videos", f"eval__{os.path.basename(path)}", "episode*"))) == 2


@pytest.mark.parametrize("script, env_id", [("ddpg_her_dense.py", "FetchReachDense-v0"), ("ddpg.py", "FetchReach-v0"),
                                             ("ddpg_dense.py", "FetchReachDense-v0")])
def test_the_other_configurations_run(tmp_path, script, env_id):
    options = [o if o != "FetchReach-v0" else env_id for o in TINY]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *options, "--n-epochs", "1", "--exp-name", "x"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(metrics(run_dir(tmp_path, "x"))) == 1
    config = json.load(open(os.path.join(run_dir(tmp_path, "x"), "config.json")))
    assert config["her_future_p"] == (pytest.approx(0.8) if script.startswith("ddpg_her") else 0.0)


@pytest.mark.slow
def test_learns_fetch_reach(tmp_path):
    # Baselines trains FetchReach with 10 cycles per epoch; a few epochs reach 0.9+ in about a minute on 2 cores.
    run(tmp_path, "--env-id", "FetchReach-v0", "--n-epochs", "5", "--n-envs", "4", "--n-cycles", "10",
        "--batch-size", "256", "--n-test-rollouts", "5", "--exp-name", "reach")
    rows = metrics(run_dir(tmp_path, "reach"))
    assert float(rows[-1]["test_success"]) >= 0.9, [row["test_success"] for row in rows]


def test_track_goes_offline_without_a_network(tmp_path):
    """--track with no W&B server reachable (as on CI) runs to the end and leaves an offline run for `wandb sync`."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    proc = subprocess.run([sys.executable, SCRIPT, *TINY, "--n-epochs", "2", "--exp-name", "wb", "--track"],
                          cwd=tmp_path, capture_output=True, text=True, env=dict(env, MUJOCO_GL="egl"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(metrics(run_dir(tmp_path, "wb"))) == 2
    assert glob.glob(os.path.join(tmp_path, "wandb", "offline-run-*", "run-*.wandb"))
