"""Evaluate a policy saved by one of the training scripts, with nothing of the training set-up, and record videos.

    python evaluate.py runs/RUN_NAME/model.pt --episodes 100
    python evaluate.py runs/RUN_NAME/checkpoint.pt --episodes 10 --capture-video     # videos/eval__RUN_NAME/

The checkpoint records the script that wrote it (ddpg_her.py, ddpg.py, ... or your fork of one); the Actor and
Normalizer classes are loaded from that file, so a fork that changes them is evaluated with its own code. The
training scripts import `test_episode` from here for their per-epoch videos (--capture-video), and the file,
--resume and CUDA-graph helpers that are not part of the algorithm (atomic_save, write_csv, load_resume, cuda_graph).
"""

import importlib.util
import os
import sys
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; read when mujoco first renders

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402


@dataclass
class Args:
    checkpoint: tyro.conf.Positional[str]
    """a model.pt or checkpoint.pt written by a training script, or its run directory"""
    episodes: int = 100
    """deterministic test episodes (no exploration noise, the paper's test success)"""
    seed: int = 1
    """episode i is reset with seed 10**9 + seed * 100000 + i, a seed that no training run uses"""
    capture_video: bool = False
    """record every episode to videos/eval__RUN_NAME/ (mp4 with imageio-ffmpeg installed, else GIF)"""


# ---- shared by the training scripts, not algorithm: files that survive a kill, and --resume --------------------
def atomic_save(obj, path):  # a dict of arrays to .npz (no pickle, no copy), anything else with torch.save
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **obj) if path.endswith(".npz") else torch.save(obj, f)
    os.replace(path + ".tmp", path)  # a kill mid-write leaves the previous file intact


def write_csv(rows, path):  # rewritten whole and atomically each epoch, so a resume can restore it from a checkpoint
    with open(path + ".tmp", "w") as f:
        f.write("".join(",".join(map(str, row)) + "\n" for row in [rows[0].keys()] + [r.values() for r in rows]))
    os.replace(path + ".tmp", path)


def plural(n, word):
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def load_resume(args, script):
    """For a training script's --resume: the checkpoint it names, and the script's Args as saved there, with the
    options a resumed run may change (--n-epochs, the W&B options); anything else is refused, naming it."""
    def fail(message):
        sys.exit(f"{os.path.basename(script)}: error: {message}")

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
    if "replay_n" not in ckpt:
        fail(f"--resume {args.resume}: its checkpoint was written by an older version of this script")
    if os.path.basename(ckpt["script"]) != os.path.basename(script):
        fail(f"--resume {args.resume}: that run was made by {os.path.basename(ckpt['script'])}; resume it with "
             f"python {os.path.basename(ckpt['script'])} --resume {args.resume}")
    given = {k: v for k, v in vars(args).items() if k.replace("_", "-") in given}  # --n-epochs, W&B options
    args = type(args)(**{**ckpt["args"], **given, "resume": os.path.dirname(path) or "."})
    if args.n_epochs < ckpt["epoch"]:
        fail(f"--n-epochs {args.n_epochs} is fewer than the {ckpt['epoch']} epochs the run has completed")
    return ckpt, args


# ---- evaluation ----------------------------------------------------------------------------------------------
def save_video(frames, path):
    """Writes path.mp4 (with imageio-ffmpeg) or else path.gif; returns the file written."""
    import imageio

    try:
        imageio.mimsave(path + ".mp4", frames, fps=25)  # needs imageio-ffmpeg
        return path + ".mp4"
    except Exception:
        imageio.mimsave(path + ".gif", frames, duration=40)  # Pillow is always there
        return path + ".gif"


def test_episode(env, actor, norm, seed, video_path=None):
    """One deterministic episode of a single env; returns success at the last step (the paper's metric) and the
    video file written (None without video_path)."""
    obs, _ = env.reset(seed=seed)
    frames = [env.render()] if video_path else []
    device = next(actor.parameters()).device
    for _ in range(env.spec.max_episode_steps):
        x = np.concatenate([obs["observation"], obs["desired_goal"]]).astype(np.float32)[None]
        with torch.no_grad():
            obs, _, _, _, info = env.step(actor(norm(torch.from_numpy(x).to(device)))[0].cpu().numpy())
        frames += [env.render()] if video_path else []
    if video_path:
        os.makedirs(os.path.dirname(video_path), exist_ok=True)
        video_path = save_video(frames, video_path)
    return float(info["is_success"]), video_path


def cuda_graph(fn, warmup=3):
    """fn (no arguments; it reads and writes tensors in place) as a function that runs it eagerly `warmup` times on a
    side stream, then captures it once as a CUDA graph and from then on replays the graph: one launch for all its
    kernels, no Python, no host sync (PyTorch's whole-network capture; LeanRL's CudaGraphModule does the same)."""
    graph, calls = torch.cuda.CUDAGraph(), [0]

    def run():
        calls[0] += 1
        if calls[0] <= warmup:  # the warm-up calls are real calls; they allocate Adam's state, cuBLAS workspaces
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()
            torch.cuda.current_stream().wait_stream(stream)
            return
        if calls[0] == warmup + 1:  # capturing records the kernels without running them: the replay below does
            with torch.cuda.graph(graph):
                fn()
        graph.replay()

    return run


def load_script(path):
    """The training script that wrote a checkpoint, as a module (importing it registers the envs)."""
    if not os.path.isfile(path):  # the repository moved: look for the script next to this file
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.path.basename(path))
    if not os.path.isfile(path):
        sys.exit(f"evaluate.py: error: the script that wrote this checkpoint, {os.path.basename(path)}, is not found")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(path, episodes, seed=1, capture_video=False):
    """Test success of the saved policy over `episodes` deterministic episodes."""
    ckpt = torch.load(path, weights_only=False, map_location="cpu")  # trained on a GPU or not, evaluated on the CPU
    cfg, dims = ckpt["args"], ckpt["dims"]
    script_path = ckpt.get("script", "ddpg_her.py")  # older checkpoints did not record it
    script = load_script(script_path)
    torch.set_num_threads(1)  # one observation at a time: more threads only add synchronisation
    env = gym.make(cfg["env_id"], render_mode="rgb_array" if capture_video else None)
    actor = script.Actor(dims["x"], dims["u"], cfg["hidden"], cfg["n_layers"], ckpt["max_u"])
    actor.load_state_dict(ckpt["actor"])
    actor.bf16 = cfg.get("bf16_matmul", False) and torch.ops.mkldnn._is_mkldnn_bf16_supported()  # as in training
    norm = script.Normalizer(dims["x"], cfg["norm_eps"], cfg["clip_obs"], cfg["norm_clip"])
    vars(norm).update(ckpt["normalizer"])
    video_dir = f"videos/eval__{os.path.basename(os.path.dirname(os.path.abspath(path)))}"
    results = [test_episode(env, actor, norm, 10**9 + seed * 100_000 + i,
                            f"{video_dir}/episode{i:03d}" if capture_video else None) for i in range(episodes)]
    successes = [success for success, _ in results]
    print(f"{cfg['env_id']}: test success {np.mean(successes):.3f} over {episodes} deterministic episodes "
          f"({path}: {os.path.basename(script_path)}, {ckpt['epoch']} epoch{'' if ckpt['epoch'] == 1 else 's'})")
    if capture_video:
        print(f"videos: {results[0][1]} ... {results[-1][1]} ({episodes} files)" if episodes > 1
              else f"video: {results[0][1]}")
    return float(np.mean(successes))


if __name__ == "__main__":
    args = tyro.cli(Args)
    if os.path.isdir(args.checkpoint):  # a run directory: its model.pt, else its checkpoint.pt
        found = [os.path.join(args.checkpoint, f) for f in ("model.pt", "checkpoint.pt")]
        args.checkpoint = next((f for f in found if os.path.isfile(f)), args.checkpoint)
    if args.episodes <= 0 or not os.path.isfile(args.checkpoint):
        raise SystemExit(f"evaluate.py: error: needs an existing checkpoint file and --episodes > 0, got "
                         f"{args.checkpoint!r} and {args.episodes}")
    evaluate(args.checkpoint, args.episodes, args.seed, args.capture_video)
