"""Plot median test success (line) and interquartile range (shaded) over seeds, as the paper's Figure 3.

Reads the local logs of the training scripts (runs/*/metrics.csv and runs/*/config.json; no W&B needed), groups
the runs by environment and experiment name (the script: ddpg_her, ddpg_her_dense, ddpg, ddpg_dense, or your
--exp-name), and draws one panel per environment with one curve per experiment.

    python scripts/plot.py                                   # every run under runs/ -> figures/test_success.png
    python scripts/plot.py --x env_steps --envs FetchPush-v0 --out figures/push.png
    python scripts/plot.py --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --title "FetchPush-v0, 2 cores"
    python scripts/plot.py --runs-dir runs runs/old --exps ddpg_her --split-by bf16_matmul   # one curve per value

The dense configurations run on the ...Dense-v0 ids; they are drawn in the panel of their sparse twin, because the
metric (test success) is the same. Runs of different lengths are fine: each epoch's median and quartiles are over
the seeds that completed it.
"""

import argparse
import csv
import glob
import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

X_LABELS = {"epoch": "epoch", "env_steps": "environment steps", "episodes": "episodes", "elapsed_s": "minutes"}


def load_runs(runs_dirs, split_by=None):
    """{(task, exp_name, label): [run, ...]} with run = dict of metric -> np.array over epochs; label is the
    exp_name, followed by `split_by=value` of the run's config if split_by is given."""
    groups = defaultdict(list)
    paths = [path for runs_dir in runs_dirs for path in glob.glob(os.path.join(runs_dir, "*", "metrics.csv"))]
    for path in sorted(paths):
        config_path = os.path.join(os.path.dirname(path), "config.json")
        if not os.path.exists(config_path):
            continue
        with open(config_path) as f:
            config = json.load(f)
        with open(path) as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        run = {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}
        task = config["env_id"].replace("Dense-", "-")
        label = config["exp_name"] + (f" {split_by}={config.get(split_by)}" if split_by else "")
        groups[(task, config["exp_name"], label)].append(run)
    return groups


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", nargs="+", default=["runs"], help="directories holding one sub-directory per run")
    parser.add_argument("--split-by", help="a config.json key (e.g. bf16_matmul): one curve per value within an exp")
    parser.add_argument("--x", default="epoch", choices=list(X_LABELS), help="the x axis")
    parser.add_argument("--envs", nargs="*", help="only these environments (sparse ids, e.g. FetchPush-v0)")
    parser.add_argument("--exps", nargs="*", help="only these experiment names, in this order")
    parser.add_argument("--out", default="figures/test_success.png", help="the PNG to write")
    parser.add_argument("--title", default="", help="a title above the panels")
    args = parser.parse_args()

    groups = load_runs(args.runs_dir, args.split_by)
    if args.envs:
        groups = {k: v for k, v in groups.items() if k[0] in args.envs}
    if args.exps:
        groups = {k: v for k, v in groups.items() if k[1] in args.exps}
    if not groups:
        raise SystemExit(f"no runs with metrics.csv and config.json found under {args.runs_dir!r}")
    tasks = sorted({task for task, _, _ in groups})
    order = {exp: i for i, exp in enumerate(args.exps or [])}  # --exps order first, then alphabetical
    labels = sorted({(exp, label) for _, exp, label in groups}, key=lambda e: (order.get(e[0], len(order)), e[1]))
    groups = {(task, label): runs for (task, _, label), runs in groups.items()}
    exps = [label for _, label in labels]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, exp in enumerate(exps):
            runs = groups.get((task, exp))
            if not runs:
                continue
            # Epoch by epoch over the seeds that have reached it (runs may stop at different epochs).
            n = max(len(run["test_success"]) for run in runs)
            success = np.stack([np.pad(run["test_success"], (0, n - len(run["test_success"])),
                                       constant_values=np.nan) for run in runs])
            x = np.nanmedian(np.stack([np.pad(run[args.x], (0, n - len(run[args.x])), constant_values=np.nan)
                                       for run in runs]), 0)
            x = x / 60 if args.x == "elapsed_s" else x
            q25, q50, q75 = np.nanpercentile(success, [25, 50, 75], axis=0)
            ax.plot(x, q50, color=f"C{i}", label=f"{exp} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
            ax.fill_between(x, q25, q75, color=f"C{i}", alpha=0.25)
        ax.set_title(task)
        ax.set_xlabel(X_LABELS[args.x])
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("median test success rate")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}: " + ", ".join(f"{t}/{e} x{len(r)}" for (t, e), r in sorted(groups.items())))


if __name__ == "__main__":
    main()
