"""Appendix B's hyperparameter search, on Ray Tune: random combinations of seven hyperparameters, each trained with
every configuration and several seeds on HandManipulateBlockRotateZ-v0, ranked by the area under the test success
curve averaged over seeds and then over the configurations.

    python scripts/hparam_search.py --smoke                       # 2 combinations, 1 tiny epoch: a minute or two
    python scripts/hparam_search.py                               # the paper's: 40 combinations x 4 configs x 3 seeds
    python scripts/hparam_search.py --address auto --cpus-per-run 8
    python scripts/hparam_search.py --configs research/my_idea     # a fork of one of the four, searched alike

A trial is one training run (one combination, configuration and seed): the script started as a subprocess in the
trial's directory, its metrics.csv rows reported to Tune as they appear (test_success, and auc: the mean test success
over the epochs so far, i.e. the area under the curve per epoch). Tune samples the combinations (tune.choice; the
same combination for the 4 configurations x 3 seeds: BasicVariantGenerator(constant_grid_search=True)) and schedules
the trials (--cpus-per-run, --gpus-per-run). Rerun the same command to continue an interrupted search
(Tuner.restore: finished trials are kept, unfinished ones continue their run with --resume). The ranked table goes
to DIR/hparam_search.md.

Batch size: Appendix B's values are per MPI worker; the scripts' --batch-size is the effective batch, so a trial
runs with --batch-size value x --batch-workers (19 as in the paper, whose gradients were averaged over 19 workers).
The paper does not say how many epochs each trial ran; --epochs (default 50) sets it.
"""

import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from grid import CONFIGS, SMOKE, check_configs, die_with_parent, env_id, script  # noqa: E402

SPACE = {  # Appendix B: the searched values
    "actor_lr": [1e-4, 3e-4, 6e-4, 1e-3, 3e-3, 6e-3, 1e-2],
    "critic_lr": [1e-4, 3e-4, 6e-4, 1e-3, 3e-3, 6e-3, 1e-2],
    "polyak": [0.9, 0.93, 0.95, 0.97, 0.99],
    "batch_size": [32, 64, 128, 256],
    "random_eps": [0.0, 0.1, 0.2, 0.3, 0.4],
    "noise_eps": [0.0, 0.1, 0.2, 0.3, 0.4],
    "action_l2": [0.0, 0.01, 0.03, 0.1, 0.3, 0.6, 1.0],
}
# The paper's budget but for the batch (--paper-budget would set --batch-size 19 x 256): 38 rollouts, 19 buffers of 1e6.
PAPER = "--n-envs 38 --buffer-size 19000000"


def read_rows(path):
    try:
        with open(path) as f:
            header, *rows = [line.strip().split(",") for line in f if line.strip()]
    except (FileNotFoundError, ValueError):
        return []
    return [dict(zip(header, map(float, row))) for row in rows]


def trial(config, spec):
    """One training run as a Tune trial: its metrics.csv rows reported as they appear."""
    from ray import tune

    # Our own directory per trial (Tune's trial dir is a fresh staging copy after Tuner.restore): DIR/trials/NAME.
    trial_dir = os.path.join(spec["out"], "trials", tune.get_context().get_trial_name())
    os.makedirs(trial_dir, exist_ok=True)
    with open(os.path.join(trial_dir, "trial.json"), "w") as f:
        json.dump(config, f)
    done = [d for d in glob.glob(os.path.join(trial_dir, "runs", "*")) if os.path.exists(f"{d}/checkpoint.pt")]
    path = script(config["config"])  # ddpg_her.py, or a fork's research/my_idea.py
    if done:  # restored after an interruption: continue the run
        command = [sys.executable, path, "--resume", os.path.relpath(done[-1], trial_dir)]
    else:
        command = [sys.executable, path, "--env-id", env_id(spec["env"], config["config"]),
                   "--seed", str(config["seed"]), "--n-epochs", str(spec["epochs"]),
                   "--torch-threads", str(spec["torch_threads"]), "--env-threads", str(spec["torch_threads"]),
                   *spec["extra"], "--batch-size", str(config["batch_size"] * spec["batch_workers"])]  # last wins
        command += [f"--{k.replace('_', '-')}={config[k]}" for k in SPACE if k != "batch_size"]
    with open(os.path.join(trial_dir, "output.txt"), "a") as output:
        process = subprocess.Popen(command, cwd=trial_dir, stdout=output, stderr=subprocess.STDOUT,
                                   preexec_fn=die_with_parent)
        reported = 0
        while True:
            running = process.poll() is None
            paths = sorted(glob.glob(os.path.join(trial_dir, "runs", "*", "metrics.csv")))
            rows = read_rows(paths[-1]) if paths else []
            for i in range(reported, len(rows)):  # each new epoch, as it appears
                success = [row["test_success"] for row in rows[: i + 1]]
                tune.report(dict(rows[i], auc=sum(success) / len(success)))
            reported = max(reported, len(rows))
            if not running:
                break
            time.sleep(1)
    if process.returncode != 0:
        with open(os.path.join(trial_dir, "output.txt")) as f:
            tail = "".join(f.readlines()[-10:])
            raise RuntimeError(f"{shlex.join(command)} exited with {process.returncode}:\n{tail}")


def ranked_table(results, configs, seeds):
    """Markdown: combinations by their AUC averaged over seeds, then over configurations (the paper's criterion)."""
    by_combination = {}
    for result in results:
        if not result.config or not result.metrics or "auc" not in result.metrics:
            continue
        key = tuple(result.config[k] for k in SPACE)
        by_combination.setdefault(key, {}).setdefault(result.config["config"], []).append(result.metrics["auc"])
    rows = []
    for key, per_config in by_combination.items():
        means = {c: sum(v) / len(v) for c, v in per_config.items()}
        rows.append((sum(means.values()) / len(configs), key, means, sum(map(len, per_config.values()))))
    rows.sort(key=lambda row: (-row[0], row[1]))  # ties (e.g. all 0 in --smoke) in a fixed order
    head = ["rank", *SPACE, *[f"AUC {c}" for c in configs], "mean AUC", "trials"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for rank, (mean, key, means, n) in enumerate(rows, 1):
        lines.append("| " + " | ".join([str(rank), *map(str, key), *[f"{means[c]:.3f}" if c in means else "-"
                                                                     for c in configs], f"{mean:.3f}",
                                        f"{n}/{len(configs) * len(seeds)}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HandManipulateBlockRotateZ-v0", help="the environment (sparse id)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                        help="configurations: the paper's four or forks' paths from the repository root "
                             "(research/my_idea); default: the four")
    parser.add_argument("--samples", type=int, help="random combinations (paper: 40; --smoke: 2)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds per combination and config (paper: 3 seeds)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default 50; --smoke: 1)")
    parser.add_argument("--batch-workers", type=int, help="--batch-size = value x this (default 19; --smoke: 1)")
    parser.add_argument("--extra", help=f"options for every trial (default: {PAPER}; --smoke: {SMOKE})")
    parser.add_argument("--smoke", action="store_true", help="a tiny budget, to try the search")
    parser.add_argument("--out", help="the search directory (default: grids/hparam_search, or ..._smoke)")
    parser.add_argument("--cpus-per-run", type=float, default=2, help="CPUs per trial (also its --torch-threads)")
    parser.add_argument("--gpus-per-run", type=float, default=0, help="GPUs per trial (fractions share a GPU)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    parser.add_argument("--address", help="join a running Ray cluster instead of starting a local instance")
    parser.add_argument("--max-retries", type=int, default=2, help="retries of a failing trial")
    parser.add_argument("--random-state", type=int, default=0, help="seed of the sampling of the combinations")
    args = parser.parse_args(argv)
    import envs  # noqa: F401  (the ids)

    if args.env not in envs.ENV_IDS or "Dense" in args.env:
        parser.error(f"unknown environment {args.env!r}; give a sparse id of envs.ENV_IDS")
    args.configs = check_configs(parser, args.configs)  # as grid.py: one of the four, or a fork of one
    for c in args.configs:  # a fork may have dropped one of the searched options (sac_her.py: --noise-eps)
        usage = subprocess.run([sys.executable, script(c), "--help"], capture_output=True, text=True)
        if usage.returncode != 0:
            parser.error(f"{c}: python {os.path.relpath(script(c), ROOT)} --help failed:\n{usage.stderr[-2000:]}")
        usage = usage.stdout
        missing = [o for o in (f"--{k.replace('_', '-')}" for k in SPACE) if not re.search(rf"{o}[\s=]", usage)]
        if missing:
            parser.error(f"{c} has no {', '.join(missing)}, which the search sets (Appendix B's space): search it "
                         f"with scripts/grid.py --extra instead, or give the fork the option")
    seeds = args.seeds or ([1] if args.smoke else [1, 2, 3])
    spec = dict(env=args.env, configs=args.configs, seeds=seeds, samples=args.samples or (2 if args.smoke else 40),
                epochs=args.epochs or (1 if args.smoke else 50),
                batch_workers=args.batch_workers or (1 if args.smoke else 19),
                extra=shlex.split(args.extra if args.extra is not None else SMOKE if args.smoke else PAPER),
                random_state=args.random_state)
    out = os.path.abspath(args.out or os.path.join("grids", "hparam_search" + ("_smoke" if args.smoke else "")))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "search.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != spec:
            parser.error(f"{out} holds a different search ({old} there, {spec} now); use another --out")
    with open(path, "w") as f:
        json.dump(spec, f, indent=1)
    spec.update(torch_threads=max(1, int(args.cpus_per_run)), out=out)
    # A local instance (or a head on loopback): Ray's servers on 127.0.0.1 only, no dashboard (as scripts/grid.py).
    if not args.address or args.address.split(":")[0] in ("127.0.0.1", "localhost"):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if args.address and os.path.exists(os.path.expanduser("~/.ray/auth_token")):  # Ray 2.60 clusters ask for a token
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # without it, joining a cluster started by `ray start` fails
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    ray.init(address=args.address or "local", num_cpus=None if args.address else args.num_cpus, include_dashboard=False,
             log_to_driver=False)
    trainable = tune.with_resources(tune.with_parameters(trial, spec=spec),
                                    {"cpu": args.cpus_per_run, "gpu": args.gpus_per_run})
    experiment = os.path.join(out, "tune")
    if tune.Tuner.can_restore(experiment):  # an interrupted search: finished trials kept, the others continue
        print(f"continuing the search in {experiment}", flush=True)
        tuner = tune.Tuner.restore(experiment, trainable, resume_errored=True)
    else:
        param_space = {k: tune.choice(v) for k, v in SPACE.items()}
        param_space.update(config=tune.grid_search(args.configs), seed=tune.grid_search(seeds))
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=spec["samples"], metric="auc", mode="max",
                search_alg=BasicVariantGenerator(constant_grid_search=True, random_state=args.random_state)),
            run_config=tune.RunConfig(name="tune", storage_path=out, verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=args.max_retries)))
    results = tuner.fit()
    ray.shutdown()
    text = ranked_table(results, args.configs, seeds)
    with open(os.path.join(out, "hparam_search.md"), "w") as f:
        f.write(text)
    errors = [r for r in results if r.error]
    unfinished = [r for r in results if not r.error and (r.metrics or {}).get("epoch", 0) < spec["epochs"]]
    if unfinished:  # Ctrl-C: Tune stopped the trials and saved its state
        print(f"{len(unfinished)} trials unfinished; rerun the same command to continue the search", flush=True)
        return 130
    print(f"{len(results)} trials, {len(errors)} failed; ranked by the area under the test success curve (mean test "
          f"success over epochs), averaged over seeds, then configurations; written to {out}/hparam_search.md\n" + text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
