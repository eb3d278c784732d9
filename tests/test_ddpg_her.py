"""ddpg_her.py end to end, in subprocesses: options, outputs, determinism, resume, evaluation, and (slow) learning."""

import contextlib
import csv
import glob
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import requires_gl

import ddpg_her

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "ddpg_her.py")
# A run of seconds: 1 epoch of 2 cycles, 2 envs, 2 updates of 32 transitions per cycle, 2 test episodes.
# One update thread: the suite often shares the cores (CI, a run beside it), where several threads stall (docs/performance.md).
TINY = ["--env-id", "FetchReach-v0", "--n-envs", "2", "--n-cycles", "2", "--n-batches", "2", "--batch-size", "32",
        "--n-test-rollouts", "1", "--hidden", "32", "--buffer-size", "10000", "--torch-threads", "1"]
TIMING = {"sps", "elapsed_s", "collect_s", "update_s", "test_s"}  # the only columns of metrics.csv allowed to differ between identical runs


def run(cwd, *options, check=True, timeout=300, env=None, script=SCRIPT):  # (script: the fork tests give theirs)
    env = dict(os.environ, MUJOCO_GL="egl", WANDB_MODE="offline", **(env or {}))
    proc = subprocess.run([sys.executable, script, *options], cwd=cwd, capture_output=True, text=True, env=env,
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
        (["--resume", "runs/nowhere"], "--resume runs/nowhere: no such run directory or checkpoint file"),
    ],
)
def test_bad_options_are_refused_with_a_message(tmp_path, options, message):
    proc = run(tmp_path, *options, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tiny_run_writes_logs_config_and_checkpoints(tmp_path):
    proc = run(tmp_path, *TINY, "--n-epochs", "1", "--n-cycles", "1", "--exp-name", "tiny", "--save-model")
    path = run_dir(tmp_path, "tiny")
    assert os.path.basename(path).startswith("FetchReach-v0__tiny__1__")
    rows = metrics(path)
    assert len(rows) == 1 and rows[0]["env_steps"] == "100" and rows[0]["episodes"] == "2"
    for key in ["test_success", "train_success", "mean_q", "actor_loss", "critic_loss"]:
        assert rows[0][key] != ""
    config = json.load(open(os.path.join(path, "config.json")))
    assert config["T"] == 50 and config["gamma"] == pytest.approx(0.98) and config["her_future_p"] == pytest.approx(0.8)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # --cuda (the default) takes a GPU where there is one
    assert config["device"] == device and f"updates on {device}" in proc.stdout
    assert os.path.exists(os.path.join(path, "checkpoint.pt")) and os.path.exists(os.path.join(path, "model.pt"))
    assert "epoch 1/1 | steps 100 | episodes 2 | test success" in proc.stdout
    assert "done: 1 epoch, 100 env steps" in proc.stdout
    # Target networks: after the one cycle, target = polyak * initial + (1 - polyak) * main (Baselines' polyak
    # averaging, once per cycle). The initial weights are those of the seeded networks, rebuilt here.
    ckpt = torch.load(os.path.join(path, "checkpoint.pt"), weights_only=False)
    torch.manual_seed(1)
    dims, polyak = ckpt["dims"], ckpt["args"]["polyak"]
    initial = [ddpg_her.Actor(dims["x"], dims["u"], 32, 3, 1.0), ddpg_her.Critic(dims["x"], dims["u"], 32, 3, 1.0)]
    for net, name in zip(initial, ("actor", "critic")):
        main, target = ckpt["state"][name], ckpt["state"][name + "_target"]
        assert not torch.equal(main["net.0.weight"], net.state_dict()["net.0.weight"])  # the updates moved it
        for key, w0 in net.state_dict().items():
            torch.testing.assert_close(target[key], polyak * w0 + (1 - polyak) * main[key], rtol=1e-5, atol=1e-6)


def test_same_seed_same_results_and_exploration(tmp_path):
    run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", "a")
    run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", "b")
    run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", "c", "--seed", "2", "--random-eps", "1")
    a, b, c = (metrics(run_dir(tmp_path, name)) for name in "abc")
    assert a == b
    assert a != c
    # With --random-eps 1 every action collected is uniform in [-max_u, max_u] (Baselines' random actions): the
    # 1600 action components in c's replay buffer follow the uniform distribution (Kolmogorov-Smirnov distance).
    replay = [np.load(path) for path in sorted(glob.glob(os.path.join(run_dir(tmp_path, "c"), "replay", "*.npz")))]
    u = np.sort(np.concatenate([part["u"] for part in replay]).ravel())
    assert u.size == 1600 and u.min() >= -1 and u.max() <= 1
    uniform_cdf = (u + 1) / 2
    ks = max(np.abs(uniform_cdf - np.arange(1, u.size + 1) / u.size).max(), np.abs(uniform_cdf - np.arange(u.size) /
                                                                                     u.size).max())
    assert ks < 0.06, ks  # the 99.9% bound for 1600 samples is 0.049


def files(path):
    return {name: open(os.path.join(path, name)).read() for name in ("config.json", "metrics.csv", "log.txt")}


def test_resume_continues_exactly(tmp_path):
    # A buffer of 6 episodes, 4 new ones an epoch: from epoch 2 on, new episodes overwrite random old ones, and the
    # checkpoints write the replay buffer incrementally (each epoch's new episodes), so the resume must replay both.
    small = [*TINY, "--buffer-size", "300"]
    run(tmp_path, *small, "--n-epochs", "3", "--exp-name", "whole")
    run(tmp_path, *small, "--n-epochs", "2", "--exp-name", "parts")
    path = run_dir(tmp_path, "parts")
    before = files(path)
    # Options a resume cannot honour are refused, naming them; a finished run is left as it is.
    for options, message in [(["--batch-size", "256"], "cannot honour --batch-size;"),
                             (["--seed=2", "--no-save-model"], "cannot honour --save-model, --seed;"),
                             (["--n-epochs", "1"], "--n-epochs 1 is fewer than the 2 epochs the run has completed")]:
        proc = run(tmp_path, "--resume", path, *options, check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run(tmp_path, "--resume", path)
    assert f"{os.path.join('runs', os.path.basename(path))} is already complete: 2 epochs" in proc.stdout
    assert files(path) == before  # config.json still agrees with metrics.csv
    proc = run(tmp_path, "--resume", os.path.join(path, "checkpoint.pt"), "--n-epochs", "3")  # the file works too
    assert "resumed" in proc.stdout and "after epoch 2" in proc.stdout
    assert "resumed" in open(os.path.join(path, "log.txt")).read()
    assert metrics(path) == metrics(run_dir(tmp_path, "whole"))
    assert json.load(open(os.path.join(path, "config.json")))["n_epochs"] == len(metrics(path)) == 3
    assert sorted(os.listdir(os.path.join(path, "replay"))) == ["00001.npz", "00002.npz", "00003.npz"]
    whole = torch.load(os.path.join(run_dir(tmp_path, "whole"), "checkpoint.pt"), weights_only=False)
    resumed = torch.load(os.path.join(path, "checkpoint.pt"), weights_only=False)
    for name in ("actor", "critic", "actor_target", "critic_target", "normalizer"):
        for key, value in whole["state"][name].items():
            np.testing.assert_array_equal(value.numpy(), resumed["state"][name][key].numpy())
    other = subprocess.run([sys.executable, os.path.join(ROOT, "ddpg.py"), "--resume", path], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 1 and "that run was made by ddpg_her.py; resume it with python ddpg_her.py" in \
        other.stderr
    # A checkpoint of the format before run_plumbing.py is refused, saying why and what to do instead.
    ckpt = torch.load(os.path.join(path, "checkpoint.pt"), weights_only=False)
    del ckpt["format"]
    torch.save(ckpt, os.path.join(path, "checkpoint.pt"))
    proc = run(tmp_path, "--resume", path, "--n-epochs", "4", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "its checkpoint was written by an older version of the training scripts" in proc.stderr


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


def start_in_terminal(cwd, *options):
    """A run in the background on a pseudo-terminal, so that it prints its live 'epoch E/N: cycle C/M' line at the
    start of every cycle, i.e. after the previous epoch's files were written; returns (process, terminal fd)."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, MUJOCO_GL="egl", WANDB_MODE="offline")
    proc = subprocess.Popen([sys.executable, SCRIPT, *options], cwd=cwd, stdin=subprocess.DEVNULL, stdout=terminal,
                            stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    return proc, controller


def kill_at(proc, controller, text, timeout=120):
    """kill -9 the run and its env workers as soon as it prints `text`."""
    out, deadline = b"", time.time() + timeout
    while text.encode() not in out:
        assert time.time() < deadline and proc.poll() is None, f"no {text!r}:\n{out.decode(errors='replace')}"
        if select.select([controller], [], [], 1)[0]:
            with contextlib.suppress(OSError):
                out += os.read(controller, 4096)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait()
    os.close(controller)


def test_kill_9_at_any_epoch_keeps_every_completed_epoch(tmp_path):
    """Killed at the start of epoch 3, then (resumed) at the start of epoch 4: each time exactly the epochs before
    survive (a checkpoint every epoch, odd and even), and the resumed run ends as one uninterrupted run does."""
    whole = run(tmp_path, *TINY, "--n-epochs", "4", "--exp-name", "whole")
    assert whole.returncode == 0
    proc, controller = start_in_terminal(tmp_path, *TINY, "--n-epochs", "4", "--exp-name", "killed")
    kill_at(proc, controller, "epoch 3/4: cycle 1/")
    path = run_dir(tmp_path, "killed")
    for completed in (2, 3):
        assert [int(row["epoch"]) for row in metrics(path)] == list(range(1, completed + 1))
        assert torch.load(os.path.join(path, "checkpoint.pt"), weights_only=False)["epoch"] == completed
        if completed == 2:  # resume, and kill again one epoch later
            proc, controller = start_in_terminal(tmp_path, "--resume", path)
            kill_at(proc, controller, "epoch 4/4: cycle 1/")
    resumed = run(tmp_path, "--resume", path)
    assert f"resumed {path} after epoch 3" in resumed.stdout
    assert metrics(path) == metrics(run_dir(tmp_path, "whole"))
    log = open(os.path.join(path, "log.txt")).read()
    assert "after epoch 2" in log and "after epoch 3" in log


def test_ctrl_c_says_how_to_resume(tmp_path):
    proc = start(tmp_path, *TINY, "--n-epochs", "1000", "--exp-name", "stopped")
    wait_for(proc, "epoch 1/1000")
    os.kill(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130
    assert re.search(r"interrupted after (1 completed epoch|[2-9] completed epochs); continue from there with: "
                     r"python ddpg_her\.py --resume", out), out
    assert "Traceback" not in out


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
    proc = run(tmp_path, *TINY, "--n-epochs", "1", "--exp-name", "vid", "--save-model", "--capture-video")
    path = run_dir(tmp_path, "vid")
    (video,) = glob.glob(os.path.join(tmp_path, "videos", os.path.basename(path), "epoch001.*"))
    assert f"video of a test episode after epoch 1: {os.path.relpath(video, tmp_path)}\n" in proc.stdout  # said
    proc = evaluate(tmp_path, path, "--episodes", "2", "--capture-video")  # a run directory: its model.pt
    assert proc.returncode == 0, proc.stderr
    videos = sorted(glob.glob(os.path.join(tmp_path, "videos", f"eval__{os.path.basename(path)}", "episode*")))
    assert len(videos) == 2 and "model.pt: ddpg_her.py, 1 epoch)" in proc.stdout
    assert f"videos: {os.path.relpath(videos[0], tmp_path)} ... {os.path.relpath(videos[1], tmp_path)}" in proc.stdout


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
        "--batch-size", "256", "--n-test-rollouts", "5", "--exp-name", "reach", "--torch-threads", "1")
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CI has none; scripts/gpu_bench.sh)")
def test_cuda_runs_with_and_without_cuda_graphs_and_resume(tmp_path):
    """On a GPU: the replay buffer and updates live there, as one CUDA graph per update or eagerly; both learn the
    same way (finite losses, Q in the range of returns), and a graph run resumes on the GPU."""
    for name, options in (("graph", []), ("eager", ["--no-cudagraphs"])):
        run(tmp_path, *TINY, "--n-epochs", "2", "--exp-name", name, *options)
        path = run_dir(tmp_path, name)
        assert json.load(open(os.path.join(path, "config.json")))["device"] == "cuda"
        assert "updates on cuda" in open(os.path.join(path, "log.txt")).read()
        for row in metrics(path):
            assert all(np.isfinite(float(row[k])) for k in ("actor_loss", "critic_loss", "mean_q"))
            assert -1 / (1 - 0.98) <= float(row["mean_q"]) <= 0.0 + 1e-3
    resumed = run(tmp_path, "--resume", run_dir(tmp_path, "graph"), "--n-epochs", "3")
    assert "epoch 3/3" in resumed.stdout


def test_a_gpu_checkpoint_resumes_on_a_cpu(tmp_path):
    """What a GPU run writes that a CPU run does not (Adam's capturable flag, a CUDA RNG state) must not stop a
    CPU-only machine from resuming it. A smoke test only: this torch accepts capturable Adam on the CPU and defers
    CUDA RNG calls without CUDA, so dropping the scripts' reset of the flag or their CUDA guard would not fail it."""
    run(tmp_path, *TINY, "--n-epochs", "1", "--exp-name", "gpu", "--no-cuda")
    path = run_dir(tmp_path, "gpu")
    ckpt = torch.load(os.path.join(path, "checkpoint.pt"), weights_only=False)
    for group in ckpt["state"]["optimizer"]["param_groups"]:
        group["capturable"] = True
    ckpt["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(ckpt, os.path.join(path, "checkpoint.pt"))
    resumed = run(tmp_path, "--resume", path, "--n-epochs", "2", env=dict(CUDA_VISIBLE_DEVICES=""))
    assert "epoch 2/2" in resumed.stdout and [int(r["epoch"]) for r in metrics(path)] == [1, 2]
