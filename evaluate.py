"""Evaluate a policy saved by one of the training scripts, with nothing of the training set-up, and record videos.

    python evaluate.py runs/RUN_NAME/model.pt --episodes 100
    python evaluate.py runs/RUN_NAME/checkpoint.pt --episodes 10 --capture-video     # videos/eval__RUN_NAME/

The checkpoint records the script that wrote it (ddpg_her.py, ddpg.py, ... or your fork of one); the Actor and
Normalizer classes are loaded from that file, so a fork that changes them is evaluated with its own code. The
training scripts import `test_episode` from here for their per-epoch videos (--capture-video).
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


def load_script(path):
    """The training script that wrote a checkpoint, as a module (importing it registers the envs)."""
    here, folder, name = os.path.dirname(os.path.abspath(__file__)), os.path.dirname(path), os.path.basename(path)
    if not os.path.isfile(path):  # the repository moved: look for it here (ddpg_her.py) or in its folder (research/)
        path = next((p for p in (os.path.join(here, name), os.path.join(here, os.path.basename(folder), name))
                     if os.path.isfile(p)), path)
    if not os.path.isfile(path):
        sys.exit(f"evaluate.py: error: the script that wrote this checkpoint, {os.path.basename(path)}, is not found")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(path, episodes, seed=1, capture_video=False):
    """Test success of the saved policy over `episodes` deterministic episodes."""
    ckpt = torch.load(path, weights_only=False, map_location="cpu")  # trained on a GPU or not, evaluated on the CPU
    if "actor" not in ckpt:  # a fork whose policy is not one actor on [o, g] (research/hac_her.py): said, not guessed
        raise SystemExit(f"evaluate.py: error: {path} holds no single actor: {ckpt.get('no_actor', 'see its script')}")
    cfg, dims = ckpt["args"], ckpt["dims"]
    script_path = ckpt.get("script", "ddpg_her.py")  # older checkpoints did not record it
    script = load_script(script_path)
    torch.set_num_threads(1)  # one observation at a time: more threads only add synchronisation
    env_kwargs = ckpt.get("env_kwargs", {})  # the env as trained: e.g. another frequency (ddpg_her_frequent.py)
    env = gym.make(cfg["env_id"], render_mode="rgb_array" if capture_video else None, **env_kwargs)
    actor = script.Actor(dims["x"], dims["u"], cfg["hidden"], cfg["n_layers"], ckpt["max_u"])
    actor.load_state_dict(ckpt["actor"])
    actor.bf16 = cfg.get("bf16_matmul", False) and torch.ops.mkldnn._is_mkldnn_bf16_supported()  # as in training
    norm = script.Normalizer(dims["x"], cfg["norm_eps"], cfg["clip_obs"], cfg["norm_clip"])
    if isinstance(norm, torch.nn.Module):  # (a script before run_plumbing.py kept its statistics as attributes)
        norm.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["normalizer"].items() if k in norm.state_dict()})
    else:
        vars(norm).update(ckpt["normalizer"])
    video_dir = f"videos/eval__{os.path.basename(os.path.dirname(os.path.abspath(path)))}"
    results = [test_episode(env, actor, norm, 10**9 + seed * 100_000 + i,
                            f"{video_dir}/episode{i:03d}" if capture_video else None) for i in range(episodes)]
    successes = [success for success, _ in results]
    kwargs = f" ({', '.join(f'{k}={v}' for k, v in env_kwargs.items())})" if env_kwargs else ""
    print(f"{cfg['env_id']}{kwargs}: test success {np.mean(successes):.3f} over {episodes} deterministic episodes "
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
