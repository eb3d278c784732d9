#!/usr/bin/env python
"""Parity of our environments with the canonical ones: gymnasium-robotics 1.4.2 on mujoco==3.3.7.

    python tests/parity.py                      # every registered id that has a canonical counterpart
    python tests/parity.py --ids FetchPush-v0 --out parity.json

The canonical environments run only on mujoco==3.3.7, so they live in a separate virtual environment (`--venv`,
default `.venv-ref`, created on first use with `python -m venv` + `pip install mujoco==3.3.7 gymnasium-robotics==1.4.2`).
Our environments are plain mujoco + gymnasium, so they run in that venv too. This script runs itself as a worker in
three processes: `canon` (the canonical envs, MuJoCo 3.3.7), `ref` (ours, MuJoCo 3.3.7) and `ours` (ours, this
interpreter's MuJoCo, e.g. 4.0); they exchange .npz files in a temporary directory. Per id it reports:

(a) code parity, MuJoCo 3.3.7: ours vs canonical over seeded episodes of full length with seeded random actions,
    over the seeded resets of (d), and over the one-step replays of (b). Same simulator, so values agree to rounding
    (< 1e-6). Contacts can amplify a rounding difference (numpy vs mju_* quaternion math in a reset) until an
    episode parts; that is reported, and allowed for up to --max-reset-divergence of the resets. FAIL: a replay
    (one step from an identical full state) differs; a reward or success differs while the states agree; an
    episode parts from the canonical one after a bit-identical reset (state carried between steps differs).
(b) one-step parity on our MuJoCo: states recorded along the canonical episodes (qpos incl. the hand's target
    object, qvel, act, ctrl, mocap pose, qacc_warmstart, time, and the goal) are loaded into ours-on-MuJoCo-4 and into
    the canonical env on 3.3.7 (set state, mj_forward, step the recorded action); the next observation, reward and
    success are compared. FAIL: the 99th percentile over states of the achieved goal's position difference (and
    of the rotation angle, hand manipulate) exceeds --tol-pos x the task's success radius (rotation threshold), the
    desired goal differs, or a reward/success differs where the achieved goals agree. Max diffs are reported.
(c) trajectory drift on our MuJoCo: the episodes of (a) run by ours-on-MuJoCo-4 vs canonical. Reported only:
    the two simulators differ, and contacts amplify any difference over 50-100 steps.
(d) reset distributions: per-dimension min/max/mean of the initial observation and desired goal over --resets seeded
    resets, ours-on-MuJoCo-4 vs canonical. FAIL: a mean, min or max differs by more than --tol-dist x max(range of
    that dimension, --dist-floor success radii); for the hand-manipulation observations (after the settling through
    contacts) min and max are reported only.
(e) goal distributions: --goal-samples goals drawn (`_sample_goal`) after one seeded reset, ours-on-MuJoCo-4 vs
    canonical: per dimension a KS distance (values may move by 2% of the success radius), the frequency of the most
    frequent value (a branch: PickAndPlace goals on the table, HandReach goals at the initial fingertips) and the
    range. FAIL beyond sampling noise (--ks-alpha, 4 sd of a frequency, --tol-range). Under (a) the same draws from
    ours on MuJoCo 3.3.7 must equal the canonical ones one by one, as must every reset's desired goal where the
    reset states agree: a different goal never counts as a contact-amplified rounding difference.

Dense variants share the physics of the sparse one: their episodes (a, c) are run in full, while the resets (d) and
the replayed states (b) come from the sparse id, with the dense reward recomputed by each side's `compute_reward`.
Exit status: 0 when (a), (b) and (d) pass for every compared id, 1 otherwise, 2 on a set-up error.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF_MUJOCO, REF_ROBOTICS = "3.3.7", "1.4.2"
EPISODE_SEED, RESET_SEED, ACTION_SEED, GOAL_SEED = 1000, 5000, 20180226, 777  # fixed: a run is reproducible bit for bit
STATE_FIELDS = ("qpos", "qvel", "act", "ctrl", "mocap_pos", "mocap_quat", "qacc_warmstart", "time")
TOL_CODE = 1e-6  # (a): same simulator, same code -> equal to rounding


# ======================================================================================================================
# Helpers shared by both sides
# ======================================================================================================================
def group_of(env_id: str) -> str:
    """The sparse id whose physics a dense id shares: FetchPushDense-v0 -> FetchPush-v0."""
    return re.sub(r"Dense(-v\d+)$", r"\1", env_id)


def angle_dims(env_id: str, obs_dim: int) -> slice:
    """Observation dims holding Euler angles (compared modulo 2 pi): the object rotation of the Fetch object tasks."""
    return slice(11, 14) if env_id.startswith("Fetch") and obs_dim == 25 else slice(0, 0)


def episode_actions(episode: int, length: int, n_actions: int) -> np.ndarray:
    # PCG64 streams are stable across numpy versions; the parent also checks both sides saw the same actions.
    return np.random.Generator(np.random.PCG64([ACTION_SEED, episode])).uniform(-1.0, 1.0, (length, n_actions))


def venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if os.name == "nt" else os.path.join(venv, "bin", "python")


# ======================================================================================================================
# Worker: runs in the reference venv (sides `canon` and `ref`) or in this interpreter (side `ours`)
# ======================================================================================================================
def canonical_id(our_id: str, registry) -> str | None:
    """The latest canonical id on the `mujoco` bindings (not the mujoco-py `MujocoPy...` classes) for our id."""
    stem = our_id[: our_id.rindex("-v")]
    dense = stem.endswith("Dense")
    base = stem[: -len("Dense")] if dense else stem
    # Our `...Full` ids are the canonical `...Full` ids (the canonical `HandManipulateBlock` is an alias of them).
    candidates = [base, base[: -len("Full")] if base.endswith("Full") else base + "Full"]
    for name in candidates:
        name = name + ("Dense" if dense else "")
        found = []
        for spec in registry.values():
            m = re.fullmatch(re.escape(name) + r"-v(\d+)", spec.id)
            entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
            if m and ":Mujoco" in entry and ":MujocoPy" not in entry:
                found.append((int(m.group(1)), spec.id))
        if found:
            return max(found)[1]
    return None


def _get_state(data) -> dict:
    return {f: np.array(getattr(data, f), dtype=np.float64, copy=True) for f in STATE_FIELDS}


def _set_state(mujoco, model, data, state: dict):
    for f in STATE_FIELDS:
        if f == "time":
            data.time = float(state[f])
        else:
            getattr(data, f)[...] = state[f]
    mujoco.mj_forward(model, data)


def _episodes(env, n_episodes: int, record_states: bool) -> dict:
    u = env.unwrapped
    length, n_act = env.spec.max_episode_steps, env.action_space.shape[0]
    rec = {k: [] for k in ("obs", "ag", "dg", "rew", "succ", "act", "goal")}
    states = []
    for e in range(n_episodes):
        obs, _ = env.reset(seed=EPISODE_SEED + e)
        actions = episode_actions(e, length, n_act)
        o, a, g, r, s = [obs["observation"]], [obs["achieved_goal"]], [obs["desired_goal"]], [], []
        rec["goal"].append(np.array(u.goal, dtype=np.float64))
        for t in range(length):
            if record_states:
                states.append(_get_state(u.data))
            obs, reward, _, _, info = env.step(actions[t])
            o.append(obs["observation"]), a.append(obs["achieved_goal"]), g.append(obs["desired_goal"])
            r.append(float(reward)), s.append(float(info["is_success"]))
        for k, v in zip(("obs", "ag", "dg", "rew", "succ", "act"), (o, a, g, r, s, actions)):
            rec[k].append(np.asarray(v, dtype=np.float64))
    out = {k: np.stack(v) for k, v in rec.items()}
    if record_states:
        out.update({"state_" + f: np.stack([st[f] for st in states]) for f in STATE_FIELDS})
    return out


def _resets(env, n_resets: int, n_goals: int) -> dict:
    o, g, a = [], [], []
    for i in range(n_resets):
        obs, _ = env.reset(seed=RESET_SEED + i)
        o.append(obs["observation"]), g.append(obs["desired_goal"]), a.append(obs["achieved_goal"])
    # (e) many goals drawn after one seeded reset: the goal distribution, rare branches included
    obs, _ = env.reset(seed=GOAL_SEED)
    goals = np.array([env.unwrapped._sample_goal() for _ in range(n_goals)], dtype=np.float64)
    return {"reset_obs": np.array(o), "reset_dg": np.array(g), "reset_ag": np.array(a),
            "goal_samples": goals, "goal_ag": np.asarray(obs["achieved_goal"], dtype=np.float64)}


def _replay(mujoco, env, states: dict, goals: np.ndarray, actions: np.ndarray) -> dict:
    """From each state and goal: set the state, mj_forward, step the action; the next obs/reward/success."""
    u = env.unwrapped
    env.reset(seed=0)  # a valid episode to step in (gymnasium's order check); everything is then overwritten
    o, a, g, r, s = [], [], [], [], []
    for k in range(len(actions)):
        _set_state(mujoco, u.model, u.data, {f: states["state_" + f][k] for f in STATE_FIELDS})
        u.goal = np.array(goals[k], dtype=np.float64)
        obs, reward, _, _, info = u.step(actions[k])
        o.append(obs["observation"]), a.append(obs["achieved_goal"]), g.append(obs["desired_goal"])
        r.append(float(reward)), s.append(float(info["is_success"]))
    return {"p_obs": np.array(o), "p_ag": np.array(a), "p_dg": np.array(g), "p_rew": np.array(r), "p_succ": np.array(s)}


def worker(args) -> int:
    warnings.filterwarnings("ignore")  # deprecation chatter of the canonical package and gymnasium
    import gymnasium as gym
    import mujoco

    meta = {"side": args.worker, "phase": args.phase, "mujoco": mujoco.__version__, "errors": {}, "seconds": {}}
    if args.worker == "canon":
        with contextlib.redirect_stdout(sys.stderr):  # it prints notices on import
            import gymnasium_robotics
        gym.register_envs(gymnasium_robotics)
        meta["gymnasium_robotics"] = gymnasium_robotics.__version__
        mapping = {i: canonical_id(i, gym.registry) for i in args.ids}
        meta["mapping"] = mapping
    else:
        sys.path.insert(0, REPO)
        import envs  # noqa: F401  (registers our ids; never imports gymnasium_robotics)

        mapping = {i: i for i in args.ids}

    def make(env_id):
        kwargs = {}
        if not args.worker == "canon" and env_id.startswith("HandManipulate"):
            # Our default rotation distance fixes the canonical quaternion-sign bug (docs/environments.md); the
            # canonical one is an option of our envs, and that is what is compared here.
            kwargs["canonical_rotation_distance"] = True
        return gym.make(mapping[env_id], disable_env_checker=True, **kwargs)

    canon_side = args.worker == "canon"
    leaders = {}  # group -> replay outputs of its first id (the dense variant reuses them)
    for env_id in args.ids:
        if mapping[env_id] is None:
            continue
        t0 = time.perf_counter()
        try:
            env = make(env_id)
            group, out = group_of(env_id), {}
            if args.phase == "run":
                out["radius"] = np.float64(getattr(env.unwrapped, "distance_threshold", np.nan))
                out["rot_radius"] = np.float64(getattr(env.unwrapped, "rotation_threshold", np.nan))
                out.update(_episodes(env, args.episodes, record_states=canon_side))
                if group not in leaders:
                    out.update(_resets(env, args.resets, args.goal_samples))
            if canon_side or args.phase == "replay":
                if group not in leaders:
                    src = out if canon_side else np.load(os.path.join(args.tmp, f"canon-run-{env_id}.npz"))
                    n_steps = src["act"].shape[1]
                    goals = np.repeat(src["goal"], n_steps, axis=0)
                    actions = src["act"].reshape(-1, src["act"].shape[-1])
                    out.update(_replay(mujoco, env, src, goals, actions))
                    leaders[group] = out
                else:
                    # Dense variant: the physics of the sparse one; its own reward function on the same next steps.
                    lead = leaders[group]
                    # One call per step, as `step` makes it (the canonical Pen's batched call is not the same).
                    cr = env.unwrapped.compute_reward
                    rew = np.array([float(cr(ag, dg, {})) for ag, dg in zip(lead["p_ag"], lead["p_dg"])])
                    out.update({k: lead[k] for k in ("p_obs", "p_ag", "p_dg", "p_succ")}, p_rew=rew)
            np.savez(os.path.join(args.tmp, f"{args.worker}-{args.phase}-{env_id}.npz"), **out)
            env.close()
        except Exception as exc:  # noqa: BLE001  (reported per id by the parent)
            meta["errors"][env_id] = f"{type(exc).__name__}: {exc}"
        meta["seconds"][env_id] = round(time.perf_counter() - t0, 3)
    with open(os.path.join(args.tmp, f"{args.worker}-{args.phase}.json"), "w") as f:
        json.dump(meta, f)
    return 0


# ======================================================================================================================
# Parent: set up the reference venv, run the workers, compare, report
# ======================================================================================================================
def ensure_venv(venv: str) -> str:
    py = venv_python(venv)
    probe = (
        "import sys, mujoco, gymnasium_robotics as g; "
        f"sys.exit(not (mujoco.__version__ == '{REF_MUJOCO}' and g.__version__ == '{REF_ROBOTICS}'))"
    )
    if os.path.exists(py) and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
        return py
    print(
        f"parity: installing the reference environment in {venv} (python -m venv; pip install mujoco=={REF_MUJOCO} "
        f"gymnasium-robotics=={REF_ROBOTICS}). This happens once and takes a minute or two...",
        flush=True,
    )
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run(
        [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
         f"mujoco=={REF_MUJOCO}", f"gymnasium-robotics=={REF_ROBOTICS}"],
        check=True,
    )
    if subprocess.run([py, "-c", probe], capture_output=True).returncode != 0:
        raise RuntimeError(f"{venv} does not provide mujoco=={REF_MUJOCO} and gymnasium-robotics=={REF_ROBOTICS}")
    print("parity: reference environment ready", flush=True)
    return py


def _spawn(python: str, side: str, phase: str, args, ids, tmp):
    cmd = [python, os.path.abspath(__file__), "--worker", side, "--phase", phase, "--tmp", tmp,
           "--episodes", str(args.episodes), "--resets", str(args.resets),
           "--goal-samples", str(args.goal_samples), "--ids", *ids]
    log = open(os.path.join(tmp, f"{side}-{phase}.log"), "w")
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env), log


def _wait(proc_log, tmp, side, phase):
    proc, log = proc_log
    rc = proc.wait()
    log.close()
    meta_path = os.path.join(tmp, f"{side}-{phase}.json")
    if rc != 0 or not os.path.exists(meta_path):
        with open(os.path.join(tmp, f"{side}-{phase}.log")) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"the {side}/{phase} worker failed (exit {rc}):\n{tail}")
    with open(meta_path) as f:
        return json.load(f)


def _maxdiff(a, b, ang=slice(0, 0)) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    d = np.abs(a - b)
    if d.size and ang.stop:
        d[..., ang] = np.abs((a[..., ang] - b[..., ang] + np.pi) % (2 * np.pi) - np.pi)
    return float(d.max()) if d.size else 0.0


def _load(tmp, side, phase, env_id):
    path = os.path.join(tmp, f"{side}-{phase}-{env_id}.npz")
    return dict(np.load(path)) if os.path.exists(path) else None


def _relative_goals(run: dict) -> np.ndarray:
    """The goal samples of (e); a hand-manipulation goal's position relative to the object after the reset."""
    goals = np.array(run["goal_samples"], dtype=np.float64)
    if goals.shape[-1] == 7:
        goals[:, :3] -= run["goal_ag"][:3]
    return goals


def _goal_sample_diff(x: dict, y: dict) -> np.ndarray:
    gx, gy = _relative_goals(x), _relative_goals(y)
    if gx.shape != gy.shape:
        return np.ones(max(len(gx), len(gy)), dtype=bool)
    return np.abs(gx - gy).max(axis=-1) > TOL_CODE


def _ks_with_slack(x: np.ndarray, y: np.ndarray, eps: float) -> float:
    """Two-sample Kolmogorov-Smirnov distance, allowing values to move by eps (an atom shifted by < eps is equal)."""
    x, y = np.sort(x), np.sort(y)
    points = np.concatenate([x, y])
    fx = lambda v: np.searchsorted(x, v, side="right") / len(x)  # noqa: E731
    fy = lambda v: np.searchsorted(y, v, side="right") / len(y)  # noqa: E731
    return float(max((fx(points) - fy(points + eps)).max(), (fy(points) - fx(points + eps)).max(), 0.0))


def _atom(x: np.ndarray, eps: float) -> tuple:
    """The most frequent value (values within eps together) and the fraction of draws that take it: the frequency of
    a branch that fixes a value (PickAndPlace goals on the table, HandReach goals at the initial fingertips)."""
    buckets, inverse, counts = np.unique(np.round(x / eps), return_inverse=True, return_counts=True)
    k = int(np.argmax(counts))
    return float(np.median(x[inverse.ravel() == k])), float(counts[k] / len(x))


def _location(x: np.ndarray, eps: float) -> float:
    """Where a dimension's distribution sits: its most frequent value if it has one, else the middle of its range."""
    value, mass = _atom(x, eps)
    return value if mass >= 0.01 else float((x.min() + x.max()) / 2)


def compare_goal_samples(O: dict, C: dict, radius: float, rot_radius: float, args) -> dict:
    """(e) the goal distribution, ours on our MuJoCo vs canonical: per dimension the width of the range, the KS
    distance and the frequency of the most frequent value, judged against the statistical noise of --goal-samples
    draws. The distributions are first aligned at their location (most frequent value, or middle of the range):
    where they sit depends on the arm's start pose, which the two MuJoCo versions settle differently by up to 2 cm;
    (d) judges the location (means), (e) the shape."""
    x, y = _relative_goals(O), _relative_goals(C)
    e = {"samples": int(len(y)), "flagged": []}
    if x.shape != y.shape:
        e["flagged"].append(f"goal samples: shapes {x.shape} vs {y.shape}")
        e["ok"] = False
        return e
    n = len(y)
    crit = np.sqrt(-np.log(args.ks_alpha / 2) / 2) * np.sqrt(2.0 / n)
    e["ks_critical"] = float(crit)
    worst_ks, worst_atom, worst_range = 0.0, 0.0, 0.0
    for i in range(y.shape[1]):
        quaternion = y.shape[1] == 7 and i >= 3
        eps = 0.02 * (rot_radius if quaternion else radius)
        scale = max(np.ptp(y[:, i]), args.dist_floor * (rot_radius if quaternion else radius))
        xi = x[:, i] - _location(x[:, i], eps) + _location(y[:, i], eps)
        ks = _ks_with_slack(xi, y[:, i], eps)
        mo, mc = _atom(x[:, i], eps)[1], _atom(y[:, i], eps)[1]
        p = max(mc, 1.0 / n)
        atom_tol = 4 * np.sqrt(p * (1 - p) * 2.0 / n) + 2.0 / n
        range_ratio = max(abs(xi.min() - y[:, i].min()), abs(xi.max() - y[:, i].max())) / scale
        worst_ks, worst_atom, worst_range = max(worst_ks, ks), max(worst_atom, abs(mo - mc)), max(worst_range, range_ratio)
        if ks > crit:
            e["flagged"].append(f"goal[{i}] distribution: KS distance {ks:.3f} > {crit:.3f}")
        if abs(mo - mc) > atom_tol:
            e["flagged"].append(f"goal[{i}] most frequent value: ours {mo:.4f} of the draws, canonical {mc:.4f}")
        if range_ratio > args.tol_range:
            e["flagged"].append(f"goal[{i}] range (aligned): ours [{xi.min():.4f}, {xi.max():.4f}], canonical "
                                f"[{y[:, i].min():.4f}, {y[:, i].max():.4f}]")
    e.update(worst_ks=worst_ks, worst_atom_diff=worst_atom, worst_range_ratio=worst_range, ok=not e["flagged"])
    return e


def compare(env_id, canon_id, tmp, args, leader_of) -> dict:
    C, R, O = (_load(tmp, s, "run", env_id) for s in ("canon", "ref", "ours"))
    Rp, Op = _load(tmp, "ref", "replay", env_id), _load(tmp, "ours", "replay", env_id)
    L = leader_of[group_of(env_id)]
    CL, OL = _load(tmp, "canon", "run", L), _load(tmp, "ours", "run", L)  # resets live with the group's first id
    res = {"id": env_id, "canonical": canon_id, "shared_from": None if L == env_id else L}
    missing = [n for n, x in zip(("canon", "ref", "ours", "ref-replay", "ours-replay"), (C, R, O, Rp, Op)) if x is None]
    if missing or CL is None or OL is None:
        res.update(ok=False, error=f"no results from: {', '.join(missing) or 'group ' + L}")
        return res
    if R["obs"].shape != C["obs"].shape or O["obs"].shape != C["obs"].shape:
        res.update(ok=False, error=f"observation shapes differ: ours {O['obs'].shape[2:]}, canonical {C['obs'].shape[2:]}")
        return res
    ang = angle_dims(env_id, C["obs"].shape[-1])
    radius = float(C["radius"]) if np.isfinite(C["radius"]) else 0.05  # the task's success radius (m)
    dense = "Dense" in env_id

    # (a) code parity on MuJoCo 3.3.7 ---------------------------------------------------------------------------------
    a = {
        "episodes": int(C["act"].shape[0]), "steps": int(C["act"].shape[1]),
        "same_actions": bool(R["act"].shape == C["act"].shape and np.array_equal(R["act"], C["act"])),
        "episode_obs": max(_maxdiff(R[k], C[k], ang if k == "obs" else slice(0, 0)) for k in ("obs", "ag", "dg")),
        "episode_reward": _maxdiff(R["rew"], C["rew"]),
        "episode_success_mismatches": int(np.sum(R["succ"] != C["succ"])) if R["succ"].shape == C["succ"].shape else -1,
        "reset_obs": max(_maxdiff(_load(tmp, "ref", "run", L)[k], CL[k], ang if k == "reset_obs" else slice(0, 0))
                         for k in ("reset_obs", "reset_dg", "reset_ag")),
        "replay_obs": max(_maxdiff(Rp[k], C[k], ang if k == "p_obs" else slice(0, 0)) for k in ("p_obs", "p_ag", "p_dg")),
        "replay_reward": _maxdiff(Rp["p_rew"], C["p_rew"]),
        "replay_success_mismatches": int(np.sum(Rp["p_succ"] != C["p_succ"])),
    }
    # Where the episodes part, and why. From the same state the step agrees exactly (the replays); an episode can
    # still part when a difference too small to see in the observation grows through contacts: rounding in the
    # reset's quaternion arithmetic (numpy vs mju_*), visible as a reset diff of 1e-16..1e-7, or a solver warm
    # start (qacc_warmstart) that a reset leaves differently. An episode whose reset agrees bit for bit (< 1e-12)
    # and that parts later has a real difference in the state our code carries between steps: a failure.
    state_diff = np.zeros(C["ag"].shape[:2])
    for k in ("obs", "ag", "dg"):
        state_diff = np.maximum(state_diff, np.abs(R[k] - C[k]).max(axis=-1))
    part = state_diff > TOL_CODE
    a["episodes_diverging"] = int(part.any(axis=1).sum())
    a["first_divergence_step"] = int(np.argmax(part.any(axis=0))) if part.any() else None
    # What explains a parting is the physics at the reset (observation, achieved goal), never the desired goal: a goal
    # is drawn from the seeded generator, and a different goal after an identical reset is a different goal sampler.
    reset_physics_diff = np.maximum(np.abs(R["obs"][:, 0] - C["obs"][:, 0]).max(axis=-1),
                                    np.abs(R["ag"][:, 0] - C["ag"][:, 0]).max(axis=-1))
    unexplained_part = part.any(axis=1) & (reset_physics_diff < 1e-12)
    a["episodes_diverging_from_identical_resets"] = int(unexplained_part.sum())
    # Rewards and successes must agree wherever the states still agree.
    same = ~part[:, 1:]
    a["reward_diff_where_states_agree"] = float(np.abs(R["rew"] - C["rew"])[same].max()) if same.any() else 0.0
    a["success_mismatches_where_states_agree"] = int((R["succ"] != C["succ"])[same].sum())
    RL = _load(tmp, "ref", "run", L)
    rs_physics = np.maximum(np.abs(RL["reset_obs"] - CL["reset_obs"]).max(axis=-1),
                            np.abs(RL["reset_ag"] - CL["reset_ag"]).max(axis=-1))
    rs_goal = np.abs(RL["reset_dg"] - CL["reset_dg"]).max(axis=-1)
    rs = np.maximum(rs_physics, rs_goal)
    a["resets_diverging"] = int((rs > TOL_CODE).sum())
    a["reset_goals_differing_after_identical_physics"] = int(((rs_goal > TOL_CODE) & (rs_physics < 1e-12)).sum())
    # (e) the goals drawn after one seeded reset, one by one (positions of hand-manipulation goals relative to the
    # object, whose settled position may part through contacts).
    a["goal_samples_differing"] = int(_goal_sample_diff(RL, CL).sum()) if "goal_samples" in CL else -1
    a["max_diff"] = max(a["episode_obs"], a["episode_reward"], a["reset_obs"], a["replay_obs"], a["replay_reward"])
    a["ok"] = bool(
        a["same_actions"]
        and a["replay_obs"] < TOL_CODE and a["replay_reward"] < TOL_CODE and a["replay_success_mismatches"] == 0
        and a["reward_diff_where_states_agree"] < TOL_CODE and a["success_mismatches_where_states_agree"] == 0
        and a["episodes_diverging_from_identical_resets"] == 0
        and a["reset_goals_differing_after_identical_physics"] == 0 and a["goal_samples_differing"] == 0
        and a["resets_diverging"] <= args.max_reset_divergence * len(rs)
    )

    # (b) one-step parity on our MuJoCo --------------------------------------------------------------------------------
    dag = np.abs(Op["p_ag"] - C["p_ag"]).max(axis=-1)  # per replayed step
    rot_radius = float(C["rot_radius"])
    if C["p_ag"].shape[-1] == 7:  # hand manipulate: position, then orientation as a quaternion
        dpos = np.linalg.norm(Op["p_ag"][:, :3] - C["p_ag"][:, :3], axis=-1)
        qa, qc = Op["p_ag"][:, 3:], C["p_ag"][:, 3:]
        cos = np.abs((qa * qc).sum(-1)) / (np.linalg.norm(qa, axis=-1) * np.linalg.norm(qc, axis=-1))
        drot = 2 * np.arccos(np.clip(cos, -1.0, 1.0))
    else:  # points: the largest distance between corresponding points (Fetch 1, HandReach 5 fingertips)
        dpos = np.linalg.norm((Op["p_ag"] - C["p_ag"]).reshape(len(dag), -1, 3), axis=-1).max(axis=-1)
        drot = None
    rew_diff = np.abs(Op["p_rew"] - C["p_rew"])
    succ_diff = Op["p_succ"] != C["p_succ"]
    # A success (or sparse reward) may flip only where the physics moved the achieved goal: a goal on the threshold.
    unexplained = succ_diff & (dag <= 1e-9)
    if not dense:
        unexplained |= (rew_diff > 1e-9) & (dag <= 1e-9)
    b = {
        "states": int(len(C["p_rew"])),
        "achieved_goal": float(dag.max()),
        "position_max": float(dpos.max()),
        "position_p99": float(np.percentile(dpos, 99)),
        "tol_position_p99": args.tol_pos * radius,
        "rotation_max": float(drot.max()) if drot is not None else None,
        "rotation_p99": float(np.percentile(drot, 99)) if drot is not None else None,
        "tol_rotation_p99": args.tol_pos * rot_radius if drot is not None else None,
        "observation": _maxdiff(Op["p_obs"], C["p_obs"], ang),
        "desired_goal": _maxdiff(Op["p_dg"], C["p_dg"]),
        "success_mismatches": int(succ_diff.sum()),
        "unexplained_mismatches": int(unexplained.sum()),
    }
    if dense:
        b["reward"] = float(rew_diff.max())
        unexplained |= (rew_diff > 1e-9) & (dag <= 1e-9)
    else:
        b["reward_mismatches"] = int((rew_diff > 1e-9).sum())
    b["worst_obs_dim"] = int(np.argmax(np.abs(Op["p_obs"] - C["p_obs"]).max(axis=0))) if C["p_obs"].size else -1
    b["ok"] = bool(
        b["position_p99"] <= b["tol_position_p99"]
        and (drot is None or b["rotation_p99"] <= b["tol_rotation_p99"])
        and b["desired_goal"] <= TOL_CODE and b["unexplained_mismatches"] == 0
    )

    # (c) trajectory drift on our MuJoCo (reported only) ---------------------------------------------------------------
    if O["ag"].shape == C["ag"].shape:
        d_ag = np.abs(O["ag"] - C["ag"]).max(axis=-1)  # (episodes, steps + 1)
        c = {
            "initial_achieved_goal": float(d_ag[:, 0].max()),
            "max_achieved_goal": float(d_ag.max()),
            "final_achieved_goal_mean": float(d_ag[:, -1].mean()),
            "success_agreement": float(np.mean(O["succ"] == C["succ"])),
            "return_ours": float(O["rew"].sum(axis=1).mean()),
            "return_canonical": float(C["rew"].sum(axis=1).mean()),
        }
    else:
        c = {"error": f"shapes differ: {O['ag'].shape} vs {C['ag'].shape}"}

    # (d) reset distributions: ours on our MuJoCo vs canonical ---------------------------------------------------------
    d = {"resets": int(len(CL["reset_obs"])), "floor": args.dist_floor * radius, "flagged": [], "worst": None}
    for key, name in (("reset_obs", "observation"), ("reset_dg", "desired_goal")):
        x, y = OL[key], CL[key]
        if x.shape != y.shape:
            d["flagged"].append(f"{name}: shapes {x.shape} vs {y.shape}")
            continue
        rng = y.max(axis=0) - y.min(axis=0)
        scale = np.maximum(rng, d["floor"])
        for stat, fx, fy in (("mean", x.mean(0), y.mean(0)), ("min", x.min(0), y.min(0)), ("max", x.max(0), y.max(0))):
            delta = np.abs(fx - fy)
            ratio = delta / scale
            # Means are judged; so are min and max (the range of the draws) of the goal, and of the observation where
            # a reset does not let the physics settle (Fetch, HandReach: the draws are placed as drawn). After the
            # hand's settling through contacts, extremes of the observation are reported only.
            judged = stat == "mean" or name == "desired_goal" or not env_id.startswith("HandManipulate")
            if judged:
                for i in np.flatnonzero(ratio > args.tol_dist):
                    d["flagged"].append(f"{name}[{i}] {stat}: ours {fx[i]:.4f} canonical {fy[i]:.4f} "
                                        f"(canonical range {rng[i]:.4f})")
            i = int(np.argmax(ratio))
            key = "worst" if stat == "mean" else "worst_" + stat
            if ratio[i] > d.get(key + "_ratio", -1.0):
                d[key + "_ratio"] = float(ratio[i])
                d[key] = {"where": f"{name}[{i}]", "ours": float(fx[i]), "canonical": float(fy[i]),
                          "range": float(rng[i]), "diff": float(delta[i]), "diff_over_scale": float(ratio[i])}
    d["ok"] = not d["flagged"]

    # (e) goal distributions over many draws: ours on our MuJoCo vs canonical ----------------------------------------
    e = compare_goal_samples(OL, CL, radius, rot_radius, args) if "goal_samples" in CL else {"ok": False,
                                                                                          "flagged": ["no goal samples"]}

    res.update(a=a, b=b, c=c, d=d, e=e, ok=bool(a["ok"] and b["ok"] and d["ok"] and e["ok"]))
    return res


def _table(results, skipped) -> str:
    head = ("id", "canonical", "(a) code, 3.3.7", "(b) one step, ours' mujoco", "(c) drift", "(d) resets", "(e) goals",
            "result")
    rows = []
    for r in results:
        if "a" not in r:
            rows.append((r["id"], r["canonical"] or "-", "-", "-", "-", "-", "-", "FAIL: " + r["error"]))
            continue
        a, b, c, d = r["a"], r["b"], r["c"], r["d"]
        parted = f" part {a['episodes_diverging']}/{a['episodes']},{a['resets_diverging']}" if a["max_diff"] >= TOL_CODE else ""
        ca = f"{'ok' if a['ok'] else 'FAIL'} {a['max_diff']:.0e}{parted}"
        cb = f"{'ok' if b['ok'] else 'FAIL'} pos {b['position_p99']:.0e}/{b['position_max']:.0e}"
        if b["rotation_p99"] is not None:
            cb += f" rot {b['rotation_p99']:.0e}/{b['rotation_max']:.0e}"
        cb += f" obs {b['observation']:.0e}" + (f" flips {b['success_mismatches']}" if b["success_mismatches"] else "")
        cc = f"{c.get('max_achieved_goal', float('nan')):.3f} succ {c.get('success_agreement', float('nan')):.2f}"
        cd = f"{'ok' if d['ok'] else 'FAIL ' + str(len(d['flagged']))} {(d['worst'] or {}).get('diff_over_scale', 0):.2f}"
        e = r.get("e") or {}
        ce = f"{'ok' if e.get('ok') else 'FAIL ' + str(len(e.get('flagged', [])))} ks {e.get('worst_ks', float('nan')):.3f}"
        rows.append((r["id"], r["canonical"], ca, cb, cc, cd, ce, "PASS" if r["ok"] else "FAIL"))
    rows += [(i, "-", "-", "-", "-", "-", "-", "skipped: " + why) for i, why in skipped.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ids", nargs="+", help="ids to compare (default: every registered id with a canonical counterpart)")
    p.add_argument("--episodes", type=int, default=5, help="seeded episodes of full length per id (a, b, c)")
    p.add_argument("--resets", type=int, default=200, help="seeded resets per id (d)")
    p.add_argument("--goal-samples", type=int, default=20000,
                   help="(a, e) goals drawn after one seeded reset per id: enough to tell a branch taken 50%% of the\n"
                        "time from one taken 45%%")
    p.add_argument("--ks-alpha", type=float, default=1e-6,
                   help="(e) false-alarm rate per goal dimension of the KS and frequency checks")
    p.add_argument("--tol-range", type=float, default=0.05,
                   help="(e) largest difference of a goal dimension's min or max, over max(range, --dist-floor radii)")
    p.add_argument("--venv", default=os.path.join(REPO, ".venv-ref"), help="the reference venv (created if missing)")
    p.add_argument("--out", help="write the JSON summary here")
    p.add_argument("--tol-pos", type=float, default=0.25,
                   help="(b) 99th percentile of the achieved goal's position (and rotation) difference, as a fraction\n"
                        "of the task's success radius (Fetch 5 cm, hand 1 cm; hand rotation 0.1 rad)")
    p.add_argument("--max-reset-divergence", type=float, default=0.1,
                   help="(a) fraction of seeded resets that may part from the canonical ones (chaotic contacts)")
    p.add_argument("--tol-dist", type=float, default=0.1, help="(d) largest mean diff, over the dimension's range (see --dist-floor)")
    p.add_argument("--dist-floor", type=float, default=5.0,
                   help="(d) smallest range used for a dimension, in success radii (so constant dims may move by\n"
                        "tol-dist x dist-floor radii: 2.5 cm for Fetch, 5 mm for the hand)")
    p.add_argument("--worker", choices=("canon", "ref", "ours"), help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=("run", "replay"), help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)  # keep the exchanged files (debugging)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    t_start = time.perf_counter()
    warnings.filterwarnings("ignore")
    sys.path.insert(0, REPO)
    import envs
    import mujoco

    registered = list(envs.ENV_IDS)
    wanted = args.ids or registered
    skipped = {i: "not registered (envs.hand not there yet?)" for i in wanted if i not in registered}
    ids = [i for i in wanted if i in registered]
    if not ids:
        print("parity: nothing to compare", file=sys.stderr)
        return 2
    try:
        ref_python = ensure_venv(os.path.abspath(args.venv))
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        print(f"parity: could not set up the reference venv {args.venv}: {exc}", file=sys.stderr)
        return 2

    tmp = tempfile.mkdtemp(prefix="parity-")
    try:
        print(f"parity: {len(ids)} ids, {args.episodes} episodes and {args.resets} resets each; "
              f"canonical gymnasium-robotics {REF_ROBOTICS} on mujoco {REF_MUJOCO} vs ours on mujoco {mujoco.__version__}",
              flush=True)
        runs = {s: _spawn(ref_python if s != "ours" else sys.executable, s, "run", args, ids, tmp)
                for s in ("canon", "ref", "ours")}
        meta = {"canon": _wait(runs["canon"], tmp, "canon", "run")}
        replays = {s: _spawn(ref_python if s == "ref" else sys.executable, s, "replay", args, ids, tmp)
                   for s in ("ref", "ours")}
        for s in ("ref", "ours"):
            meta[s + "-run"] = _wait(runs[s], tmp, s, "run")
            meta[s + "-replay"] = _wait(replays[s], tmp, s, "replay")
        mapping = meta["canon"]["mapping"]
        errors = {}
        for m in meta.values():
            for i, e in m["errors"].items():
                errors.setdefault(i, f"{m['side']}/{m['phase']}: {e}")
        leader_of = {}
        for i in ids:
            leader_of.setdefault(group_of(i), i)
        results = []
        for i in ids:
            if mapping.get(i) is None:
                skipped[i] = "no canonical counterpart"
                continue
            r = compare(i, mapping[i], tmp, args, leader_of)
            if i in errors:
                r.update(ok=False, error=errors[i])
            results.append(r)
    except RuntimeError as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"parity: worker files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ok = all(r["ok"] for r in results) and bool(results)
    seconds = time.perf_counter() - t_start
    print(_table(results, skipped))
    print(f"""
(a) ours vs canonical, both on mujoco {REF_MUJOCO}: max abs diff over episodes, resets and one-step replays; 'part e,r':
    episodes and resets that part (> {TOL_CODE:g}) through contacts. FAIL: a replay differs, a reward or success
    differs while the states agree, an episode parts after a bit-identical reset, or > {args.max_reset_divergence:g} of resets part.
(b) one step from recorded canonical states, ours on mujoco {mujoco.__version__} vs canonical on {REF_MUJOCO}: achieved-goal
    position (m) and rotation (rad) diff, 99th percentile/max, and max observation diff; FAIL when a 99th
    percentile exceeds {args.tol_pos:g} x the success radius, or a reward/success differs where the goals agree.
(c) max achieved-goal diff along full episodes on mujoco {mujoco.__version__}, and the fraction of steps whose success agrees
    (reported only).
(d) worst |ours - canonical| of a per-dimension mean, min or max over max(range, {args.dist_floor:g} success radii); FAIL above
    {args.tol_dist:g} (min and max of the hand-manipulation observations after settling are reported only).
(e) {args.goal_samples} goals after one seeded reset: worst per-dimension KS distance; FAIL when a KS distance, the
    frequency of a dimension's most frequent value (a branch) or a range differs beyond sampling noise.""")
    for r in results:
        for part in ("d", "e"):
            for f in (r.get(part) or {}).get("flagged", []):
                print(f"  {r['id']} ({part}) {f}")
        if r.get("a") and r["a"]["reset_goals_differing_after_identical_physics"]:
            print(f"  {r['id']} (a) {r['a']['reset_goals_differing_after_identical_physics']} reset(s) give a different "
                  "desired goal though the reset states agree: the goal sampler differs")
        if r.get("a") and r["a"]["goal_samples_differing"]:
            print(f"  {r['id']} (a) {r['a']['goal_samples_differing']} of the {args.goal_samples} goals drawn after one "
                  "seeded reset differ from the canonical ones: the goal sampler differs")
        if r.get("a") and r["a"]["episodes_diverging_from_identical_resets"]:
            print(f"  {r['id']} (a) {r['a']['episodes_diverging_from_identical_resets']} episode(s) part from the canonical "
                  f"ones after identical resets (first at step {r['a']['first_divergence_step']}), though every step from "
                  "an identical state agrees: our env draws a different goal, or carries some state between steps "
                  "differently (warm start?)")
        if r.get("a") and r["a"]["reward_diff_where_states_agree"] >= TOL_CODE:
            print(f"  {r['id']} (a) rewards differ by up to {r['a']['reward_diff_where_states_agree']:.3g} where the "
                  "achieved and desired goals agree: the reward function differs")
    print(f"\nparity: {'PASS' if ok else 'FAIL'} ({len(results)} compared, {len(skipped)} skipped) in {seconds:.0f} s")
    if args.out:
        summary = {
            "ok": ok, "seconds": round(seconds, 1), "compared": [r["id"] for r in results], "skipped": skipped,
            "versions": {"ours_mujoco": mujoco.__version__, "reference_mujoco": meta["canon"]["mujoco"],
                         "gymnasium_robotics": meta["canon"]["gymnasium_robotics"]},
            "settings": {k: getattr(args, k) for k in ("episodes", "resets", "tol_pos", "max_reset_divergence",
                                                       "tol_dist", "dist_floor")} | {"tol_code": TOL_CODE},
            "results": results,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
