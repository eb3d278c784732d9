"""What a training run needs that is not the algorithm, shared by the four training scripts and every fork of them.

- `Run`: the run directory runs/RUN_NAME (config.json, log.txt, metrics.csv, checkpoint.pt, replay/, model.pt),
  --resume, W&B, and epoch files that survive Ctrl-C, `kill` and `kill -9`;
- `pick_compute`: the device, threads and matmul precision; `check_args`: the options' ranges;
- `cuda_graph` (an update as one CUDA graph, eager if capture fails) and `explain_oom` (a GPU that is too small).

The algorithm (networks, normaliser, replay and HER sampling, update, rollouts, the loop) stays in the scripts, so
that each reads top to bottom. `Run` saves and restores whatever has `state_dict()`/`load_state_dict()`, and a
replay buffer with `ep` (a dict of tensors), `n`, `n_eps`, `unsaved` and `store(batch, idx)`, as the scripts' is.
"""

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields

import gymnasium as gym
import numpy as np
import torch

import envs

ROOT = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT_FORMAT = 2  # 2: states by name, CPU tensors (run_plumbing.py); 1: up to commit 32296fe


def fail(message):
    sys.exit(f"{os.path.basename(sys.argv[0])}: error: {message}")


def plural(n, word):
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def command(script):  # how to run a script from the repository root: ddpg_her.py, research/td3_her.py
    path = os.path.relpath(os.path.abspath(script), ROOT)
    return path if not path.startswith("..") else os.path.abspath(script)


def atomic_save(obj, path):  # a dict of arrays to .npz (no pickle, no copy), anything else with torch.save
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **obj) if path.endswith(".npz") else torch.save(to_cpu(obj), f)
    os.replace(path + ".tmp", path)  # a kill mid-write leaves the previous file intact


def to_cpu(obj):  # CPU copies of a GPU run's tensors: checkpoints load with a plain torch.load on any machine
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def write_csv(rows, path):  # rewritten whole and atomically each epoch, so a resume can restore it from a checkpoint
    with open(path + ".tmp", "w") as f:
        f.write("".join(",".join(map(str, row)) + "\n" for row in [rows[0].keys()] + [r.values() for r in rows]))
    os.replace(path + ".tmp", path)


# ---- options ------------------------------------------------------------------------------------------------------
RULES = [("must be positive", lambda v: v > 0, "n_epochs n_envs n_cycles n_batches batch_size buffer_size hidden "
          "n_layers actor_lr critic_lr clip_obs norm_clip norm_eps"),
         ("must be >= 0", lambda v: v >= 0, "n_test_rollouts replay_k noise_eps action_l2 torch_threads env_threads"),
         ("must be in [0, 1]", lambda v: 0 <= v <= 1, "random_eps polyak"),
         ("must be in [0, 1)", lambda v: v is None or 0 <= v < 1, "gamma")]


def check_args(args, dense, use_her):
    """The environment id, and the range of every option of RULES that Args has; fails with a message naming it."""
    if args.env_id not in gym.registry:
        fail(f"unknown environment id {args.env_id!r}; valid ids are: {', '.join(envs.ENV_IDS)}")
    if args.env_id in envs.ENV_IDS and ("Dense" in args.env_id) != dense:
        fail(f"{args.env_id} has {'dense' if 'Dense' in args.env_id else 'sparse'} rewards but this script is the "
             f"{'dense' if dense else 'sparse'}-reward configuration; use ddpg{'_her' if use_her else ''}"
             f"{'' if dense else '_dense'}.py for it")
    for message, ok, names in RULES:
        for name in names.split():
            if hasattr(args, name) and not ok(getattr(args, name)):
                fail(f"--{name.replace('_', '-')} {message}, got {getattr(args, name)}")


# ---- device, threads, precision -----------------------------------------------------------------------------------
@dataclass
class Compute:
    device: torch.device
    cudagraphs: bool  # each update replayed as one captured CUDA graph
    bf16: bool  # the hidden layers' matmuls in bfloat16
    update_threads: int  # CPU threads for updates (rollouts use one)
    env_threads: int  # threads stepping the envs

    def __str__(self):
        on = (f"{self.device} ({plural(self.update_threads, 'thread')})" if self.device.type == "cpu" else
              f"{self.device}{' as CUDA graphs' if self.cudagraphs else ''}")
        precision = "bf16 matmuls" if self.bf16 else "fp32"
        return f"envs on {plural(self.env_threads, 'thread')}, updates on {on}, {precision}"


def bf16_supported(device):
    """bf16 matmuls that run on bf16 units: CPUs with AVX512-BF16 or AMX; GPUs of compute capability 8.0 (Ampere) or
    newer. (torch.cuda.is_bf16_supported() also counts emulation, slower than fp32 on a T4, V100 or RTX 20xx.)"""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pick_compute(args):
    """--cuda's GPU where there is one, else the CPU; sets rollouts to one torch thread (the scripts raise it to
    update_threads around their updates) and glibc's allocator to keep freed tensors (no page faults per update)."""
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    compute = Compute(device, device.type == "cuda" and args.cudagraphs, args.bf16_matmul and bf16_supported(device),
                      args.torch_threads or torch.get_num_threads(),  # PyTorch's default: one per physical core
                      min(args.n_envs, args.env_threads or len(os.sched_getaffinity(0))))
    torch.set_num_threads(1)  # rollouts: the policy on n_envs observations, too small to share out
    with contextlib.suppress(OSError):  # glibc gives freed tensors back to the OS, then page-faults them in again
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 25), ctypes.CDLL("libc.so.6").mallopt(-1, 1 << 30)  # mmap, trim
    return compute


@contextlib.contextmanager
def explain_oom(what, nbytes, flag, device):
    """Turns torch's out-of-memory trace while allocating `what` into one line: the bytes needed and free, the flag."""
    try:
        yield
    except torch.OutOfMemoryError:
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
        fail(f"{what} needs {nbytes / 2**30:.2f} GiB of {device} memory, " +
             (f"but only {free / 2**30:.2f} GiB are free" if free is not None else "more than is free") +
             f"; lower {flag} (or run with --no-cuda, in the host's memory)")


def cuda_graph(fn, run=None, warmup=3):
    """fn (no arguments; it reads and writes tensors in place) as a function that runs it eagerly `warmup` times on a
    side stream, then captures it once as a CUDA graph and from then on replays the graph: one launch for all its
    kernels, no Python, no host sync (PyTorch's whole-network capture; LeanRL's CudaGraphModule does the same).
    If the capture fails (an operation that cannot be captured, an old driver), fn runs eagerly from then on, and
    the run says so in its log and config.json."""
    graph, calls, eager = torch.cuda.CUDAGraph(), [0], [False]

    def run_fn():
        calls[0] += 1
        if eager[0]:
            return fn()
        if calls[0] <= warmup:  # the warm-up calls are real calls; they allocate Adam's state, cuBLAS workspaces
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), warnings.catch_warnings():  # capturable Adam, run uncaptured: expected
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                fn()
            torch.cuda.current_stream().wait_stream(stream)
            return
        if calls[0] == warmup + 1:  # capturing records the kernels without running them: the replay below does
            try:
                with torch.cuda.graph(graph):
                    fn()
            except Exception as error:  # nothing of the failed capture ran: this call's update runs eagerly below
                eager[0] = True
                why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                message = f"warning: CUDA graph capture failed ({why}); updates run eagerly from now on"
                if run is None:
                    print(message)
                else:
                    run.log(message)
                    run.update_config(cudagraphs=False, cudagraphs_failed=why)
                return fn()
        graph.replay()

    return run_fn


# ---- the run: directory, logs, W&B, checkpoints, resume ------------------------------------------------------------
class Run:
    """runs/RUN_NAME and what goes in it. With --resume, `Run(args, script)` loads the checkpoint and `run.args` are
    the saved options (with --n-epochs and the W&B options given); a finished run exits here, saying so."""

    def __init__(self, args, script):
        self.args, self.script, self.ckpt, self.rows, self.elapsed_before = args, script, None, [], 0.0
        self.completed, self._writing, self._signalled = 0, False, False  # completed: epochs with a checkpoint
        if args.resume:
            self.ckpt, self.args = load_resume(args, script)
            self.completed = self.ckpt["epoch"]
            if self.completed == self.args.n_epochs:  # nothing to do; config.json and metrics.csv stay as they are
                print(f"{args.resume} is already complete: {plural(self.completed, 'epoch')} "
                      f"(add --n-epochs N to extend it)")
                sys.exit(0)

    @property
    def resumed(self):
        return self.ckpt is not None

    def start(self, config, compute):
        """Creates (or reopens) the run directory, writes config.json (Args, `config` and the compute set-up), starts
        W&B with --track; warns when a CPU run's update threads would stall on a busy machine."""
        args = self.args
        self.name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"  # CleanRL's run names
        if self.ckpt:  # a resumed run stays where it is, whatever the cwd
            self.name, self.dir = self.ckpt["run_name"], args.resume
        else:
            self.dir = f"runs/{self.name}"

        self.compute, self.start_time = compute, time.time()
        os.makedirs(f"{self.dir}/replay", exist_ok=True)
        self.log_file = open(f"{self.dir}/log.txt", "a", buffering=1)  # line-buffered: survives a kill
        cpu = compute.device.type == "cpu"
        self.config = dict(asdict(args), run_name=self.name, **config, torch=torch.__version__,
                           device=str(compute.device), threads=compute.update_threads if cpu else None,
                           env_threads=compute.env_threads, bf16=compute.bf16, cudagraphs=compute.cudagraphs)
        self.update_config()
        if self.ckpt and self.ckpt["filled"]:
            filled = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.ckpt["filled"].items())
            self.log(f"warning: {self.dir} was started before these options existed and resumes with their defaults: "
                     f"{filled}")
        if args.track:
            import wandb

            if "WANDB_MODE" not in os.environ:  # never block: offline without a network or key (`wandb sync` later)
                with contextlib.suppress(OSError):
                    socket.create_connection(("api.wandb.ai", 443), timeout=3).close()
                    os.environ["WANDB_MODE"] = "online" if wandb.api.api_key else "offline"
                os.environ.setdefault("WANDB_MODE", "offline")
            self.wandb = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, group=args.wandb_group,
                                    tags=list(args.wandb_tags), name=self.name, id=self.name.replace("/", "_"),
                                    resume="allow", config=self.config, save_code=True)
        n_cpus, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
        if cpu and compute.update_threads > 1 and load > n_cpus - 0.5:  # docs/performance.md: 9 env steps/s, not 690
            self.log(f"warning: the machine is busy (load {load:.1f} on {n_cpus} CPUs), and updates on "
                     f"{compute.update_threads} threads stall behind other jobs; --torch-threads 1 (and "
                     f"--env-threads 1) is safer")

    def log(self, message):  # to the terminal and to the run's log.txt
        print(message, flush=True)
        print(message, file=self.log_file)

    def update_config(self, **changes):
        self.config.update(changes)
        with open(f"{self.dir}/config.json", "w") as f:
            json.dump(self.config, f, indent=2)

    def elapsed(self):  # seconds of this run, the parts before a resume included
        return self.elapsed_before + time.time() - self.start_time

    def restore(self, state, replay, rng):
        """Loads the checkpoint into `state` (name -> module or optimiser), the replay buffer and the RNGs; returns
        (epochs, env steps, episodes, updates) done. Optimisers keep this run's `capturable` (a GPU run on a CPU)."""
        ckpt, device = self.ckpt, self.compute.device
        for name, obj in state.items():
            capturable = [g.get("capturable") for g in getattr(obj, "param_groups", [])]
            obj.load_state_dict(ckpt["state"][name])
            for group, flag in zip(getattr(obj, "param_groups", []), capturable):
                group["capturable"] = flag
        for e in range(1, ckpt["epoch"] + 1):  # the replay buffer, as written: each epoch's new episodes, in order
            part = np.load(f"{self.dir}/replay/{e:05d}.npz")
            replay.store(part, part["idx"])
        replay.n, replay.unsaved[:] = ckpt["replay_n"], False
        replay.n_eps.fill_(replay.n)
        rng.bit_generator.state = ckpt["np_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        self.elapsed_before, self.rows = ckpt["elapsed"], ckpt["rows"]
        write_csv(self.rows, f"{self.dir}/metrics.csv")  # drops rows of epochs after the checkpoint: they are redone
        done = ckpt["epoch"], ckpt["step"], ckpt["episodes"], ckpt["updates"]
        self.log(f"resumed {self.dir} after epoch {done[0]} ({done[1]:,} env steps, {done[2]:,} episodes); "
                 f"epochs {done[0] + 1}..{self.args.n_epochs} to go; {self.compute}")
        self.ckpt = None  # the replay copy in it is as big as the replay buffer
        return done

    @contextlib.contextmanager
    def guard(self):
        """Around the epochs: `kill` (SIGTERM) stops a run like Ctrl-C, never while an epoch's files are written;
        an interrupted or failed run says what survived and how to go on from there."""
        def stop(signum, frame):
            if self._writing:
                self._signalled = True
            else:
                raise KeyboardInterrupt

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        try:
            yield
        except BaseException as error:  # Ctrl-C, kill, or an error
            what = "interrupted" if isinstance(error, KeyboardInterrupt) else f"stopped by {type(error).__name__}"
            self.log(f"{what} after {plural(self.completed, 'completed epoch')}; continue from there with: "
                     f"python {command(self.script)} --resume {self.dir}")
            if not isinstance(error, KeyboardInterrupt):
                raise
            sys.exit(130)

    def end_epoch(self, metrics, model, state, replay, rng, progress):
        """An epoch's files, each written atomically, none interrupted by a signal: metrics.csv (and W&B), model.pt
        (`model`, with --save-model), and with --checkpoint the epoch's new replay episodes and checkpoint.pt
        (`model`, `state`'s state dicts, the RNGs and `progress`: env steps, episodes, updates)."""
        self._writing, args, epoch = True, self.args, metrics["epoch"]
        self.rows.append(metrics)
        write_csv(self.rows, f"{self.dir}/metrics.csv")
        if args.track:
            self.wandb.log(metrics, step=metrics["env_steps"])
        model = dict(script=os.path.abspath(self.script), args=asdict(args), epoch=epoch, **model)
        if args.save_model:
            atomic_save(model, f"{self.dir}/model.pt")
        if args.checkpoint:  # the replay buffer incrementally: only the episodes stored since the last checkpoint
            new = np.flatnonzero(replay.unsaved)
            rows = torch.from_numpy(new).to(replay.n_eps.device)
            atomic_save(dict(idx=new, **{k: v[rows].cpu().numpy() for k, v in replay.ep.items()}),
                        f"{self.dir}/replay/{epoch:05d}.npz")
            replay.unsaved[:] = False
            atomic_save(dict(model, format=CHECKPOINT_FORMAT, run_name=self.name, rows=self.rows, replay_n=replay.n,
                             state={name: obj.state_dict() for name, obj in state.items()}, elapsed=self.elapsed(),
                             np_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(),
                             cuda_rng=torch.cuda.get_rng_state() if self.compute.device.type == "cuda" else None,
                             **progress), f"{self.dir}/checkpoint.pt")
        self.completed, self._writing = epoch, False
        if self._signalled:  # a Ctrl-C or kill came while the files were written: stop now that they are
            raise KeyboardInterrupt

    def finish(self, env_steps):
        if self.args.track:
            self.wandb.finish()
        self.log(f"done: {plural(self.args.n_epochs, 'epoch')}, {env_steps:,} env steps in "
                 f"{self.elapsed() / 60:.1f} min")


def load_resume(args, script):
    """For --resume: the checkpoint it names, and the script's Args as saved there, with the options a resumed run
    may change (--n-epochs, the W&B options); anything else is refused, naming it."""
    path = os.path.join(args.resume, "checkpoint.pt") if os.path.isdir(args.resume) else args.resume
    if not os.path.exists(path):
        fail(f"--resume {args.resume}: no such run directory or checkpoint file")
    if not os.path.isfile(path):
        fail(f"--resume {args.resume}: no checkpoint.pt there (was the run started with --no-checkpoint?)")
    given = {a[2:].split("=")[0].replace("_", "-").removeprefix("no-") for a in sys.argv[1:] if a.startswith("--")}
    refused = sorted(given - {"resume", "n-epochs", "track"} - {g for g in given if g.startswith("wandb-")})
    if refused:  # a resumed run keeps its saved config: anything else would silently not be what the user asked for
        fail(f"--resume continues a run with its saved config and cannot honour --{', --'.join(refused)}; "
             f"with --resume only --n-epochs (to extend the run) and the W&B options (--track, --wandb-*) are allowed")
    ckpt = torch.load(path, weights_only=False, map_location="cpu")  # a run from a GPU resumes on any device
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        fail(f"--resume {args.resume}: its checkpoint was written by an older version of the training scripts (before "
             f"run_plumbing.py), whose files this version cannot read; resume it with that version "
             f"(git checkout 32296fe), or evaluate its model with evaluate.py, which reads both")
    if os.path.basename(ckpt["script"]) != os.path.basename(script):
        fail(f"--resume {args.resume}: that run was made by {os.path.basename(ckpt['script'])}; resume it with "
             f"python {command(ckpt['script'])} --resume {args.resume}")
    given = {k: v for k, v in vars(args).items() if k.replace("_", "-") in given}  # --n-epochs, W&B options
    names = {f.name for f in fields(args)}
    dropped = sorted(set(ckpt["args"]) - names)
    if dropped:  # an option this version no longer has: what it did cannot be honoured
        fail(f"--resume {args.resume}: its run was started with --{', --'.join(n.replace('_', '-') for n in dropped)}, "
             f"which this version of {os.path.basename(script)} no longer has; resume it with the version that made it")
    # An option added since the run started takes this version's default, which may not be what the run did: say so.
    ckpt["filled"] = {k: getattr(args, k) for k in sorted(names - set(ckpt["args"]) - set(given) - {"resume"})}
    args = type(args)(**{**ckpt["args"], **given, "resume": os.path.dirname(path) or "."})
    if args.n_epochs < ckpt["epoch"]:
        fail(f"--n-epochs {args.n_epochs} is fewer than the {ckpt['epoch']} epochs the run has completed")
    return ckpt, args
