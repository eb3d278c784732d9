"""scripts/plot.py on hand-made run directories (grouping, --split-by on one or two keys, --max-env-steps, several
--runs-dir, the table, filters) and on the logs of a real smoke grid (scripts/grid.py)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import matplotlib.colors
import pytest

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


def read(path):
    with open(path) as f:
        return f.read()


def median_table(path):
    """The rows of the first table in plot.py's Markdown (the median curve's), below its header."""
    return read(path).split("\n\n")[0].splitlines()[2:]


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
    proc = plot("--runs-dir", os.path.join(a, "r2"), b, "--out", out)  # a run's own directory: that run alone
    assert proc.returncode == 0, proc.stderr
    assert "FetchPush-v0/ddpg_her x2" in proc.stdout and "ddpg_dense" not in proc.stdout
    proc = plot("--runs-dir", a, b, "--exps", "ddpg_her", "--split-by", "bf16_matmul", "--x", "elapsed_s", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "ddpg_her bf16_matmul=True x2" in proc.stdout and "ddpg_her bf16_matmul=False x1" in proc.stdout
    assert "ddpg_dense" not in proc.stdout
    # two keys: one curve per combination; --max-env-steps: every run cut to the first 80,000 env steps (2 epochs)
    fake_run(b, "r5", "FetchPush-v0", "ddpg_her", [0.2, 0.3, 0.4], bf16_matmul=False, polyak=0.9)
    proc = plot("--runs-dir", a, b, "--exps", "ddpg_her", "--split-by", "bf16_matmul", "polyak", "--max-env-steps",
                "80000", "--x", "env_steps", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert ("ddpg_her bf16_matmul=True polyak=None x2" in proc.stdout and "bf16_matmul=False polyak=None x1" in
            proc.stdout and "bf16_matmul=False polyak=0.9 x1" in proc.stdout), proc.stdout
    rows = {row.split(" | ")[1]: row.split(" | ")[3:6] for row in median_table(out[:-4] + ".md")}
    assert rows["ddpg_her bf16_matmul=False polyak=0.9"] == ["2", "0.300", "0.300"]  # epochs, final, best
    assert rows["ddpg_her bf16_matmul=False polyak=None"] == ["2", "0.400", "0.400"]
    proc = plot("--runs-dir", a, "--max-env-steps", "100", "--out", out)  # no epoch within the budget: said so
    assert proc.returncode != 0 and "within --max-env-steps 100" in proc.stderr, proc.stderr


def test_plot_orders_the_curves_by_the_numbers_in_their_labels(tmp_path):
    runs = str(tmp_path / "runs")
    for n in (120, 40, 80):
        fake_run(runs, f"r{n}", "FetchPush-v0", "ddpg_her", [0.1, 0.2], n_batches=n)
    out = str(tmp_path / "fig.png")
    proc = plot("--runs-dir", runs, "--split-by", "n_batches", "--out", out)
    assert proc.returncode == 0, proc.stderr
    labels = [row.split(" | ")[1] for row in median_table(out[:-4] + ".md")]
    assert labels == ["ddpg_her n_batches=40", "ddpg_her n_batches=80", "ddpg_her n_batches=120"]  # not as text


def png_size(path):  # the IHDR chunk: width, then height, big-endian, from byte 16
    with open(path, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_plot_keeps_the_panel_as_wide_as_the_figure_under_many_long_labels(tmp_path):
    """Six curves with long labels on one panel: the legend takes rows below the panel, not a width that leaves the
    panel a third of the figure (the figure no wider than one short curve's, plus a margin); and the figure grows by
    those rows, so that the panel keeps its height (at 120 dpi, 0.21 in a row: at least 2 rows more than one
    curve's figure, whose legend has one row)."""
    short, many = str(tmp_path / "short"), str(tmp_path / "many")
    fake_run(short, "r", "FetchPush-v0", "ddpg_her", [0.1, 0.2])
    for n in range(6):
        fake_run(many, f"r{n}", "FetchPush-v0", "ddpg_her_relay_nstep", [0.1, 0.2], n_batches=40 * (n + 1),
                 polyak=0.95)
    sizes = []
    for runs, split in ((short, []), (many, ["--split-by", "n_batches", "polyak"])):
        out = str(tmp_path / f"{os.path.basename(runs)}.png")
        proc = plot("--runs-dir", runs, *split, "--title", "FetchPush-v0, a title", "--out", out)
        assert proc.returncode == 0, proc.stderr
        sizes.append(png_size(out))
    assert sizes[1][0] <= 1.25 * sizes[0][0], sizes
    assert sizes[1][1] >= sizes[0][1] + 2 * 0.21 * 120, sizes


def test_plot_says_when_there_is_nothing_to_plot(tmp_path):
    proc = plot("--runs-dir", str(tmp_path), "--out", str(tmp_path / "fig.png"))
    assert proc.returncode != 0 and "no runs with metrics.csv" in proc.stderr


def test_plot_writes_the_table_pdf_and_names_a_filter_that_matched_nothing(tmp_path):
    runs = str(tmp_path / "runs")
    fake_run(runs, "r1", "FetchPush-v0", "ddpg_her", [0.1, 0.5, 0.9])
    fake_run(runs, "r2", "FetchPush-v0", "ddpg_her", [0.1, 0.6])
    fake_run(runs, "r3", "FetchPush-v0", "ddpg", [0.0, 0.1, 0.2])
    out = str(tmp_path / "fig.png")
    proc = plot("--runs-dir", runs, "--exps", "ddpg_her", "ddpg", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert os.path.getsize(str(tmp_path / "fig.pdf")) > 5_000
    with open(tmp_path / "fig.pdf", "rb") as f:
        pdf = f.read()
    assert plot("--runs-dir", runs, "--exps", "ddpg_her", "ddpg", "--out", out).returncode == 0
    with open(tmp_path / "fig.pdf", "rb") as f:
        assert f.read() == pdf  # redrawn from the same runs: the same bytes (no churn in git)
    with open(tmp_path / "fig.md") as f:
        table = f.read().splitlines()
    # Medians over the seeds that reached each epoch: 0.1, 0.55, 0.9 -> 0.5 at epoch 2 (80,000 steps, 1.4 min).
    assert table[2] == ("| FetchPush-v0 | ddpg_her | 2 | 3 | 0.900 | 0.900 | 2 | 80,000 | 1.4 | 3 | 120,000 | 2.1 |")
    assert table[3] == ("| FetchPush-v0 | ddpg | 1 | 3 | 0.200 | 0.200 | not reached | - | - | not reached | - | - |")
    proc = plot("--runs-dir", runs, "--envs", "FetchSlide-v0", "--out", out)
    assert proc.returncode != 0
    assert "--envs FetchSlide-v0 matched no runs" in proc.stderr and "runs found: FetchPush-v0" in proc.stderr
    proc = plot("--runs-dir", runs, "--exps", "ddpg_dense", "--out", out)
    assert "--exps ddpg_dense matched no runs" in proc.stderr and "runs found: ddpg, ddpg_her" in proc.stderr
    proc = plot("--runs-dir", runs, "--envs", "FetchPush-v0", "FetchSlide-v0", "--out", out)  # one matches
    assert proc.returncode == 0 and "--envs FetchSlide-v0 matched no runs" in proc.stderr


def test_plot_per_seed_table_takes_the_median_over_seeds_and_counts_a_seed_that_never_reaches_beyond_budget(tmp_path):
    runs = str(tmp_path / "runs")
    # Each seed reaches 0.9 at a different epoch: the median over seeds is 80,000 env steps, where the median curve
    # (0.1 at every epoch) never reaches it.
    for seed, success in enumerate(([0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]), 1):
        fake_run(runs, f"a{seed}", "FetchPush-v0", "ddpg_her", success, seed=seed)
    # Two seeds of three never reach 0.5: the median is "not reached", not the one seed's 40,000.
    for seed, success in enumerate(([0.6, 0.6, 0.2], [0.1, 0.1, 0.1], [0.0, 0.1, 0.3]), 1):
        fake_run(runs, f"b{seed}", "FetchPush-v0", "ddpg", success, seed=seed)
    out = str(tmp_path / "fig.png")
    proc = plot("--runs-dir", runs, "--exps", "ddpg_her", "ddpg", "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = read(str(tmp_path / "fig.md")).splitlines()
    assert "| FetchPush-v0 | ddpg_her | 1, 2, 3 | 80,000 | 80,000 | 0.100 (0.100-0.500) |" in lines
    assert "| FetchPush-v0 | ddpg | 1, 2, 3 | not reached | not reached | 0.200 (0.150-0.250) |" in lines
    assert "| FetchPush-v0 | ddpg_her | 2 | 0.10 0.90 0.10 | 80,000 | 80,000 | 0.100 | 2.1 |" in lines
    assert "| FetchPush-v0 | ddpg | 1 | 0.60 0.60 0.20 | 40,000 | not reached | 0.200 | 2.1 |" in lines
    # the median curve's table above it is unchanged: 0.9 not reached by the median
    assert "| FetchPush-v0 | ddpg_her | 3 | 3 | 0.100 | 0.100 | not reached | - | - | not reached | - | - |" in lines
    # a long run's row shows every k-th epoch up to its last (at most 20)
    fake_run(runs, "long", "FetchSlide-v0", "ddpg_her", [i / 100 for i in range(1, 26)], seed=1)
    assert plot("--runs-dir", runs, "--out", out).returncode == 0
    row = read(str(tmp_path / "fig.md")).splitlines()[-1]  # the runs' table comes last, FetchSlide-v0 after Push
    assert row.split(" | ")[3] == "every 2 epochs: " + " ".join(f"{i / 100:.2f}" for i in range(1, 26, 2))


def test_plot_draws_no_two_curves_alike_beyond_the_ten_colours(tmp_path, monkeypatch):
    runs = str(tmp_path / "runs")
    for n in range(12):
        fake_run(runs, f"r{n}", "FetchPush-v0", "ddpg_her", [0.1, 0.2, 0.3], n_batches=n)
    spec = importlib.util.spec_from_file_location("plot", os.path.join(ROOT, "scripts", "plot.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["plot.py", "--runs-dir", runs, "--split-by", "n_batches",
                                      "--out", str(tmp_path / "fig.png")])
    module.main()
    lines = module.plt.gcf().axes[0].get_lines()
    assert len(lines) == 12
    looks = {(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()) for line in lines}
    assert len(looks) == 12, looks
    module.plt.close("all")


@pytest.fixture(scope="module")
def smoke_grid(tmp_path_factory):
    """The logs of a real smoke grid (scripts/grid.py on a local Ray instance): 2 configs x 2 seeds, 2 tiny epochs."""
    out = str(tmp_path_factory.mktemp("grid"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "grid.py"), "--smoke", "--envs",
                           "FetchReach-v0", "--configs", "ddpg_her", "ddpg_dense", "--seeds", "1", "2", "--epochs", "2",
                           "--cpus-per-run", "1", "--no-plot", "--out", out], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, WANDB_MODE="disabled"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("x", ["epoch", "env_steps", "elapsed_s"])
def test_plot_on_the_logs_of_a_smoke_grid(smoke_grid, tmp_path, x):
    out = str(tmp_path / "fig.png")
    proc = plot("--runs-dir", os.path.join(smoke_grid, "runs"), "--exps", "ddpg_her", "ddpg_dense", "--x", x,
                "--out", out, "--title", "smoke")
    assert proc.returncode == 0, proc.stderr
    # The dense runs (FetchReachDense-v0) are drawn and tabulated in FetchReach-v0's panel, 2 seeds each.
    assert "FetchReach-v0/ddpg_her x2" in proc.stdout and "FetchReach-v0/ddpg_dense x2" in proc.stdout
    assert os.path.getsize(out) > 10_000 and os.path.getsize(str(tmp_path / "fig.pdf")) > 5_000
    rows = [line.split(" | ") for line in median_table(str(tmp_path / "fig.md"))]
    assert [row[1:4] for row in rows] == [["ddpg_her", "2", "2"], ["ddpg_dense", "2", "2"]]
    for row in rows:  # final and best: the median over the 2 seeds of the runs' own test success
        assert 0 <= float(row[4]) <= float(row[5]) <= 1
