"""Run a grid of training runs (environments x configurations x seeds) on Ray, e.g. one of the paper's figures.

Each run is one of the four training scripts or a fork of one (--configs research/my_idea), started as a subprocess
with the command line a user would type, in the grid directory (--out DIR; the runs go to DIR/runs/, each attempt's
output to DIR/logs/). Ray schedules them: a run is a Ray task that asks for --cpus-per-run CPUs (and --gpus-per-run
GPUs, a fraction is fine), so as many run at once as the machine, or the cluster (--address), has room for.

    python scripts/grid.py --figure figure3 --smoke                 # the whole grid with a tiny budget, minutes
    python scripts/grid.py --figure figure3 --envs FetchPush-v0 --seeds 1 2 --out grids/push
    python scripts/grid.py --envs FetchReach-v0 --configs ddpg_her ddpg --epochs 10 --extra "--n-cycles 10"
    python scripts/grid.py --figure appendix_c --address auto       # on a running Ray cluster (docs/grid.md)
    python scripts/grid.py --envs FetchPush-v0 --configs ddpg_her research/my_idea --extra "" --epochs 15

Rerun the same command after a kill, a crash or a reboot: finished runs are skipped, interrupted ones continue with
--resume (no completed epoch is lost), runs killed before their first epoch start afresh. A failing run is retried
--max-retries times; the grid goes on, lists the failures at the end and exits 1. Then the figure and the table are
drawn from DIR/runs (scripts/plot.py). See docs/grid.md.
"""

import argparse
import ctypes
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("ddpg_her", "ddpg_her_dense", "ddpg", "ddpg_dense")  # the paper's four (section 1.4), one script each
FETCH = ("FetchReach-v0", "FetchPush-v0", "FetchSlide-v0", "FetchPickAndPlace-v0")
HAND = ("HandReach-v0", "HandManipulateBlockRotateZ-v0", "HandManipulateBlockRotateParallel-v0",
        "HandManipulateBlockRotateXYZ-v0", "HandManipulateBlockFull-v0", "HandManipulateEggRotate-v0",
        "HandManipulateEggFull-v0", "HandManipulatePenRotate-v0", "HandManipulatePenFull-v0")
FIGURES = {  # the paper's figures: their environments; 4 configurations x 5 seeds each
    "figure3": FETCH,
    "figure4": ("HandReach-v0", "HandManipulateBlockRotateXYZ-v0", "HandManipulateEggFull-v0",
                "HandManipulatePenRotate-v0"),
    "appendix_c": FETCH + HAND,
}
# --smoke: the same grid with a budget that takes seconds per run (1 epoch of 2 cycles, 2 envs, tiny networks).
SMOKE = "--n-envs 2 --n-cycles 2 --n-batches 2 --batch-size 32 --n-test-rollouts 1 --hidden 32 --buffer-size 10000"
SET_BY_GRID = ("--env-id", "--seed", "--n-epochs", "--exp-name", "--torch-threads", "--env-threads", "--resume",
               "--track", "--wandb")


def paper_epochs(env):  # section 1.4: 50 epochs for Fetch and HandReach, 200 for hand manipulation
    return 50 if env.startswith(("Fetch", "HandReach")) else 200


def script(config):  # a configuration is a training script: ddpg_her, or a fork's path such as research/td3_her
    return os.path.join(ROOT, config) + ".py"


def exp_name(config):  # the scripts' exp_name: their file's name (research/td3_her: td3_her)
    return os.path.basename(config)


def check_configs(parser, configs):
    """--configs as given (ddpg_her, research/my_idea, .py or not): their names without .py, each an existing script
    with its own file name (the runs' names); else a parser error naming the problem."""
    configs = [c.removesuffix(".py") for c in configs]
    for c in configs:
        if not os.path.isfile(script(c)):
            parser.error(f"unknown configuration {c!r}: no {os.path.relpath(script(c), ROOT)}; give one of the paper's "
                         f"four ({' '.join(CONFIGS)}) or a fork's path from the repository root, e.g. research/my_idea")
    names = [exp_name(c) for c in configs]
    if len(set(names)) < len(names):
        parser.error(f"--configs {' '.join(configs)}: two scripts of one file name would share run names")
    return configs


def env_id(env, config):  # the dense configurations run on the ...Dense-v0 twin
    return env.replace("-v0", "Dense-v0") if exp_name(config).endswith("_dense") else env


def run_key(run):
    return f"{env_id(run['env'], run['config'])}__{exp_name(run['config'])}__{run['seed']}"


def run_dirs(out, run):  # the run's directories, oldest first (the scripts name them ENV__EXP__SEED__UNIXTIME)
    return sorted(glob.glob(os.path.join(out, "runs", run_key(run) + "__*")), key=lambda d: int(d.rsplit("__", 1)[1]))


def epochs_done(run_dir):
    try:
        with open(os.path.join(run_dir, "metrics.csv")) as f:
            return max(len(f.readlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def is_done(run_dir, n_epochs):  # (a run finished at fewer epochs is extended when the grid asks for more)
    return epochs_done(run_dir) >= n_epochs


def seconds_per_epoch(run_dir):  # from metrics.csv: wall-clock (elapsed_s) of the last completed epoch / epochs
    try:
        with open(os.path.join(run_dir, "metrics.csv")) as f:
            header, *rows = [line.strip().split(",") for line in f if line.strip()]
        return float(rows[-1][header.index("elapsed_s")]) / len(rows) if rows else None
    except (FileNotFoundError, ValueError, IndexError):
        return None


def die_with_parent():  # in the run's process before it starts: signals as in a shell, SIGTERM if the worker dies
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # Ray's worker blocks some signals; a child would inherit that
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # and an ignored SIGINT (background processes)
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux): the run stops as after Ctrl-C


def train(run, spec):
    """One run, as a Ray task: resume it if it has a checkpoint, else start it afresh; its exit code and output tail."""
    out, config, seed = spec["out"], run["config"], run["seed"]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ray.cancel needs it (SIGINT is ignored in background)
    dirs = run_dirs(out, run)
    if any(is_done(d, run["epochs"]) for d in dirs):
        return dict(rc=0, tail="", skipped=True)
    for d in dirs:
        if not os.path.exists(os.path.join(d, "checkpoint.pt")):
            if epochs_done(d):  # logs kept without their checkpoint (e.g. a clone of results/): never delete them
                return dict(rc=1, skipped=False, tail=f"{d} has {epochs_done(d)} completed epochs but no checkpoint.pt "
                            "to resume from (its logs were kept without it?); move it out of the grid to run it again")
            shutil.rmtree(d)  # killed before its first epoch: start afresh
    dirs = [d for d in dirs if os.path.exists(d)]
    wandb = []
    if spec["track"]:  # one W&B group per (figure, env, configuration): its seeds; tags to filter a report by
        wandb = ["--track", "--wandb-project-name", spec["wandb_project_name"],
                 "--wandb-group", f"{spec['figure']}-{run['env']}-{exp_name(config)}",
                 "--wandb-tags", spec["figure"], run["env"], exp_name(config), f"seed{seed}",
                 f"commit-{spec['commit']}"]
    if dirs:  # a resumed run keeps its saved config: only its epochs (to extend it) and W&B options may be given
        command = ["--resume", os.path.relpath(dirs[-1], out), "--n-epochs", str(run["epochs"])] + wandb
    else:
        command = ["--env-id", env_id(run["env"], config), "--seed", str(seed), "--n-epochs", str(run["epochs"]),
                   "--torch-threads", str(spec["torch_threads"]), "--env-threads", str(spec["torch_threads"])]
        command += spec["extra"] + wandb
    command = [sys.executable, script(config)] + command
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    log_path = os.path.join(out, "logs", run_key(run) + ".log")  # every attempt's stdout and stderr
    with open(log_path, "a") as log:
        log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.uname().nodename}: {shlex.join(command)}\n")
        log.flush()
        start = log.tell()
        process = subprocess.Popen(command, cwd=out, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            while process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:  # ray.cancel (the grid was interrupted): stop the run as Ctrl-C would, and wait
            process.terminate()  # SIGTERM: the scripts stop as on Ctrl-C, keeping their completed epochs
            process.wait()
            raise
    with open(log_path) as log:
        log.seek(start)
        tail = "".join(log.readlines()[-15:])
    return dict(rc=process.returncode, tail=tail, skipped=False)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figure", choices=list(FIGURES), help="a figure of the paper: its environments and budget")
    parser.add_argument("--envs", nargs="+", help="environment ids, sparse (the dense configs use the Dense twin); "
                        "default: the figure's")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="configurations: training scripts, the "
                        "paper's four or forks' paths from the repository root (research/my_idea); default: the four")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 1 2 3 4 5 (the paper's 5), --smoke: 1")
    parser.add_argument("--epochs", nargs="+", metavar="[ENV=]N", help="epochs per run, for every env (N) or one "
                        "(ENV=N), e.g. --epochs 10 FetchSlide-v0=30; default: the paper's (50 for Fetch and HandReach, "
                        "200 for hand manipulation), --smoke: 1. Raising them later extends the grid's runs")
    parser.add_argument("--extra", help="options for every run, e.g. \"--n-cycles 10\"; default: --paper-budget "
                        f"with --figure, none without, --smoke: {SMOKE}")
    parser.add_argument("--smoke", action="store_true", help="a tiny budget (seconds per run), to try the grid")
    parser.add_argument("--out", help="the grid directory (default: grids/FIGURE, grids/FIGURE_smoke)")
    parser.add_argument("--cpus-per-run", type=float, default=2, help="CPUs Ray reserves per run; also the run's "
                        "--torch-threads (at least 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0, help="GPUs per run (fractions share a GPU)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    parser.add_argument("--address", help="join a running Ray cluster (e.g. auto or HEAD_IP:6379) instead of "
                        "starting a local instance")
    parser.add_argument("--max-retries", type=int, default=2, help="retries of a failing run")
    parser.add_argument("--progress-every", type=float, default=30, help="seconds between progress lines")
    parser.add_argument("--track", action="store_true", help="log the runs to W&B, grouped by figure, env, config")
    parser.add_argument("--wandb-project-name", default="multi-goal-rl", help="the W&B project")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the figure and table at the end")
    args = parser.parse_args(argv)
    return parser, args


def check(parser, args):
    """The grid's runs and spec, or a parser error naming what is wrong; before anything starts."""
    sys.path.insert(0, ROOT)  # envs/ and the scripts' own imports (evaluate.py)
    import envs  # the registered ids

    sparse = [e for e in envs.ENV_IDS if "Dense" not in e]
    if not args.figure and not args.envs:
        parser.error("give --figure or --envs")
    names = args.envs or FIGURES[args.figure]
    names = [e if e.endswith("-v0") else e + "-v0" for e in names]  # FetchPush is FetchPush-v0
    for e in names:
        if e not in sparse:
            parser.error(f"unknown environment {e!r} (give the sparse id; the dense configurations use its Dense "
                         f"twin); valid: {' '.join(sparse)}")
    args.configs = check_configs(parser, args.configs)
    seeds = args.seeds or ([1] if args.smoke else [1, 2, 3, 4, 5])
    if args.max_retries < 0 or args.cpus_per_run <= 0:
        parser.error("--cpus-per-run must be positive, --max-retries >= 0")
    epochs = {e: 1 if args.smoke else paper_epochs(e) for e in names}
    for item in args.epochs or []:  # N for every env, then ENV=N for one
        env, _, n = item.rpartition("=")
        if not n.isdigit() or int(n) < 1 or env and env not in names:
            parser.error(f"--epochs {item}: give N or ENV=N with N >= 1 and ENV one of the grid's: {' '.join(names)}")
        epochs.update({env: int(n)} if env else dict.fromkeys(names, int(n)))
    if args.smoke:  # the tiny budget, then any --extra
        extra = shlex.split(SMOKE) + shlex.split(args.extra or "")
    else:  # --extra replaces the default: --paper-budget for a figure (so --extra "" gives the 2-core defaults)
        extra = shlex.split(args.extra if args.extra is not None else "--paper-budget" if args.figure else "")
    for option in extra:
        if option.startswith(SET_BY_GRID):
            parser.error(f"--extra {option}: the grid sets it (use --envs, --seeds, --epochs, --cpus-per-run, --track)")
    # Parse the options as each script will (tyro, the scripts' own Args and checks): a typo fails here, not 80 times.
    import importlib.util

    import tyro

    for config in args.configs:
        spec = importlib.util.spec_from_file_location(exp_name(config), script(config))
        module = sys.modules[exp_name(config)] = importlib.util.module_from_spec(spec)  # tyro reads Args' source there
        spec.loader.exec_module(module)
        if module.DENSE != exp_name(config).endswith("_dense"):
            parser.error(f"{config}.py is a {'dense' if module.DENSE else 'sparse'}-reward script, and the grid runs "
                         f"the dense environments for the scripts whose names end in _dense: rename it")
        try:
            parsed = tyro.cli(module.Args, args=extra + ["--env-id", env_id(names[0], config)])
            module.check_args(parsed, module.DENSE, module.USE_HER)
        except SystemExit as error:
            why = f": {error.code}" if isinstance(error.code, str) else " (see above)"
            parser.error(f"--extra {shlex.join(extra)!r} is refused by {config}.py{why}")
    name = (args.figure or "grid") + ("_smoke" if args.smoke else "")
    out = os.path.abspath(args.out or os.path.join("grids", name))
    # seed-major: Ray starts runs in this order, so a grid cut short has every (env, config) once before any twice
    runs = [dict(env=e, config=c, seed=s, epochs=epochs[e]) for s in seeds for e in names for c in args.configs]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    spec = dict(figure=args.figure or "grid", name=name, envs=names, configs=args.configs, seeds=seeds, epochs=epochs,
                extra=extra, out=out, torch_threads=max(1, int(args.cpus_per_run)), track=args.track,
                wandb_project_name=args.wandb_project_name, commit=commit.stdout.strip() or "unknown")
    path = os.path.join(out, "grid.json")
    same = ("figure", "envs", "configs", "extra")  # what makes it the same grid (epochs may change, seeds be added)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = [f"{k}: {old.get(k)} there, {spec[k]} now" for k in same if old.get(k) != spec[k]]
        if not set(old.get("seeds", [])) <= set(seeds):  # a seed left out: its runs would sit in the folder unnamed
            diff.append(f"seeds: {old.get('seeds')} there, {seeds} now (seeds may be added, not left out)")
        if diff:
            parser.error(f"{out} holds a different grid ({'; '.join(diff)}); use another --out")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump({k: spec[k] for k in same + ("seeds", "epochs", "commit")}, f, indent=1)
    return runs, spec


def minutes(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def main(argv=None):
    parser, args = parse(argv)
    runs, spec = check(parser, args)
    # A local instance (or a head started on loopback): Ray's servers on 127.0.0.1 only, as on macOS; no dashboard.
    if not args.address or args.address.split(":")[0] in ("127.0.0.1", "localhost"):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported
    if args.address and os.path.exists(os.path.expanduser("~/.ray/auth_token")):  # Ray 2.60 clusters ask for a token
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # without it, joining a cluster started by `ray start` fails
    import ray

    ray.init(address=args.address or "local", num_cpus=None if args.address else args.num_cpus, include_dashboard=False,
             log_to_driver=False)
    task = ray.remote(train).options(num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run, max_retries=0)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // args.cpus_per_run))
    out, n = spec["out"], len(runs)
    print(f"grid {spec['name']} in {out}: {n} runs ({len(spec['envs'])} envs x {len(spec['configs'])} configs x "
          f"{len(spec['seeds'])} seeds), {args.cpus_per_run:g} CPUs per run, {slots} at once; "
          f"options: {shlex.join(spec['extra']) or '(the defaults)'}", flush=True)
    pending = {}  # ref -> run
    submitted, attempts, failed, finished, skipped = {}, {}, [], [], []

    def submit(run):
        attempts[run_key(run)] = attempts.get(run_key(run), 0) + 1
        submitted[run_key(run)] = time.time()
        pending[task.remote(run, spec)] = run

    began = dict(time=time.time(), epochs=None)  # the grid's own pace, for the ETA

    def progress():
        known = [s for r in runs for d in run_dirs(out, r)[-1:] if (s := seconds_per_epoch(d))]
        left, to_do, total, done = 0.0, 0, 0, 0
        for r in runs:
            d = (run_dirs(out, r) or [None])[-1]
            k = min(epochs_done(d), r["epochs"]) if d else 0
            total, done = total + r["epochs"], done + k
            if r in pending.values():
                per_epoch = (seconds_per_epoch(d) if d else None) or (sorted(known)[len(known) // 2] if known else 0)
                left, to_do = left + (r["epochs"] - k) * per_epoch, to_do + r["epochs"] - k
        began["epochs"] = done if began["epochs"] is None else began["epochs"]
        if done - began["epochs"] >= slots:  # epochs done per second by this grid so far (start-ups included)
            eta = f"ETA {minutes(to_do * (time.time() - began['time']) / (done - began['epochs']))}"
        else:  # until then: the runs' seconds per epoch (metrics.csv), shared over the slots
            eta = f"ETA {minutes(left / min(slots, max(len(pending), 1)))}" if known else "ETA after the first epoch"
        log_dir = os.path.join(out, "logs")
        running = sum(1 for r in pending.values() if os.path.exists(p := os.path.join(log_dir, run_key(r) + ".log"))
                      and os.path.getmtime(p) >= submitted[run_key(r)])
        print(f"[{time.strftime('%H:%M:%S')}] {len(finished)}/{n} done ({len(skipped)} earlier), {running} running, "
              f"{len(failed)} failed, {len(pending) - running} to go | epochs {done}/{total} | {eta}", flush=True)

    for run in runs:
        submit(run)
    interrupted = False
    for sig in (signal.SIGTERM, signal.SIGINT):  # `kill` stops the grid as Ctrl-C does, also when started with &
        signal.signal(sig, signal.default_int_handler)
    try:
        last = 0.0
        while pending:
            changed = False
            wait = max(0.0, last + args.progress_every - time.time())  # until the next progress line
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
            for ref in ready:
                run = pending.pop(ref)
                key = run_key(run)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:  # the worker or its node died
                    result = dict(rc=None, tail=str(error)[-2000:], skipped=False)
                changed = True
                if result["rc"] == 0:
                    finished.append(run)
                    if result["skipped"]:
                        skipped.append(run)
                    else:
                        print(f"[{time.strftime('%H:%M:%S')}] finished {key}", flush=True)
                    continue
                with open(os.path.join(out, "failures.txt"), "a") as f:
                    f.write(f"### {time.strftime('%Y-%m-%d %H:%M:%S')} {key}, attempt {attempts[key]}, "
                            f"exit code {result['rc']}:\n{result['tail']}\n")
                retry = attempts[key] <= args.max_retries
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {key} (attempt {attempts[key]} of "
                      f"{args.max_retries + 1}, exit code {result['rc']}){', retrying' if retry else ''}; its output "
                      f"ends:\n  " + "\n  ".join(result["tail"].rstrip().splitlines()[-6:]), flush=True)
                if retry:
                    submit(run)
                else:
                    failed.append((key, result))
            if changed or time.time() >= last + args.progress_every:
                progress()
                last = time.time()
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: stopping {len(pending)} runs (each keeps its completed epochs) ...", flush=True)
        for ref in pending:
            ray.cancel(ref)  # KeyboardInterrupt in the task, which stops its run as Ctrl-C would
        _, left = ray.wait(list(pending), num_returns=len(pending), timeout=60)
        for ref in left:  # kill the worker: the run gets SIGTERM (die_with_parent), which stops it as Ctrl-C does
            ray.cancel(ref, force=True)
        time.sleep(5 if left else 0)
    ray.shutdown()
    if interrupted:
        print(f"stopped; rerun the same command to continue (finished runs are skipped, the others resumed)")
        return 130
    print(f"grid {spec['name']}: {len(finished)}/{n} runs done ({len(skipped)} were done before), {len(failed)} failed")
    for key, result in failed:
        print(f"  FAILED {key} (exit code {result['rc']}; all attempts: {out}/failures.txt, output: "
              f"{out}/logs/{key}.log)")
    if not args.no_plot and finished:
        name = os.path.join(out, spec["name"])
        title = {"figure3": "Figure 3", "figure4": "Figure 4", "appendix_c": "Appendix C"}.get(spec["figure"], "")
        title = f"{title} {'(smoke) ' if args.smoke else ''}median test success, IQR over seeds".strip()
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot.py"), "--runs-dir", f"{out}/runs",
                        "--envs", *spec["envs"], "--exps", *map(exp_name, spec["configs"]), "--out", name + ".png",
                        "--title", title])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
