"""Plot median test success (line) and interquartile range (shaded) over seeds, as the paper's Figure 3.

Reads the local logs of the training scripts (runs/*/metrics.csv and runs/*/config.json; no W&B needed), groups
the runs by environment and experiment name (the script: ddpg_her, ddpg_her_dense, ddpg, ddpg_dense, or your
--exp-name), and draws one panel per environment with one curve per experiment. Beside the figure, a Markdown
file: the median curve's final and best success and when it first reaches 0.5 and 0.9; then sample efficiency as the
median over seeds of each seed's env steps to 0.5 and 0.9 with the final success's IQR; then every run's row.

    python scripts/plot.py                                   # every run under runs/ -> figures/test_success.png
    python scripts/plot.py --x env_steps --envs FetchPush-v0 --out figures/push.png
    python scripts/plot.py --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --title "FetchPush-v0, 2 cores"
    python scripts/plot.py --runs-dir runs runs/old --exps ddpg_her --split-by bf16_matmul   # one curve per value
    python scripts/plot.py --runs-dir grids/a/runs grids/b/runs --split-by n_batches polyak --max-env-steps 200000

The dense configurations run on the ...Dense-v0 ids; they are drawn in the panel of their sparse twin, because the
metric (test success) is the same. Runs of different lengths are fine: each epoch's median and quartiles are over
the seeds that completed it.
"""

import argparse
import csv
import glob
import json
import os
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

X_LABELS = {"epoch": "epoch", "env_steps": "environment steps", "episodes": "episodes", "elapsed_s": "minutes",
            "minutes": "minutes"}
THRESHOLDS = (0.5, 0.9)


def load_runs(runs_dirs, split_by=(), max_env_steps=None):
    """{(task, exp_name, label): [run, ...]} with run = dict of metric -> np.array over epochs (those within
    max_env_steps, if given); label is the exp_name, followed by `key=value` of the run's config for each key of
    split_by."""
    groups = defaultdict(list)
    paths = [path for runs_dir in runs_dirs  # a directory of runs, or one run's own directory (e.g. a shell glob's)
             for pattern in ("metrics.csv", os.path.join("*", "metrics.csv"))
             for path in glob.glob(os.path.join(runs_dir, pattern))]
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
        if max_env_steps is not None:  # one budget for runs of different lengths
            if "env_steps" not in rows[0]:
                raise SystemExit(f"--max-env-steps: {path} has no env_steps column")
            rows = [row for row in rows if float(row["env_steps"]) <= max_env_steps]
            if not rows:
                continue
        run = {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}
        run["seed"] = config.get("seed", "?")  # a scalar beside the columns: the per-seed table's rows
        task = config["env_id"].replace("Dense-", "-")
        label = " ".join([config["exp_name"]] + [f"{key}={config.get(key)}" for key in split_by or ()])
        groups[(task, config["exp_name"], label)].append(run)
    return groups


def natural(label):
    """A sort key that orders the numbers in a label by value: n_batches=40 before n_batches=120."""
    return [(0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
            for part in re.split(r"(\d+(?:\.\d+)?)", label)]


def curves(runs):
    """Epoch by epoch over the seeds that have reached it (runs may stop at different epochs): the quartiles of test
    success, and the median epoch, env steps and minutes."""
    n = max(len(run["test_success"]) for run in runs)

    def stack(key):
        return np.stack([np.pad(run[key], (0, n - len(run[key])), constant_values=np.nan) for run in runs])

    q25, q50, q75 = np.nanpercentile(stack("test_success"), [25, 50, 75], axis=0)
    x = {key: np.nanmedian(stack(key), 0) for key in ("epoch", "env_steps", "episodes", "elapsed_s") if key in runs[0]}
    if "elapsed_s" in x:
        x["minutes"] = x["elapsed_s"] / 60
    return q25, q50, q75, x


def table(groups, tasks, exps):
    """Markdown: final and best median success, and when the median curve first reaches each threshold."""
    head = ["environment", "configuration", "seeds", "epochs", "final", "best"]
    for t in THRESHOLDS:
        head += [f"epoch to {t}", f"env steps to {t}", f"minutes to {t}"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for task in tasks:
        for exp in exps:
            runs = groups.get((task, exp))
            if not runs:
                continue
            _, q50, _, x = curves(runs)
            row = [task, exp, str(len(runs)), str(len(q50)), f"{q50[-1]:.3f}", f"{np.nanmax(q50):.3f}"]
            for t in THRESHOLDS:
                hit = np.flatnonzero(q50 >= t)
                if len(hit):
                    i = hit[0]
                    row += [f"{x['epoch'][i]:.0f}" if "epoch" in x else str(i + 1),
                            f"{x['env_steps'][i]:,.0f}" if "env_steps" in x else "",
                            f"{x['minutes'][i]:.1f}" if "minutes" in x else ""]
                else:
                    row += ["not reached", "-", "-"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def first_reach(run, t):
    """The env steps at the run's first epoch with test success >= t, or None."""
    hit = np.flatnonzero(run["test_success"] >= t)
    return float(run["env_steps"][hit[0]]) if len(hit) else None


def steps(x):
    return "not reached" if x is None or not np.isfinite(x) else f"{x:,.0f}"


def seed_table(groups, tasks, exps):
    """Markdown: sample efficiency as the median over seeds of each seed's env steps to a level (a seed that never
    reaches it counts as beyond the budget, so a median among such seeds reads "not reached"), the final success's
    median and IQR over seeds; then one row per run."""
    if any("env_steps" not in run for runs in groups.values() for run in runs):
        return ""
    levels = " | ".join(f"env steps to {t}" for t in THRESHOLDS)
    medians = [f"| environment | configuration | seeds | {levels} | final: median (IQR) |",
               "|" + " --- |" * (4 + len(THRESHOLDS))]
    rows = [f"| environment | configuration | seed | test success, epoch by epoch | {levels} | final | minutes |",
            "|" + " --- |" * (6 + len(THRESHOLDS))]
    for task in tasks:
        for exp in exps:
            runs = sorted(groups.get((task, exp), []), key=lambda run: natural(str(run["seed"])))
            if not runs:
                continue
            finals = [run["test_success"][-1] for run in runs]
            q25, q50, q75 = np.percentile(finals, [25, 50, 75])
            reach = [[first_reach(run, t) for run in runs] for t in THRESHOLDS]
            medians.append(f"| {task} | {exp} | {', '.join(str(run['seed']) for run in runs)} | "
                           + " | ".join(steps(np.median([np.inf if x is None else x for x in xs])) for xs in reach)
                           + f" | {q50:.3f}" + (f" ({q25:.3f}-{q75:.3f})" if len(runs) > 1 else "") + " |")
            for i, run in enumerate(runs):
                minutes = f"{run['elapsed_s'][-1] / 60:.1f}" if "elapsed_s" in run else "-"
                # at most 20 epochs shown: a long run's every k-th, counted back from its last
                stride = -(-len(run["test_success"]) // 20)
                shown = " ".join(f"{s:.2f}" for s in run["test_success"][::-1][::stride][::-1])
                rows.append(f"| {task} | {exp} | {run['seed']} | " + (f"every {stride} epochs: " if stride > 1 else "")
                            + shown + " | "
                            + " | ".join(steps(xs[i]) for xs in reach) + f" | {finals[i]:.3f} | {minutes} |")
    return ("\nPer seed: env steps to a level are the median over seeds of each seed's first epoch at that level (a "
            "seed that never reaches it counts as beyond the budget); final: the last epoch's success, median and "
            "interquartile range over seeds.\n\n" + "\n".join(medians) + "\n\n" + "\n".join(rows) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", nargs="+", default=["runs"],
                        help="directories holding one sub-directory per run, or runs' own directories")
    parser.add_argument("--split-by", nargs="+", default=[], metavar="KEY", help="config.json keys (e.g. "
                        "bf16_matmul): one curve per combination of their values within an exp")
    parser.add_argument("--max-env-steps", type=int, help="only the epochs up to this many env steps (runs of "
                        "different lengths on one budget)")
    parser.add_argument("--x", default="epoch", choices=list(X_LABELS), help="the x axis (elapsed_s: in minutes)")
    parser.add_argument("--envs", nargs="*", help="only these environments (sparse ids, e.g. FetchPush-v0), in order")
    parser.add_argument("--exps", nargs="*", help="only these experiment names, in this order")
    parser.add_argument("--out", default="figures/test_success.png", help="the PNG to write (and a PDF beside it)")
    parser.add_argument("--table", help="the Markdown table to write (default: --out with .md)")
    parser.add_argument("--title", default="", help="a title above the panels")
    parser.add_argument("--columns", type=int, default=4, help="panels per row")
    args = parser.parse_args()

    groups = load_runs(args.runs_dir, args.split_by, args.max_env_steps)
    if not groups:
        raise SystemExit(f"no runs with metrics.csv and config.json found under {args.runs_dir!r}"
                         + (f" with an epoch within --max-env-steps {args.max_env_steps}" if args.max_env_steps else ""))
    found = sorted({task for task, _, _ in groups})
    found_exps = sorted({exp for _, exp, _ in groups})
    for option, values, index, present in (("--envs", args.envs, 0, found), ("--exps", args.exps, 1, found_exps)):
        if not values:
            continue
        missing = [v for v in values if v not in present]
        groups = {k: v for k, v in groups.items() if k[index] in values}
        if not groups:
            raise SystemExit(f"{option} {' '.join(values)} matched no runs under {' '.join(args.runs_dir)}; runs "
                             f"found: {', '.join(present)}")
        if missing:
            print(f"warning: {option} {' '.join(missing)} matched no runs; runs found: {', '.join(present)}",
                  file=sys.stderr)
    envs_order = {env: i for i, env in enumerate(args.envs or [])}  # --envs order first, then alphabetical
    tasks = sorted({task for task, _, _ in groups}, key=lambda t: (envs_order.get(t, len(envs_order)), t))
    order = {exp: i for i, exp in enumerate(args.exps or [])}  # --exps order first, then alphabetical
    labels = sorted({(exp, label) for _, exp, label in groups}, key=lambda e: (order.get(e[0], len(order)),
                                                                             natural(e[1])))
    groups = {(task, label): runs for (task, _, label), runs in groups.items()}
    exps = [label for _, label in labels]
    columns = min(args.columns, len(tasks))
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows + 0.5), squeeze=False,
                             layout="constrained")
    handles = {}
    for ax, task in zip(axes.flat, tasks):
        for i, exp in enumerate(exps):
            runs = groups.get((task, exp))
            if not runs:
                continue
            q25, q50, q75, x = curves(runs)
            x = x["minutes" if args.x == "elapsed_s" else args.x]
            # the colour cycle has 10 colours: the 11th curve on is dashed, so that no two curves look alike
            (line,) = ax.plot(x, q50, color=f"C{i}", linestyle=("-", "--", ":")[i // 10 % 3],
                              marker="o" if len(x) < 10 else None, markersize=3)
            ax.fill_between(x, q25, q75, color=f"C{i}", alpha=0.25)
            seeds = sorted({len(r) for (t, e), r in groups.items() if e == exp})
            handles[exp] = (line, f"{exp} ({'-'.join(map(str, seeds[::max(len(seeds) - 1, 1)]))} "
                                  f"seed{'s' if seeds[-1] > 1 else ''})")
        if len(tasks) > 1 or not args.title:  # (one panel under a title: the title names it, not twice)
            ax.set_title(task, fontsize=10)
        ax.set_xlabel(X_LABELS[args.x])
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
        if args.x in ("epoch", "episodes", "env_steps"):
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        if args.x in ("episodes", "env_steps"):
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 400k, 1.2M: readable under a narrow panel
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("median test success rate")
    if args.title:
        fig.suptitle(args.title)
    # The legend below the panels, off the curves: one entry per configuration, with its seed count(s), in as many
    # columns as fit the panels' width, so that long labels add rows below rather than shrink the panels.
    legend = [handles[exp] for exp in exps if exp in handles]
    ncol = min(len(legend), 2 * columns)
    while True:
        box = fig.legend([h for h, _ in legend], [label for _, label in legend], loc="outside lower center",
                         ncol=ncol, frameon=False, fontsize=9)
        if ncol == 1 or box.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width:
            break
        box.remove()
        ncol -= 1
    # ... and the figure grows by the legend's rows past the first (about 0.21 in each at this font size), so that
    # many entries add height below the panels instead of flattening them.
    fig.set_figheight(fig.get_figheight() + 0.21 * (-(-len(legend) // ncol) - 1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # bbox_inches="tight": the figure grows to hold a legend wider than its panels (one long label), never crops it
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    pdf = os.path.splitext(args.out)[0] + ".pdf"
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})  # no date: the same runs, the same bytes
    text = table(groups, tasks, exps) + seed_table(groups, tasks, exps)
    table_path = args.table or os.path.splitext(args.out)[0] + ".md"
    with open(table_path, "w") as f:
        f.write(text)
    counts = ", ".join(f"{t}/{e} x{len(r)}" for (t, e), r in sorted(groups.items()))
    print(f"wrote {args.out}, {pdf}, {table_path}: {counts}")
    print(text, end="")


if __name__ == "__main__":
    main()
