"""scripts/plot.py on hand-made run directories: grouping by experiment, --split-by, several --runs-dir."""

import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_run(runs_dir, name, env_id, exp_name, success, **config):
    path = os.path.join(runs_dir, name)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(env_id=env_id, exp_name=exp_name, **config), f)
    with open(os.path.join(path, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "env_steps", "episodes", "test_success", "elapsed_s"])
        writer.writeheader()
        for i, s in enumerate(success):
            writer.writerow(dict(epoch=i + 1, env_steps=40_000 * (i + 1), episodes=800 * (i + 1), test_success=s,
                                 elapsed_s=42.0 * (i + 1)))


def plot(*options):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot.py"), *options], capture_output=True,
                          text=True, timeout=120)


def test_plot_groups_runs_and_splits_by_a_config_key(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    fake_run(a, "r1", "FetchPush-v0", "ddpg_her", [0.1, 0.5, 0.9], bf16_matmul=True)
    fake_run(a, "r2", "FetchPush-v0", "ddpg_her", [0.1, 0.6], bf16_matmul=True)  # runs may differ in length
    fake_run(b, "r3", "FetchPush-v0", "ddpg_her", [0.1, 0.4, 0.8], bf16_matmul=False)
    fake_run(a, "r4", "FetchPushDense-v0", "ddpg_dense", [0.0, 0.1])  # drawn in FetchPush-v0's panel
    out = str(tmp_path / "fig.png")
    proc = plot("--runs-dir", a, b, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "FetchPush-v0/ddpg_her x3" in proc.stdout and "FetchPush-v0/ddpg_dense x1" in proc.stdout
    assert os.path.getsize(out) > 10_000
    proc = plot("--runs-dir", a, b, "--exps", "ddpg_her", "--split-by", "bf16_matmul", "--x", "elapsed_s", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "ddpg_her bf16_matmul=True x2" in proc.stdout and "ddpg_her bf16_matmul=False x1" in proc.stdout
    assert "ddpg_dense" not in proc.stdout


def test_plot_says_when_there_is_nothing_to_plot(tmp_path):
    proc = plot("--runs-dir", str(tmp_path), "--out", str(tmp_path / "fig.png"))
    assert proc.returncode != 0 and "no runs with metrics.csv" in proc.stderr
