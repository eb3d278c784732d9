# DDPG + HER at a higher control frequency: ddpg_her.py changed only where this idea needs it. Plappert et al. 2018,
# section 2 ("Request for Research"), paragraph "RL with very frequent actions": the tasks run at 25 Hz; at a higher
# frequency, with the same simulated time, learning gets harder (the returns reach back over more steps and white
# action noise averages out); remedies to try include "parameter space noise, which makes exploration more consistent
# over time" and n-step returns, and frame skip. --frequency-hz f runs the env at f Hz (n_substeps = 500 / f
# simulator steps of 2 ms; envs/goal_env.py: the same start state, actions of about the same speed, see there) with:
#  - the same seconds per episode: T = T_25 * f / 25 steps (FetchPush: 50 at 25 Hz, 500 at 250 Hz);
#  - the same discount per second: gamma = gamma_25 ** (25 / f) (gamma_25 = 1 - 1/T_25, or --gamma); clip_return
#    1 / (1 - gamma) as in ddpg_her.py, so Q (sum of -1 per step) ranges over [-1/(1-gamma), 0]: 10x wider at 250 Hz;
#    the reward stays the env's own per step (not rescaled per second);
#  - the same episodes and updates per cycle and the same replay in episodes (--buffer-size counts 25 Hz steps: the
#    buffer holds buffer_size / T_25 episodes at any f), so a budget in episodes (= simulated seconds) is the same;
#    env_steps counts this fork's own steps, and metrics.csv adds sim_seconds (and has episodes) to compare curves.
# Remedies, off by default (then the fork at 25 Hz is ddpg_her.py, metric for metric):
#  - --param-noise: parameter-space noise (Plappert et al. 2018, "Parameter Space Noise for Exploration", ICLR;
#    Baselines' AdaptiveParamNoiseSpec): each episode acts with its own copy of the actor's weights plus Gaussian noise
#    of std sigma, drawn at the episode's start and held for the whole episode; sigma adapts once per cycle: measured
#    on a replay batch, the RMS distance d between perturbed and unperturbed actions (as a fraction of max_u) makes
#    sigma /= alpha if d > --param-noise-target else sigma *= alpha (alpha 1.01, target 0.2 as the action noise's
#    std). Beside the action noise and random actions (--noise-eps 0 --random-eps 0: in place of them). Departures:
#    no layer normalisation in the actor (the paper's DDPG has it between perturbed layers; here sigma starts at 0.05,
#    not 0.2, as plain Glorot layers are more sensitive), every layer is perturbed, and d is measured on this cycle's
#    perturbations (one per env) after the rollout, where Baselines draws a separate one.
#  - --n-step n0: n-step returns over n = n0 * f / 25 steps (the same n0 * 40 ms at any f), as
#    research/ddpg_her_nstep.py: y = sum_{i<k} gamma^i r(ag[t+1+i], g') + gamma^k Q'(o[t+k], g', pi'(o[t+k])),
#    k = min(n, T - t), clipped to [-clip_return, 0]; 0 (default): the 1-step target.
#  - Not done: an adaptive frame skip (the paper's third suggestion).
# A model.pt of f != 25 records env_kwargs (n_substeps, max_episode_steps): evaluate.py makes the env with them.
#   python research/ddpg_her_frequent.py --env-id FetchPush-v0 --frequency-hz 250          250 Hz, no remedy
#   python research/ddpg_her_frequent.py --frequency-hz 250 --param-noise --n-step 1       both remedies
#   python research/ddpg_her_frequent.py --resume runs/RUN_NAME                            continue an interrupted run
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for --capture-video; read when mujoco first renders
import contextlib
import copy
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import envs  # registers FetchReach-v0, FetchPush-v0, ... and their ...Dense-v0 twins
from evaluate import test_episode
from run_plumbing import Run, check_args, cuda_graph, explain_oom, fail, pick_compute  # what is not algorithm

DENSE = False  # this file's configuration: sparse rewards (the ...Dense-v0 ids belong to the *_dense.py scripts)
USE_HER = True  # this file's configuration: hindsight relabelling on
FREQUENCIES = {25: 20, 50: 10, 100: 5, 125: 4, 250: 2, 500: 1}  # control frequency (Hz) -> n_substeps of 2 ms


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the networks, exploration, replay sampling and environments"""
    env_id: str = "FetchPush-v0"
    """the environment id (one of envs.ENV_IDS)"""
    n_epochs: int = 50
    """epochs to train (paper: 50 for Fetch); an epoch is n_cycles cycles followed by the test rollouts"""
    n_envs: int = 16
    """rollouts in parallel per cycle (paper: 19 MPI workers x 2 rollouts = 38), stepped by --env-threads threads"""
    n_cycles: int = 50
    """cycles per epoch; a cycle = n_envs episodes, then n_batches updates, then a target-network update"""
    n_batches: int = 40
    """updates (gradient steps) per cycle (paper: 40)"""
    batch_size: int = 1024
    """transitions per update, i.e. the effective batch (paper: 256 per worker, gradients averaged over 19 workers)"""
    paper_budget: bool = False
    """the paper's budget: n_envs=38, batch_size=19*256 (1900 episodes, 2000 updates an epoch), buffer_size=19*1e6;
    and n_cycles=10 for FetchReach-v0, as Baselines' config.py"""
    n_test_rollouts: int = 10
    """test rounds per epoch, each n_envs deterministic episodes (paper: 10 per worker, 2 episodes each)"""
    buffer_size: int = 1_000_000
    """replay capacity in 25 Hz transitions, stored as whole episodes (paper: 1e6 per worker, 19e6 in all); at f Hz
    it holds f/25 times as many transitions: the same episodes"""
    actor_lr: float = 1e-3
    """Adam learning rate of the actor (paper: 1e-3)"""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic (paper: 1e-3)"""
    polyak: float = 0.95
    """target <- polyak * target + (1 - polyak) * main, once per cycle (paper: 0.95)"""
    action_l2: float = 1.0
    """coefficient of the L2 penalty on the actor's actions (paper: 1.0)"""
    hidden: int = 256
    """units per hidden layer of actor and critic (paper: 256)"""
    n_layers: int = 3
    """hidden layers of actor and critic (paper: 3)"""
    random_eps: float = 0.3
    """probability of a uniformly random action while collecting (paper: 0.3)"""
    noise_eps: float = 0.2
    """std of the Gaussian action noise, as a fraction of the action range (paper: 0.2)"""
    replay_k: int = 4
    """HER 'future' relabelling ratio: a goal is relabelled with probability 1 - 1/(1+k) (paper: k=4, i.e. 0.8)"""
    clip_obs: float = 200.0
    """observations and goals are clipped to [-clip_obs, clip_obs] before normalising (paper: 200)"""
    norm_clip: float = 5.0
    """normalised inputs are clipped to [-norm_clip, norm_clip] (paper: 5)"""
    norm_eps: float = 0.01
    """lower bound of the normaliser's std (Baselines: 0.01)"""
    gamma: float | None = None
    """discount per 25 Hz step (0.04 s); None means 1 - 1/T with T the 25 Hz episode length (Baselines: 0.98 for 50
    steps); at f Hz each step discounts by gamma ** (25 / f): the same discount per second"""
    frequency_hz: int = 25
    """control frequency: 25 (the paper's), 50, 100, 125, 250 or 500 Hz (n_substeps = 500 / f, T = T_25 * f / 25)"""
    n_step: int = 0
    """n-step returns over n_step * f / 25 steps (n_step 25 Hz steps' worth of time); 0: off, the 1-step target"""
    param_noise: bool = False
    """parameter-space noise: each episode acts with the actor's weights + Gaussian noise held for the episode"""
    param_noise_std: float = 0.05
    """the initial std of the weight noise (adapted once per cycle)"""
    param_noise_target: float = 0.2
    """the adaptation's target: RMS distance between perturbed and unperturbed actions, as a fraction of max_u"""
    param_noise_alpha: float = 1.01
    """the adaptation's factor: std /= alpha above the target, std *= alpha below (Baselines: 1.01)"""
    clip_return: bool = True
    """clip the critic's targets to [-1/(1-gamma), 0], the range of possible returns (Baselines)"""
    env_threads: int = 0
    """threads of the batch that steps the n_envs envs (gym.make_vec: mujoco.batch, without the GIL); 0 = one per CPU"""
    torch_threads: int = 0
    """threads for updates (rollouts use one); 0 = PyTorch's default, one per physical core; 1 if jobs share cores"""
    cuda: bool = True
    """networks, replay buffer and updates on the GPU when there is one (the CPU otherwise; the first log line says)"""
    cudagraphs: bool = True
    """on a GPU, replay each update (sampling, relabelling, rewards, gradient step) as one captured CUDA graph"""
    bf16_matmul: bool = True
    """hidden layers' matmuls in bfloat16 where the CPU has AVX512-BF16 or AMX (faster; curves: docs/performance.md)"""
    track: bool = False
    """log to Weights & Biases (offline when there is no network)"""
    wandb_project_name: str = "multi-goal-rl"
    """the W&B project"""
    wandb_entity: str | None = None
    """the W&B entity (team or user)"""
    wandb_group: str | None = None
    """the W&B group, e.g. to put the seeds of one configuration together"""
    wandb_tags: tuple[str, ...] = ()
    """W&B tags"""
    capture_video: bool = False
    """record one deterministic test episode per epoch to videos/RUN_NAME/"""
    save_model: bool = False
    """write runs/RUN_NAME/model.pt every epoch: actor, normaliser statistics and config, for evaluate.py"""
    checkpoint: bool = True
    """write runs/RUN_NAME/checkpoint.pt every epoch (everything needed to resume, replay buffer included)"""
    resume: str | None = None
    """a run directory (runs/RUN_NAME) or its checkpoint.pt: continue from the last checkpoint with the saved config;
    only --n-epochs (to extend the run) and the W&B options (--track, --wandb-*) may be given with it"""


def mlp(in_dim, out_dim, hidden, n_layers):
    sizes = [in_dim] + [hidden] * n_layers  # ReLU in place: one allocation less per layer
    layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU(inplace=True))]
    layers.append(nn.Linear(sizes[-1], out_dim))
    for layer in layers[::2]:  # Baselines (TF dense layers): Glorot-uniform weights, zero biases
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def mlp_forward(net, x, bf16):  # bf16: the hidden layers' matmuls in bfloat16 (autocast; weights, Adam: fp32)
    *hidden, output = net
    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16, cache_enabled=False):  # (CUDA graphs: no cache)
        for layer in hidden:
            x = layer(x)
    return output(x.float())  # the output layer in fp32: Q-values and actions keep fp32 resolution (not 8 bits)


class Actor(nn.Module):
    def __init__(self, in_dim, act_dim, hidden, n_layers, max_u, bf16=False):
        super().__init__()
        self.net, self.max_u, self.bf16 = mlp(in_dim, act_dim, hidden, n_layers), max_u, bf16

    def forward(self, x):
        return self.max_u * torch.tanh(mlp_forward(self.net, x, self.bf16))


class Critic(nn.Module):
    def __init__(self, in_dim, act_dim, hidden, n_layers, max_u, bf16=False):
        super().__init__()
        self.net, self.max_u, self.bf16 = mlp(in_dim + act_dim, 1, hidden, n_layers), max_u, bf16

    def forward(self, x, u):  # Baselines feeds actions scaled to [-1, 1]
        return mlp_forward(self.net, torch.cat([x, u / self.max_u], 1), self.bf16)


class Normalizer(nn.Module):
    """Running mean/std per element of [o, g] (Baselines' normalizer.py keeps one for o and one for g: the same)."""

    def __init__(self, size, eps, clip_obs, norm_clip, device="cpu"):
        super().__init__()
        self.eps, self.clip_obs, self.norm_clip = eps, clip_obs, norm_clip
        # Buffers: in the state dict (checkpoints, model.pt), moved with the module, loaded in place (CUDA graphs).
        self.register_buffer("sum", torch.zeros(size, dtype=torch.float64, device=device))
        self.register_buffer("sumsq", torch.zeros(size, dtype=torch.float64, device=device))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64, device=device))
        self.register_buffer("mean", torch.zeros(size, device=device))
        self.register_buffer("std", torch.ones(size, device=device))

    def update(self, x):  # in place, statistics in float64: a captured CUDA graph reads mean and std where they are
        x = torch.as_tensor(x, device=self.mean.device).clamp(-self.clip_obs, self.clip_obs).double()
        self.sum += x.sum(0)
        self.sumsq += x.square().sum(0)
        self.count += len(x)
        count = self.count.clamp(min=1)  # (nothing seen yet: mean 0, std eps)
        mean = self.sum / count
        self.mean.copy_(mean)
        self.std.copy_((self.sumsq / count - mean.square()).clamp(min=self.eps**2).sqrt())

    def forward(self, x):
        x = (x.clamp(-self.clip_obs, self.clip_obs) - self.mean) / self.std
        return x.clamp_(-self.norm_clip, self.norm_clip)


def sample_transitions(ep, n_eps, n, her_future_p, n_step=1):
    """n transitions from the first n_eps episodes of `ep` (tensors o, ag: T+1 rows; g, u: T rows) with HER 'future'
    relabelling (Baselines' her_sampler.py), on ep's device, with no loop and no host sync (n_eps may be a tensor).
    Returns [[o, g'], [o[t+k], g']] as one (2, n, dim_o + dim_g) tensor, the actions, the next n_step achieved goals
    (n_step, n, dim_g) and k = min(n_step, T - t) (n,)."""
    T, rand = ep["u"].shape[1], lambda: torch.rand(n, dtype=torch.float64, device=ep["u"].device)
    e, t = (rand() * n_eps).long(), (rand() * T).long()  # uniform episode, uniform step (float64: never n_eps or T)
    # With probability her_future_p the goal becomes an achieved goal of a later step of the same episode,
    # t' uniform in {t+1, ..., T}; ag has T+1 rows, so t' = T is the final state (Baselines' 'future' strategy).
    future_t = t + 1 + (rand() * (T - t)).long()
    g = torch.where((rand() < her_future_p)[:, None], ep["ag"][e, future_t], ep["g"][e, t])
    # n-step: k = min(n_step, T - t) steps, cut at the episode's end; the steps past it repeat row t + k (no weight).
    k = (T - t).clamp(max=n_step)
    ahead = torch.minimum(torch.arange(1, n_step + 1, device=t.device)[:, None], k)  # (n_step, n): 1, 2, .., k, k
    x = torch.stack([torch.cat([ep["o"][e, t], g], 1), torch.cat([ep["o"][e, t + k], g], 1)])
    return x, ep["u"][e, t], ep["ag"][e, t + ahead], k


class EpisodeReplay:
    """Whole episodes in preallocated tensors on the learner's device (Baselines' replay_buffer.py)."""

    def __init__(self, size_in_transitions, T, dims, rng, device="cpu"):
        self.size, self.n, self.rng = size_in_transitions // T, 0, rng
        # o and ag keep the final observation of each episode too: T + 1 rows
        shapes = dict(o=(T + 1, dims["o"]), ag=(T + 1, dims["ag"]), g=(T, dims["g"]), u=(T, dims["u"]))
        nbytes = 4 * self.size * sum(rows * dim for rows, dim in shapes.values())  # float32
        with explain_oom("the replay buffer", nbytes, "--buffer-size", torch.device(device)):
            self.ep = {k: torch.empty((self.size, *shape), device=device) for k, shape in shapes.items()}
        self.n_eps = torch.zeros((), dtype=torch.float64, device=device)  # self.n where a CUDA graph can read it
        self.unsaved = np.zeros(self.size, bool)  # episodes stored since the last checkpoint, which writes just those

    def store(self, batch, idx=None):  # batch: tensors or arrays; idx: where (a resume), else Baselines' rule
        if idx is None:  # Baselines: fill in order, then overwrite random episodes
            k = len(batch["u"])
            free = np.arange(self.n, min(self.size, self.n + k))
            idx = np.concatenate([free, self.rng.integers(0, self.n, k - len(free))])
            self.n = min(self.size, self.n + k)
        # A slot drawn twice keeps the later episode, as in numpy (on a GPU, two writes to one slot would race).
        last = len(idx) - 1 - np.unique(idx[::-1], return_index=True)[1]
        rows, slots = (torch.from_numpy(a).to(self.n_eps.device) for a in (last, idx[last]))
        for key, arr in self.ep.items():
            arr[slots] = torch.as_tensor(batch[key], device=arr.device)[rows]
        self.unsaved[idx] = True
        self.n_eps.fill_(self.n)

    def sample(self, n, her_future_p, n_step=1):
        return sample_transitions(self.ep, self.n_eps, n, her_future_p, n_step)


def n_step_returns(compute_reward, ag, g, k, gamma):
    """The n-step target's parts from the next n achieved goals ag (n, B, dim_g), the goal g (B, dim_g) and the steps
    k (B,) before the episode's end: r (B, 1), the k rewards under g discounted and summed, and the bootstrap's
    discount gamma^k (B, 1); target = r + gamma^k Q'(o[t+k], g, pi'(o[t+k])). n = 1: ddpg_her.py's r and gamma."""
    n, B = ag.shape[:2]
    r = compute_reward(ag.flatten(0, 1), g.repeat(n, 1), {}).float().view(n, B, 1)  # each step's reward under g
    i = torch.arange(n, device=ag.device)[:, None, None]
    r = torch.where(i < k[:, None], gamma**i * r, 0.0).sum(0)  # the k steps before the episode's end
    return r, gamma ** k[:, None].float()


class ParamNoise(nn.Module):
    """Parameter-space noise (Plappert et al. 2018, ICLR): a perturbation of every actor parameter per env, held for
    an episode, whose std adapts so that perturbed actions lie --param-noise-target from the actor's (Baselines'
    AdaptiveParamNoiseSpec). std and the last distance are buffers: a checkpoint saves them, a resume restores them."""

    def __init__(self, std, target, alpha):
        super().__init__()
        self.target, self.alpha = target, alpha
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float64))
        self.register_buffer("distance", torch.zeros((), dtype=torch.float64))  # (0 until measured)

    def sample(self, actor, n):
        """n perturbations: for each actor parameter, (n, *shape) Gaussian noise of std `std`."""
        return [self.std.item() * torch.randn(n, *p.shape, device=p.device) for p in actor.net.parameters()]

    def adapt(self, distance):
        """std /= alpha when the measured distance exceeds the target, else std *= alpha (Baselines' adapt)."""
        self.distance.fill_(distance)
        self.std.mul_(1.0 / self.alpha if distance > self.target else self.alpha)


def perturb(actor, noise=None):
    """The actor's layers with each of the n perturbations of ParamNoise.sample added: a (weight (n, in, out), bias
    (n, 1, out)) pair per layer (noise None: the actor's own, n = 1). A rollout makes them once per episode."""
    params = list(actor.net.parameters())
    noise = noise if noise is not None else [torch.zeros(1, *p.shape, device=p.device) for p in params]
    w_b = [(p + dp, q + dq) for (p, q), (dp, dq) in zip(zip(params[::2], params[1::2]), zip(noise[::2], noise[1::2]))]
    layers = [(w.transpose(1, 2), b[:, None, :]) for w, b in w_b]
    if actor.bf16:  # the hidden layers' operands cast once, not at every step (what autocast would cast them to)
        layers[:-1] = [(w.bfloat16(), b.bfloat16()) for w, b in layers[:-1]]
    return layers


def perturbed_actions(actor, x, layers):
    """The actions for x (n, B, dim) of the n perturbed actors of `perturb`, each on its own B rows; the same layers
    and precision as Actor.forward."""
    with torch.autocast(x.device.type, torch.bfloat16, enabled=actor.bf16, cache_enabled=False):
        for w, b in layers[:-1]:
            x = torch.relu(torch.baddbmm(b, x, w))
    w, b = layers[-1]
    return actor.max_u * torch.tanh(torch.baddbmm(b, x.float(), w))


def action_distance(actor, x, noise):
    """RMS distance between the perturbed and the actor's own actions on the states x (B, dim), as a fraction of
    max_u, over the n perturbations, the rows and the action dims."""
    with torch.no_grad():
        xs = x.expand(len(noise[0]), *x.shape)
        diff = perturbed_actions(actor, xs, perturb(actor, noise)) - perturbed_actions(actor, xs[:1], perturb(actor))
        return (diff / actor.max_u).square().mean().sqrt().item()


def update(nets, optimizer, norm, x, u, r, gamma, clip_return, action_l2):
    """One gradient step of actor and critic on x = [[o, g], [o[t+k], g]] (2, B, dim), u (B, dim_u), r (B, 1) and the
    bootstrap's discount gamma (B, 1) or a float. Both gradients come from the same parameters, applied by one Adam
    step (as in Baselines). Returns [a_loss, c_loss, Q]."""
    actor, critic, actor_target, critic_target = nets
    x = norm(x)
    with torch.no_grad():
        q_next = critic_target(x[1], actor_target(x[1]))
        target = (r + gamma * q_next).clamp_(-clip_return, 0.0)  # Baselines: clip_return and clip_pos_returns
    q = critic(x[0], u)
    critic_loss = F.mse_loss(q, target)
    pi = actor(x[0])
    critic.requires_grad_(False)  # the actor's loss needs dQ/du but must not train the critic (nor waste work on it)
    actor_loss = -critic(x[0], pi).mean() + action_l2 * (pi / actor.max_u).square().mean()
    critic.requires_grad_(True)
    optimizer.zero_grad(set_to_none=True)
    (critic_loss + actor_loss).backward()
    optimizer.step()
    return torch.stack([actor_loss.detach(), critic_loss.detach(), q.detach().mean()])


if __name__ == "__main__":
    args = tyro.cli(Args)
    run = Run(args, __file__)  # --resume: the saved options and the checkpoint (a finished run stops here)
    args = run.args
    if args.paper_budget:  # 19 MPI workers x 2 rollouts, 256 transitions per worker's batch, 1e6 per worker's buffer
        args.n_envs, args.batch_size, args.buffer_size = 38, 19 * 256, 19 * 1_000_000
        if args.env_id == "FetchReach-v0":  # Baselines' config.py: n_cycles=10 for 'FetchReach-v1' (exact id) only
            args.n_cycles = 10
    check_args(args, DENSE, USE_HER)
    # ALGO LOGIC: the control frequency: n_substeps, episodes of the same seconds (T_25 * f / 25 steps)
    if args.frequency_hz not in FREQUENCIES:
        fail(f"--frequency-hz must be one of {', '.join(map(str, FREQUENCIES))} (n_substeps = 500 / f), got "
             f"{args.frequency_hz}")
    if args.frequency_hz != 25 and args.env_id not in envs.ENV_IDS:
        fail(f"--frequency-hz {args.frequency_hz} needs one of our envs (they take n_substeps), not {args.env_id}")
    steps_per_25hz = args.frequency_hz // 25  # env steps in one 0.04 s step of the paper's
    T_25 = gym.spec(args.env_id).max_episode_steps
    env_kwargs = {}  # 25 Hz: the env exactly as ddpg_her.py makes it
    if args.frequency_hz != 25:
        env_kwargs = dict(n_substeps=FREQUENCIES[args.frequency_hz], max_episode_steps=T_25 * steps_per_25hz)
    if args.n_step < 0:
        fail(f"--n-step must be >= 0 (0: off), got {args.n_step}")
    if not (args.param_noise_std > 0 and args.param_noise_target > 0 and args.param_noise_alpha > 1):
        fail(f"--param-noise-std and --param-noise-target must be positive and --param-noise-alpha > 1, got "
             f"{args.param_noise_std}, {args.param_noise_target} and {args.param_noise_alpha}")
    n_step = max(1, args.n_step * steps_per_25hz)  # the same seconds at any frequency; 1: the 1-step target
    # One env in this process gives the spaces, T and compute_reward, called once per batch of relabelled goals.
    env = gym.make(args.env_id, **env_kwargs)
    try:
        envs.check_goal_env(env)  # Dict observations with goals, compute_reward, a time limit, a symmetric action box
    except ValueError as error:
        fail(str(error))
    compute_reward = env.unwrapped.compute_reward
    T = env.spec.max_episode_steps
    gamma_25 = 1.0 - 1.0 / T_25 if args.gamma is None else args.gamma  # Baselines: gamma = 1 - 1/T, at 25 Hz
    gamma = gamma_25 ** (25 / args.frequency_hz) if args.frequency_hz != 25 else gamma_25  # the same per second
    step_seconds = env.unwrapped.dt  # simulated seconds per env step (0.04 at 25 Hz)
    clip_return = 1.0 / (1.0 - gamma) if args.clip_return else np.inf  # Baselines: |return| <= sum of gamma^t
    her_future_p = 1.0 - 1.0 / (1.0 + args.replay_k) if USE_HER else 0.0  # Baselines' her_sampler.py
    max_u = float(env.action_space.high[0])
    dim_o, dim_g = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    dims = dict(o=dim_o, g=dim_g, ag=dim_g, x=dim_o + dim_g, u=env.action_space.shape[0])
    if args.buffer_size < args.n_envs * T_25:  # (in 25 Hz steps: the buffer holds the same episodes at any f)
        fail(f"--buffer-size {args.buffer_size} cannot hold one cycle of {args.n_envs} episodes of {T_25} steps")

    # TRY NOT TO MODIFY: seeding, device and threads (same seed and threads, same run on a CPU; resumes restore RNGs)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    compute = pick_compute(args)  # device (--cuda), bf16 matmuls, update and env threads
    device = compute.device
    run.start(dict(T=T, gamma=gamma, clip_return_value=clip_return, her_future_p=her_future_p, dims=dims,
                   env_kwargs=env_kwargs, n_step_steps=n_step, step_seconds=step_seconds), compute)
    vec = envs.make_vec(args.env_id, args.n_envs, compute.env_threads, **env_kwargs)  # gym.make_vec: one mujoco.batch
    video_env = gym.make(args.env_id, render_mode="rgb_array", **env_kwargs) if args.capture_video else None

    # ALGO LOGIC: networks, one Adam for both (two parameter groups), target networks
    actor = Actor(dims["x"], dims["u"], args.hidden, args.n_layers, max_u, compute.bf16).to(device)
    critic = Critic(dims["x"], dims["u"], args.hidden, args.n_layers, max_u, compute.bf16).to(device)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    nets = (actor, critic, actor_target, critic_target)
    main_params = list(actor.parameters()) + list(critic.parameters())
    target_params = list(actor_target.parameters()) + list(critic_target.parameters())
    optimizer = torch.optim.Adam([dict(params=actor.parameters(), lr=args.actor_lr),
                                  dict(params=critic.parameters(), lr=args.critic_lr)], fused=True,
                                 capturable=compute.cudagraphs)  # its step count on the GPU, for CUDA graphs
    norm = Normalizer(dims["x"], args.norm_eps, args.clip_obs, args.norm_clip, device)
    replay = EpisodeReplay(args.buffer_size * steps_per_25hz, T, dims, rng, device)  # the same episodes at any f
    param_noise = ParamNoise(args.param_noise_std, args.param_noise_target, args.param_noise_alpha).to(device)
    state = dict(actor=actor, critic=critic, actor_target=actor_target, critic_target=critic_target,
                 optimizer=optimizer, normalizer=norm, param_noise=param_noise)  # what a checkpoint saves
    stats = torch.zeros(3, device=device)  # sums of [actor loss, critic loss, Q] over an epoch: no sync per update

    def train_batch():  # one update: a HER-relabelled batch, its rewards, a gradient step; all on `device`
        x, u, ag_next, k = replay.sample(args.batch_size, her_future_p, n_step)
        # the env's own rewards, on tensors: n_step of them under the relabelled goal (1: ddpg_her.py's)
        r, discount = n_step_returns(compute_reward, ag_next, x[0, :, dims["o"] :], k, gamma)
        stats.add_(update(nets, optimizer, norm, x, u, r, discount, clip_return, args.action_l2))

    if compute.cudagraphs:  # LeanRL: one graph launch instead of ~150 kernel launches (eager if capture fails)
        train_batch = cuda_graph(train_batch, run)
    ep = {k: np.empty((args.n_envs, T + (k in ("o", "ag")), dims[k]), np.float32) for k in ("o", "ag", "g", "u")}

    def rollout(explore, noise=None):
        """n_envs episodes of T steps: success flags at the last step (the paper's metric), episodes to keep. noise:
        a perturbation of the actor's parameters per env (ParamNoise.sample), held for the whole episode."""
        obs, _ = vec.reset()
        keep = np.ones(args.n_envs, bool)
        with torch.no_grad():
            layers = perturb(actor, noise) if noise is not None else None  # (the actor does not change in a rollout)
        for t in range(T):
            ep["o"][:, t], ep["ag"][:, t], ep["g"][:, t] = obs["observation"], obs["achieved_goal"], obs["desired_goal"]
            with torch.no_grad():
                x = torch.from_numpy(np.concatenate([ep["o"][:, t], ep["g"][:, t]], 1)).to(device)
                u = actor(norm(x)) if noise is None else perturbed_actions(actor, norm(x)[:, None], layers)[:, 0]
                u = u.cpu().numpy()
            if explore:  # Baselines: Gaussian noise, clip, then with probability random_eps a uniform random action
                u = np.clip(u + args.noise_eps * max_u * rng.standard_normal(u.shape, np.float32), -max_u, max_u)
                u = np.where(rng.random((len(u), 1)) < args.random_eps, rng.uniform(-max_u, max_u, u.shape), u)
            ep["u"][:, t] = u
            obs, _, terminated, truncated, info = vec.step(u)
            # An episode that the env ends before T, or whose simulation went unstable (MuJoCo reset it), is not stored.
            keep &= ~(terminated | (truncated if t < T - 1 else info.get("sim_unstable", False)))
        ep["o"][:, T], ep["ag"][:, T] = obs["observation"], obs["achieved_goal"]
        return np.asarray(info["is_success"], np.float64), keep

    if run.resumed:  # restore everything the next epoch depends on
        start_epoch, global_step, episodes, n_updates = run.restore(state, replay, rng)
    else:
        start_epoch, global_step, episodes, n_updates = 0, 0, 0, 0
        run.log(f"run {run.dir}: {args.env_id}, {args.n_envs} envs x {args.n_cycles} cycles = "
                f"{args.n_envs * args.n_cycles} episodes and {args.n_cycles * args.n_batches} updates of batch "
                f"{args.batch_size} per epoch; T={T}, gamma={gamma:.4f}, her_future_p={her_future_p}; {compute}")
        run.log(f"control at {args.frequency_hz} Hz ({step_seconds * 1000:g} ms a step, {T * step_seconds:g} s an "
                f"episode); {n_step}-step targets; parameter noise "
                f"{f'from std {args.param_noise_std}' if args.param_noise else 'off'}")

    with run.guard(), contextlib.closing(vec):  # Ctrl-C, kill: completed epochs are kept; the log says how to go on
        for epoch in range(start_epoch, args.n_epochs):
            vec.reset(seed=args.seed * 100_000 + epoch * args.n_envs)  # seeded per epoch: resumes repeat runs exactly
            epoch_start, train_success, update_s = time.time(), [], 0.0
            stats.zero_()
            for cycle in range(args.n_cycles):
                if sys.stdout.isatty():  # a live count within the epoch, overwritten by the epoch's line (not logged)
                    print(f"epoch {epoch + 1}/{args.n_epochs}: cycle {cycle + 1}/{args.n_cycles}", end="\r", flush=True)
                noise = param_noise.sample(actor, args.n_envs) if args.param_noise else None  # for this episode
                success, keep = rollout(explore=True, noise=noise)
                train_success.append(success)
                global_step += args.n_envs * T
                episodes += args.n_envs
                new = {k: torch.from_numpy(v if keep.all() else v[keep]).to(device) for k, v in ep.items()}
                replay.store(new)
                # Baselines: the normaliser sees the new episodes as the learner will, i.e. HER-relabelled goals.
                norm.update(sample_transitions(new, len(new["u"]), len(new["u"]) * T, her_future_p)[0][0])
                if args.param_noise and replay.n:  # adapt sigma to this cycle's perturbations, on replayed states
                    param_noise.adapt(action_distance(actor, norm(replay.sample(args.batch_size, her_future_p)[0][0]),
                                                      noise))
                torch.set_num_threads(compute.update_threads)
                update_start = time.time()
                for _ in range(args.n_batches if replay.n else 0):  # (no episode kept yet: nothing to learn from)
                    train_batch()
                if device.type == "cuda":
                    torch.cuda.synchronize()  # (time the updates as updates, not as the next rollout's wait)
                update_s += time.time() - update_start
                torch.set_num_threads(1)
                n_updates += args.n_batches
                with torch.no_grad():  # Baselines: target networks move once per cycle, after its n_batches updates
                    torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)
            train_time, test_start = time.time() - epoch_start, time.time()
            test_success = [rollout(explore=False)[0] for _ in range(args.n_test_rollouts)]
            test_s = time.time() - test_start
            if args.capture_video:
                video = test_episode(video_env, actor, norm, epoch, f"videos/{run.name}/epoch{epoch + 1:03d}")[1]
                run.log(f"video of a test episode after epoch {epoch + 1}: {video}")
            a_loss, c_loss, mean_q = (stats / (args.n_cycles * args.n_batches)).tolist()
            metrics = dict(epoch=epoch + 1, env_steps=global_step, episodes=episodes, updates=n_updates,
                           test_success=float(np.mean(test_success)) if test_success else float("nan"),
                           train_success=float(np.mean(train_success)), mean_q=mean_q, actor_loss=a_loss,
                           critic_loss=c_loss, sps=args.n_cycles * args.n_envs * T / train_time,
                           elapsed_s=run.elapsed(), collect_s=train_time - update_s, update_s=update_s, test_s=test_s,
                           sim_seconds=round(global_step * step_seconds, 6),  # curves of all frequencies on one axis
                           param_noise_std=param_noise.std.item(), param_noise_distance=param_noise.distance.item())
            # metrics.csv, model.pt (what evaluate.py needs) and checkpoint.pt, safe from Ctrl-C and kill -9;
            # the epoch's line comes after them: a run stopped once it is printed keeps the epoch
            run.end_epoch(metrics, dict(dims=dims, max_u=max_u, actor=actor.state_dict(), normalizer=norm.state_dict(),
                                        env_kwargs=env_kwargs),  # (the env of f != 25 Hz, for evaluate.py)
                          state, replay, rng, dict(step=global_step, episodes=episodes, updates=n_updates))
            run.log(f"epoch {epoch + 1}/{args.n_epochs} | steps {global_step:,} | episodes {episodes:,} | test success "
                    f"{metrics['test_success']:.3f} | train success {metrics['train_success']:.3f} | Q {mean_q:.2f} | "
                    f"actor loss {a_loss:.3f} | critic loss {c_loss:.4f} | {metrics['sps']:.0f} steps/s | "
                    f"{metrics['elapsed_s'] / 60:.1f} min")
    run.finish(global_step)
