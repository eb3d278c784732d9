"""Speed of ddpg_her.py on this machine, measured in one run and printed side by side.

    python scripts/bench_train.py                 # a few minutes on 2 cores (the SB3 run and the 4.75e6 checkpoint included)
    python scripts/bench_train.py --skip-train    # only the update and sampling micro-benchmarks
    python scripts/bench_train.py --compare 3198e02 --train-rounds 3   # the training run, old code against this tree
    python scripts/bench_train.py --paper-budget  # on a GPU machine: one epoch at the paper's budget, batch 4864
    python scripts/bench_train.py --arms ddpg_her research/ddpg_her_relay "research/ddpg_her_relay --n-batches 120" \
        --train-rounds 3 --threads 1 --skip-micro    # research forks' cost per env step against the first arm
    python scripts/bench_train.py --env-id FetchPickAndPlace-v0 --arms ...    # the training run on another task

1. the device (a GPU when torch sees one, as ddpg_her.py picks it; --device cpu to force the CPU);
2. env steps per second of a short training run of ddpg_her.py with its defaults (FetchPush-v0, or --env-id; 10 cycles
   and one test round; --paper-budget: one whole epoch of the paper's budget), and its time per phase (collection,
   sampling + updates + target updates, test rollouts; from the run's metrics.csv); with --compare REV, also the
   ddpg_her.py (and envs/) of git revision REV, the two run in alternating rounds; with --arms, instead, each
   arm (a script of this tree, without .py, and its options) in alternating rounds, and its time per env step
   against the first arm's (the research forks' cost: docs/research.md);
3. ms per update (actor + critic gradient step, then one target-network update) at batch 256, the default batch and
   the paper's effective batch 19 x 256: a plain PyTorch update written the obvious way (two Adam optimisers,
   separate forward passes, a per-parameter polyak loop), ddpg_her.py's `update` in fp32 (--no-bf16-matmul), and
   the same as ddpg_her.py runs it by default (hidden layers' matmuls in bfloat16 where the CPU has AVX512-BF16 or
   AMX, or on the GPU). On the CPU all run on the same number of threads (default: ddpg_her.py's for its updates,
   PyTorch's own default, one per physical core), timed in alternating rounds (medians of --n calls). On a GPU also
   ddpg_her.py's whole update as it trains (sampling, relabelling, rewards, gradient step) eager and as one CUDA
   graph (--cudagraphs), with the target update alone;
4. ms to sample one HER-relabelled batch of 256 (and of the default batch) with its rewards, on the device;
5. seconds to checkpoint a full replay buffer (FetchPush, the default 1e6 transitions, and the paper's 4.75e6 after
   50 epochs of --paper-budget): the whole buffer in one torch.save, as the scripts did, against what they write
   now, the episodes stored since the last checkpoint (one epoch's: 800, or 1900 under --paper-budget);
6. Stable-Baselines3's DDPG + HER (its HerReplayBuffer, its defaults) on FetchPush-v0, env steps per second of a
   short run (--sb3-steps), where stable-baselines3 is installed: the library most users would reach for.
"""

import argparse
import contextlib
import copy
import csv
import ctypes
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ddpg_her as algo  # noqa: E402
import run_plumbing  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DIMS = dict(o=25, g=3, ag=3, u=4, x=28)  # FetchPush-v0
GAMMA, CLIP_RETURN, POLYAK = 0.98, 50.0, 0.95


DEVICE = torch.device("cpu")  # set in __main__


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def batch(batch_size):
    """A random batch as update() takes it: x = [[o, g], [o', g]], actions in [-1, 1], sparse rewards."""
    return (torch.randn(2, batch_size, DIMS["x"], device=DEVICE), torch.rand(batch_size, DIMS["u"], device=DEVICE) * 2
            - 1, -torch.ones(batch_size, 1, device=DEVICE))


def median_ms(fn, n, warmup=5):
    return alternating_median_ms([fn], n, warmup)[0]


def alternating_median_ms(fns, n, warmup=5, rounds=5):
    """Median ms per call of each fn, timed in alternating rounds so that a change in machine load hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            for _ in range(max(1, n // rounds)):
                sync()
                t = time.perf_counter()
                fn()
                sync()  # a GPU's queued work counts (a CPU sync per call: the per-call numbers are upper bounds)
                ts.append(time.perf_counter() - t)
    return [1e3 * float(np.median(ts)) for ts in times]


def make_nets(bf16):
    torch.manual_seed(0)
    actor = algo.Actor(DIMS["x"], DIMS["u"], 256, 3, 1.0, bf16).to(DEVICE)
    critic = algo.Critic(DIMS["x"], DIMS["u"], 256, 3, 1.0, bf16).to(DEVICE)
    return actor, critic, copy.deepcopy(actor), copy.deepcopy(critic)


class PlainCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIMS["x"] + DIMS["u"], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, obs, u):
        return self.net(torch.cat([obs, u], 1))


def plain_nets():
    """The same networks written the obvious way, independent of ddpg_her.py."""
    torch.manual_seed(0)
    actor = nn.Sequential(nn.Linear(DIMS["x"], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256),
                          nn.ReLU(), nn.Linear(256, DIMS["u"]), nn.Tanh())
    actor, critic = actor.to(DEVICE), PlainCritic().to(DEVICE)
    return actor, critic, copy.deepcopy(actor), copy.deepcopy(critic)


def ours(batch_size, bf16=False):
    nets = make_nets(bf16)
    main = [p for n in nets[:2] for p in n.parameters()]
    target = [p for n in nets[2:] for p in n.parameters()]
    opt = torch.optim.Adam([dict(params=nets[0].parameters(), lr=1e-3), dict(params=nets[1].parameters(), lr=1e-3)],
                           fused=True, capturable=DEVICE.type == "cuda")
    norm = algo.Normalizer(DIMS["x"], 0.01, 200.0, 5.0, DEVICE)
    x, u, r = batch(batch_size)

    def step():
        algo.update(nets, opt, norm, x, u, r, GAMMA, CLIP_RETURN, 1.0)
        with torch.no_grad():
            torch._foreach_lerp_(target, main, 1.0 - POLYAK)

    return step


def plain(batch_size):
    actor, critic, actor_target, critic_target = plain_nets()
    actor_opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    mean, std = torch.zeros(DIMS["x"], device=DEVICE), torch.ones(DIMS["x"], device=DEVICE)
    x, u, r = batch(batch_size)

    def step():
        obs = torch.clamp((x[0] - mean) / std, -5, 5)
        next_obs = torch.clamp((x[1] - mean) / std, -5, 5)
        with torch.no_grad():
            target = torch.clamp(r + GAMMA * critic_target(next_obs, actor_target(next_obs)), -CLIP_RETURN, 0.0)
        critic_loss = F.mse_loss(critic(obs, u), target)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        pi = actor(obs)
        actor_loss = -critic(obs, pi).mean() + (pi**2).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        for net, tgt in ((actor, actor_target), (critic, critic_target)):
            for p, tp in zip(net.parameters(), tgt.parameters()):
                tp.data.copy_(POLYAK * tp.data + (1 - POLYAK) * p.data)

    return step


def filled_replay(n_eps=4000):  # 200k transitions stored, the size of a typical FetchPush run
    rng = np.random.default_rng(0)
    replay = algo.EpisodeReplay(1_000_000, 50, DIMS, rng, DEVICE)
    replay.store({k: rng.standard_normal((n_eps, 51 if k in ("o", "ag") else 50, DIMS[k])).astype(np.float32)
                  for k in ("o", "ag", "g", "u")})
    return replay


def sampler(batch_size):
    replay, compute_reward = filled_replay(), gym.make("FetchPush-v0").unwrapped.compute_reward

    def step():
        x, u, ag_next = replay.sample(batch_size, 0.8)
        compute_reward(ag_next, x[0, :, DIMS["o"]:], {}).float()

    return step


def whole_update(batch_size, graph):
    """ddpg_her.py's update as it trains on a GPU: sampling, relabelling, rewards and gradient step, eager or captured
    as one CUDA graph; stats accumulate on the device."""
    nets = make_nets(bf16=True)
    opt = torch.optim.Adam([dict(params=nets[0].parameters(), lr=1e-3), dict(params=nets[1].parameters(), lr=1e-3)],
                           fused=True, capturable=True)
    norm, replay = algo.Normalizer(DIMS["x"], 0.01, 200.0, 5.0, DEVICE), filled_replay()
    compute_reward, stats = gym.make("FetchPush-v0").unwrapped.compute_reward, torch.zeros(3, device=DEVICE)

    def step():
        x, u, ag_next = replay.sample(batch_size, 0.8)
        r = compute_reward(ag_next, x[0, :, DIMS["o"]:], {}).float()[:, None]
        stats.add_(algo.update(nets, opt, norm, x, u, r, GAMMA, CLIP_RETURN, 1.0))

    return run_plumbing.cuda_graph(step) if graph else step


def target_update():
    nets = make_nets(bf16=True)
    main, target = [p for n in nets[:2] for p in n.parameters()], [p for n in nets[2:] for p in n.parameters()]

    def step():
        with torch.no_grad():
            torch._foreach_lerp_(target, main, 1.0 - POLYAK)

    return step


def sb3_sps(steps):
    """env steps/s of Stable-Baselines3's DDPG + HER with its defaults on FetchPush-v0 (one env, one gradient step of
    batch 256 per env step after 100 random steps), or None where it is not installed."""
    try:
        from stable_baselines3 import DDPG, HerReplayBuffer
    except ImportError:
        return None
    model = DDPG("MultiInputPolicy", gym.make("FetchPush-v0"), replay_buffer_class=HerReplayBuffer, seed=0,
                 device=DEVICE.type)
    model.learn(200)  # warm-up: learning starts after 100 steps
    t = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t)


def train_run(threads, paper_budget, root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
              arm="ddpg_her", env_id="FetchPush-v0"):
    """The metrics row of ddpg_her.py (or arm: a script of `root` without .py, then its options) on env_id, one
    epoch (defaults: 10 cycles and one test round), run from the repository at `root` (its own envs/)."""
    exp = f"bench{os.getpid()}"
    script, *options = shlex.split(arm)
    budget = ["--paper-budget"] if paper_budget else ["--n-cycles", "10", "--n-test-rollouts", "1"]
    cmd = [sys.executable, script + ".py", "--env-id", env_id, "--n-epochs", "1", *budget, "--exp-name", exp,
           "--no-checkpoint", "--torch-threads", str(threads), *options]
    with open(os.path.join(root, script + ".py")) as f:
        has_cuda_flag = "\n    cuda: bool" in f.read()  # revisions before --cuda ran on the CPU only
    cmd += ["--no-cuda"] if DEVICE.type == "cpu" and has_cuda_flag else []
    subprocess.run(cmd, cwd=root, check=True, stdout=subprocess.DEVNULL)
    path = glob.glob(f"{root}/runs/{env_id}__{exp}__*/metrics.csv")[0]
    with open(path) as f:
        row = next(csv.DictReader(f))
    shutil.rmtree(os.path.dirname(path))  # a benchmark, not a run to plot
    return row, " ".join(cmd[1:])


def checkpoint_seconds(transitions, new_episodes):
    """(whole buffer, incremental) seconds to write a checkpoint of a FetchPush replay buffer holding `transitions`."""
    replay = algo.EpisodeReplay(transitions, 50, DIMS, np.random.default_rng(0))  # on the CPU: the host's writes
    for _ in range(0, replay.size, 1000):  # fill it, 1000 episodes at a time
        replay.store({k: np.ones((min(1000, replay.size - replay.n), 51 if k in ("o", "ag") else 50, DIMS[k]),
                                 np.float32) for k in ("o", "ag", "g", "u")})
    replay.unsaved[:] = False
    replay.store({k: v[:new_episodes].clone() for k, v in replay.ep.items()})  # one epoch's episodes
    path = os.path.join(tempfile.mkdtemp(), "x")
    t0 = time.perf_counter()
    run_plumbing.atomic_save(dict(replay={k: v[: replay.n] for k, v in replay.ep.items()}), path + ".pt")
    t1 = time.perf_counter()
    new = np.flatnonzero(replay.unsaved)
    run_plumbing.atomic_save(dict(idx=new, **{k: v[torch.from_numpy(new)].numpy() for k, v in replay.ep.items()}),
                     path + ".npz")
    t2 = time.perf_counter()
    shutil.rmtree(os.path.dirname(path))
    return t1 - t0, t2 - t1


def reps(batch_size, n):
    return n if batch_size <= 1024 else max(10, n // 5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-train", action="store_true", help="skip the training run")
    parser.add_argument("--paper-budget", action="store_true", help="the training run: one epoch at --paper-budget")
    parser.add_argument("--n", type=int, default=100, help="timed repetitions per micro-benchmark")
    parser.add_argument("--compare", metavar="REV", help="also time the training run of this git revision")
    parser.add_argument("--arms", nargs="+", metavar="SCRIPT", help="time these training runs instead, each a "
                        "script without .py and its options, e.g. 'research/ddpg_her_relay --n-batches 120'")
    parser.add_argument("--skip-micro", action="store_true", help="only the training run(s)")
    parser.add_argument("--env-id", default="FetchPush-v0", help="the training run's environment")
    parser.add_argument("--train-rounds", type=int, default=1, help="training runs (of each revision), alternating")
    parser.add_argument("--threads", type=int, default=algo.Args().torch_threads or torch.get_num_threads(),
                        help="torch threads (default: ddpg_her.py's for its updates, PyTorch's default)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda where torch sees a GPU")
    parser.add_argument("--sb3-steps", type=int, default=2000, help="env steps of the Stable-Baselines3 run (0: skip)")
    args = parser.parse_args()
    if args.arms and args.compare:
        parser.error("--arms and --compare are two kinds of training-run comparison: give one")
    DEVICE = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batches = sorted({256, algo.Args().batch_size, 19 * 256})
    torch.set_num_threads(args.threads)
    with contextlib.suppress(OSError):  # the same allocator setting as ddpg_her.py, for all updates
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 25), ctypes.CDLL("libc.so.6").mallopt(-1, 1 << 30)
    cuda = DEVICE.type == "cuda"
    bf16 = run_plumbing.bf16_supported(DEVICE)  # as ddpg_her.py decides it (on a GPU: compute capability 8.0+)
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if cuda else 'cpu'}, {args.threads} "
          f"threads, {len(os.sched_getaffinity(0))} CPUs, bfloat16 matmuls "
          f"{'supported' if bf16 else 'NOT supported (ddpg_her.py runs fp32)'} on this {DEVICE.type}")
    if not args.skip_train:
        trees = {"this tree": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
        if args.compare:  # the old code, checked out beside: its ddpg_her.py runs with its own envs/
            trees[args.compare] = old = os.path.join(tempfile.mkdtemp(), "old")
            os.makedirs(old)
            subprocess.run(f"git -C {trees['this tree']} archive {args.compare} | tar -x -C {old}", shell=True,
                           check=True)
        arms = {name: (root, "ddpg_her") for name, root in trees.items()}
        if args.arms:  # the forks of this tree instead (each arm: a script and its options)
            arms = {arm: (trees["this tree"], arm) for arm in args.arms}
        runs = {name: [] for name in arms}
        for _ in range(args.train_rounds):
            for name, (root, arm) in arms.items():
                try:
                    row, cmd = train_run(args.threads, args.paper_budget, root, arm, args.env_id)
                    runs[name].append(row)
                except subprocess.CalledProcessError as error:  # say so, and go on to the micro-benchmarks
                    print(f"training run of {name} failed: {error}")
        runs = {name: rows for name, rows in runs.items() if rows}
        print(f"training run ({cmd if runs else 'failed'}), env steps/s over {args.train_rounds} round(s), and "
              f"seconds per phase (collection | sampling, updates and target updates | test rollouts) of the median run:")
        first = np.median([float(r["sps"]) for r in next(iter(runs.values()))]) if runs else None
        for name, rows in runs.items():
            sps = [float(r["sps"]) for r in rows]
            mid = rows[int(np.argsort(sps)[len(sps) // 2])]
            phases = (" | ".join(f"{float(mid[k]):.1f}" for k in ("collect_s", "update_s", "test_s")) + " s"
                      if "update_s" in mid else "phases not recorded by this revision")
            print(f"  {name:>10}: median {np.median(sps):,.0f} ({', '.join(f'{x:,.0f}' for x in sps)}); {phases}"
                  + (f"; {np.median([float(r['sps']) for r in runs['this tree']]) / np.median(sps):.2f}x faster now"
                     if name != "this tree" and "this tree" in runs else "")
                  + (f"; time per env step {first / np.median(sps):.2f}x the first arm's" if args.arms else ""))
            if args.paper_budget and name == "this tree" and args.env_id == "FetchPush-v0":  # issue 11's target
                seconds = float(mid["collect_s"]) + float(mid["update_s"])
                print(f"  training time of one paper-budget epoch: {seconds:.1f} s (collection and updates; issue 11's "
                      f"target on a GPU machine: at most 6 s: {'met' if seconds <= 6 else 'MISSED'})")
    if args.skip_micro:
        sys.exit()
    print(f"{'ms per update':<20}{'plain':>8}{'ours fp32':>11}{'speed-up':>10}{'ours bf16':>11}{'speed-up':>10}")
    for batch_size in batches:
        n = reps(batch_size, args.n)
        fns = [plain(batch_size), ours(batch_size)] + ([ours(batch_size, bf16=True)] if bf16 else [])
        t_plain, t_ours, t_bf16 = (alternating_median_ms(fns, n) + [None])[:3]
        print(f"{'  batch ' + str(batch_size):<20}{t_plain:>8.2f}{t_ours:>11.2f}{t_plain / t_ours:>9.2f}x"
              + (f"{t_bf16:>11.2f}{t_plain / t_bf16:>9.2f}x" if bf16 else f"{'n/a':>11}"))
    if cuda:  # the update as ddpg_her.py trains on a GPU: sampling and rewards included; per call, and per 40 calls
        for batch_size in sorted({algo.Args().batch_size, 19 * 256}):
            eager, graph = whole_update(batch_size, False), whole_update(batch_size, True)
            try:
                t_eager, t_graph = alternating_median_ms([eager, graph], args.n)
            except RuntimeError as error:  # a capture that fails: the eager update alone
                print(f"whole update at batch {batch_size}: eager {median_ms(eager, args.n):.2f} ms; the CUDA graph "
                      f"failed: {error}")
                continue
            per_cycle = []
            for fn in (eager, graph):
                sync()
                t = time.perf_counter()
                for _ in range(40):  # a cycle's updates, one sync at the end as in ddpg_her.py
                    fn()
                sync()
                per_cycle.append((time.perf_counter() - t) / 40 * 1e3)
            print(f"whole update (sampling, rewards, gradient step) at batch {batch_size}: eager {t_eager:.2f} ms, "
                  f"CUDA graph {t_graph:.2f} ms per call; {per_cycle[0]:.2f} and {per_cycle[1]:.2f} ms per update in "
                  f"a cycle of 40 ({per_cycle[0] / per_cycle[1]:.1f}x)")
            if batch_size == 19 * 256:  # the paper's effective batch
                print(f"  at batch {batch_size}, per update in a cycle: target at most 1 ms (issue 11): eager "
                      f"{'met' if per_cycle[0] <= 1 else 'MISSED'}, CUDA graph {'met' if per_cycle[1] <= 1 else 'MISSED'}")
        print(f"target update (polyak, once a cycle): {median_ms(target_update(), args.n):.3f} ms")
    for batch_size in sorted({256, algo.Args().batch_size, 19 * 256}):
        print(f"HER-relabelled batch of {batch_size} with rewards on {DEVICE.type}: "
              f"{median_ms(sampler(batch_size), args.n):.2f} ms")
    for transitions, new_episodes, what in [(1_000_000, 800, "defaults"), (4_750_000, 1900, "--paper-budget")]:
        whole, incremental = checkpoint_seconds(transitions, new_episodes)
        print(f"checkpoint of a full buffer of {transitions:,} transitions ({what}): {whole:.2f} s whole, "
              f"{incremental:.3f} s incremental ({new_episodes} new episodes)")
    if args.sb3_steps:
        sps = sb3_sps(args.sb3_steps)
        print(f"Stable-Baselines3 DDPG + HER, its defaults, FetchPush-v0 on {DEVICE.type}: "
              + (f"{sps:,.0f} env steps/s ({args.sb3_steps} steps)" if sps else "not installed"))
