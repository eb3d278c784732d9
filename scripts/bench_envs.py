"""How fast are the environments? Prints, for every id, env steps per second, reset time, and the cost of a full
env step relative to the raw physics it runs (`mujoco.mj_step` with the same 20 substeps on the same model and
state), both timed side by side in one loop; then the throughput of vector envs (the batched env that
`gym.make_vec` returns, gymnasium's SyncVectorEnv and AsyncVectorEnv, our ThreadVectorEnv, and EnvPool where it is
installed) against a single env; then the batched env against the raw physics of its batch (a `mujoco.batch.Batch`
of the same states stepping 20 substeps, timed in the same loop) at each thread count, its speed-up over one
thread, the serial fraction that speed-up implies (Amdahl) and the speed-up Amdahl predicts at 16 threads.

    python scripts/bench_envs.py                      # every registered id
    python scripts/bench_envs.py --ids FetchPush-v0 --steps 2000
    python scripts/bench_envs.py --ids FetchPush-v0 --vector-envs 38 256 --batch-threads 1 2 4 8 16   # a big machine
"""

import argparse
import os
import sys
import time

import gymnasium as gym
import mujoco
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402

STATE = mujoco.mjtState.mjSTATE_INTEGRATION


def step_vs_physics(env_id: str, n_steps: int, n_resets: int, seed: int = 0):
    """Times env.step and raw mj_step alternately, each from the very state the env is in at that moment."""
    env = gym.make(env_id)
    inner = env.unwrapped
    model, scratch = inner.model, mujoco.MjData(inner.model)
    state = np.empty(mujoco.mj_stateSize(model, STATE))
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (n_steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=seed)
    step_times, physics_times = np.empty(n_steps), np.empty(n_steps)
    for i in range(n_steps):
        mujoco.mj_getState(model, inner.data, state, STATE)
        mujoco.mj_setState(model, scratch, state, STATE)
        t0 = time.perf_counter()
        mujoco.mj_step(model, scratch, nstep=inner.n_substeps)
        t1 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(actions[i])
        t2 = time.perf_counter()
        physics_times[i], step_times[i] = t1 - t0, t2 - t1
        if terminated or truncated:
            env.reset()
    reset_times = np.empty(n_resets)
    for i in range(n_resets):
        t0 = time.perf_counter()
        env.reset()
        reset_times[i] = time.perf_counter() - t0
    env.close()
    # Medians: robust to the other processes of a shared 2-core machine.
    step, physics = np.median(step_times), np.median(physics_times)
    return {"steps_per_s": 1 / step, "step_us": step * 1e6, "physics_us": physics * 1e6,
            "ratio": step / physics, "reset_ms": np.median(reset_times) * 1e3}


VECTORS = {  # name -> (description, factory of n sub-envs)
    "sync": ("gymnasium SyncVectorEnv", lambda fns: gym.vector.SyncVectorEnv(fns)),
    "async": ("gymnasium AsyncVectorEnv, a process per env", lambda fns: gym.vector.AsyncVectorEnv(fns)),
    "thread": ("envs.ThreadVectorEnv, one thread per CPU", lambda fns: envs.ThreadVectorEnv(fns)),
    "batch": ("gym.make_vec (mujoco.batch), one thread per CPU", None),
}


def vector_throughput(env_id: str, kind: str, n_envs: int, n_steps: int):
    """Env steps per second of a vector env of n_envs sub-envs stepped with random actions (autoreset built in)."""
    if kind == "envpool":  # EnvPool's C++ port of the task (FetchPush-v4 ...), n_envs envs on all CPUs
        import envpool

        vec = envpool.make_gymnasium(env_id.replace("-v0", "-v4"), num_envs=n_envs, num_threads=os.cpu_count(),
                                     seed=0)
        vec.reset()
        space = vec.action_space  # one env's
    elif kind == "batch":
        vec = gym.make_vec(env_id, num_envs=n_envs)
        vec.reset(seed=0)
        space = vec.single_action_space
    else:
        vec = VECTORS[kind][1]([lambda: gym.make(env_id)] * n_envs)
        vec.reset(seed=0)
        space = vec.single_action_space
    actions = np.random.default_rng(0).uniform(-1, 1, (n_steps // n_envs, n_envs, *space.shape)).astype(space.dtype)
    vec.step(actions[0])  # warm-up: the first step of a worker includes its start
    t0 = time.perf_counter()
    for a in actions:
        vec.step(a)
    elapsed = time.perf_counter() - t0
    vec.close()
    return len(actions) * n_envs / elapsed


def batch_vs_physics(env_id: str, n_envs: int, nthread: int, n_steps: int, seed: int = 0):
    """The batched env's step against the raw physics of the same simulations: a second Batch (same threads) loaded
    with the env's states steps 20 substeps, then the env steps; both timed in one loop, medians per env step."""
    from mujoco import batch as mujoco_batch

    vec = gym.make_vec(env_id, num_envs=n_envs, nthread=nthread)
    raw = mujoco_batch.Batch(vec.task.model, n_envs, nthread, persistent=True)
    rng = np.random.default_rng(seed)
    vec.reset(seed=seed)
    env_times, physics_times = np.empty(n_steps), np.empty(n_steps)
    for i in range(n_steps):
        raw.state[:] = vec._batch.state
        t0 = time.perf_counter()
        raw.step(nstep=vec.task.n_substeps)
        t1 = time.perf_counter()
        vec.step(rng.uniform(-1, 1, vec.action_space.shape))
        t2 = time.perf_counter()
        physics_times[i], env_times[i] = t1 - t0, t2 - t1
    vec.close()
    env, physics = np.median(env_times) / n_envs, np.median(physics_times) / n_envs
    return {"env_us": env * 1e6, "physics_us": physics * 1e6, "ratio": env / physics, "steps_per_s": 1 / env}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", nargs="+", default=list(envs.ENV_IDS), help="environment ids (default: all)")
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per id")
    parser.add_argument("--resets", type=int, default=100, help="timed resets per id")
    parser.add_argument("--vector-ids", nargs="*", default=None,
                        help="ids for the vector env comparison (default: FetchPush-v0 and one hand id)")
    parser.add_argument("--vector-steps", type=int, default=4000, help="env steps per vector measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the vector measurements")
    parser.add_argument("--vector-envs", nargs="+", type=int, default=[2, 16],
                        help="sub-envs per vector env (e.g. 38: --paper-budget's); EnvPool gets the largest")
    parser.add_argument("--vector-kinds", nargs="+", default=["async", "thread", "batch"],
                        choices=["sync", "async", "thread", "batch"],
                        help="vector envs to time beside one env (sync, always there)")
    parser.add_argument("--batch-threads", nargs="+", type=int, default=[1, 2],
                        help="thread counts of the batched env against raw physics (the first is the baseline)")
    parser.add_argument("--batch-steps", type=int, default=300, help="timed steps per batched-env measurement")
    args = parser.parse_args()
    for env_id in args.ids + (args.vector_ids or []):
        if env_id not in envs.ENV_IDS:
            parser.error(f"unknown id {env_id!r}; valid ids: {', '.join(envs.ENV_IDS)}")

    print(f"mujoco {mujoco.__version__}, gymnasium {gym.__version__}, {os.cpu_count()} cpus; medians over "
          f"{args.steps} steps and {args.resets} resets; ratio = full env step / mj_step(20 substeps), same state\n")
    header = f"{'id':36s} {'steps/s':>8s} {'step us':>8s} {'physics us':>10s} {'ratio':>6s} {'reset ms':>8s}"
    print(header + "\n" + "-" * len(header))
    worst = 0.0
    for env_id in args.ids:
        r = step_vs_physics(env_id, args.steps, args.resets)
        worst = max(worst, r["ratio"])
        print(f"{env_id:36s} {r['steps_per_s']:8.0f} {r['step_us']:8.1f} {r['physics_us']:10.1f} "
              f"{r['ratio']:6.3f} {r['reset_ms']:8.3f}", flush=True)
    print(f"\nworst ratio: {worst:.3f}")

    vector_ids = args.vector_ids
    if vector_ids is None:
        vector_ids = ["FetchPush-v0"] + [i for i in ("HandManipulateBlockFull-v0",) if i in envs.ENV_IDS]
    try:
        import envpool  # noqa: F401  (a benchmark-only comparison: pip install envpool)

        has_envpool = True
    except ImportError:
        has_envpool = False
    # Each configuration is timed in rounds, alternating, and its best round is kept (a shared machine slows some).
    configs = [("sync", 1)] + [(kind, n) for n in args.vector_envs for kind in args.vector_kinds if kind != "sync"]
    configs += [("envpool", max(args.vector_envs))] if has_envpool else []
    for env_id in vector_ids:
        print(f"\n{env_id}: env steps/s of vector envs over {args.vector_steps} steps, best of {args.rounds} rounds"
              f"{'' if has_envpool else ' (EnvPool not installed)'}")
        best = {c: 0.0 for c in configs if c[0] != "envpool" or env_id.startswith("Fetch")}
        for _ in range(args.rounds):
            for kind, n in best:
                best[kind, n] = max(best[kind, n], vector_throughput(env_id, kind, n, args.vector_steps))
        single = best["sync", 1]
        for (kind, n), sps in best.items():
            what = "EnvPool, its C++ port, one thread per CPU" if kind == "envpool" else VECTORS[kind][0]
            print(f"  {n:3d} envs  {what:46s} {sps:8.0f}  {sps / single:5.2f}x of one env", flush=True)

    for env_id in vector_ids:
        print(f"\n{env_id}: the batched env per env step against the raw physics of its batch (medians over "
              f"{args.batch_steps} steps, best of {args.rounds} rounds); speed-up over {args.batch_threads[0]} "
              "thread(s); Amdahl's serial fraction f from it, and the speed-up it predicts at 16 threads")
        for n in args.vector_envs:
            best = {}
            for _ in range(args.rounds):  # rounds alternate the thread counts: a shared machine slows some
                for nthread in args.batch_threads:
                    r = batch_vs_physics(env_id, n, nthread, args.batch_steps)
                    if nthread not in best or r["env_us"] < best[nthread]["env_us"]:
                        best[nthread] = r
            base_threads = args.batch_threads[0]
            base = best[base_threads]
            for nthread, r in best.items():
                speedup = base["env_us"] / r["env_us"]
                line = (f"  {n:3d} envs, {nthread:2d} thread(s): {r['steps_per_s']:8.0f} env steps/s, "
                        f"{r['env_us']:7.1f} us per env step, raw physics {r['physics_us']:7.1f} us: {r['ratio']:5.3f}x; "
                        f"{speedup:5.2f}x of {base_threads} thread(s)")
                k = nthread / base_threads
                if k > 1:  # speed-up s = 1 / (f + (1 - f) / k), so f = (k / s - 1) / (k - 1)
                    f = (k / speedup - 1) / (k - 1)
                    k16 = 16 / base_threads
                    line += f"; serial fraction {f:.3f}, predicted at 16 threads: {1 / (f + (1 - f) / k16):5.2f}x"
                print(line, flush=True)

if __name__ == "__main__":
    main()
