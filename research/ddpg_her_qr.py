# DDPG + HER with a distributional critic: ddpg_her.py changed only where this idea needs it. Plappert et al. 2018,
# section 2 ("Request for Research"), paragraph "Combine HER with recent improvements in RL", names distributional RL
# (Bellemare, Dabney, Munos 2017). This fork follows quantile regression (QR-DQN: Dabney, Rowland, Bellemare, Munos
# 2018, "Distributional Reinforcement Learning with Quantile Regression", AAAI, arXiv:1710.10044) as continuous-control
# critics use it (QR-DDPG, D4PG's distributional critic with quantiles in place of its categorical atoms; TQC, Kuznetsov
# et al. 2020, arXiv:2005.04269): the critic outputs N quantiles Z_i(o, g, u), i = 0..N-1, of the return, at the
# fractions tau_i = (2i + 1) / (2N), in place of the scalar Q.
#  - Target, per quantile: r + gamma * Z_j(o', g, pi_target(o')) from the target networks, j = 0..N-1, each clipped to
#    [-1/(1-gamma), 0] as Baselines clips the scalar target (a return's range is also each of its quantiles' range).
#  - Critic loss: QR-DQN's quantile Huber loss over all pairs (predicted quantile i, target sample j):
#    sum_i mean_j |tau_i - [u_ij < 0]| * L_kappa(u_ij) / kappa with u_ij = target_j - Z_i (the /kappa as IQN's), mean
#    over the batch; kappa = 1 (--kappa).
#  - Actor: maximises the mean of the quantiles, Q = mean_i Z_i (the same line as ddpg_her.py on N outputs), with its
#    action L2 penalty; the logged mean_q is the mean over quantiles.
#  - Option --drop-top-quantiles d (default 0: off): TQC's truncation with one critic, the target keeps the N - d
#    smallest of the N target quantiles of each transition (TQC pools 5 critics x 25 atoms and drops 2 per critic).
# Departures: one critic (TQC: an ensemble; D4PG: N-step returns, prioritised replay, many actors), and the baseline's
# schedule (polyak 0.95 once per cycle, one Adam for both nets, Appendix B's defaults) so that a comparison isolates the
# critic's distribution. N = 25 as TQC's atoms per critic (QR-DQN: 200 on Atari).
#   python research/ddpg_her_qr.py --env-id FetchPush-v0 --seed 1          train; the defaults suit a 2-core laptop
#   python research/ddpg_her_qr.py --n-quantiles 51 --kappa 0.5            more quantiles, a narrower Huber zone
#   python research/ddpg_her_qr.py --drop-top-quantiles 2                  TQC's truncation of the target's top atoms
#   python research/ddpg_her_qr.py --resume runs/RUN_NAME                  continue an interrupted run
#   python evaluate.py runs/RUN_NAME/model.pt --episodes 100               test a policy saved with --save-model
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
    """replay capacity in transitions, stored as whole episodes (paper: 1e6 per worker, 19e6 in all)"""
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
    """discount; None means 1 - 1/T with T the episode length (Baselines: 0.98 for 50 steps)"""
    clip_return: bool = True
    """clip the critic's targets to [-1/(1-gamma), 0], the range of possible returns (Baselines)"""
    n_quantiles: int = 25
    """quantiles N of the return that the critic outputs, at tau_i = (2i+1)/(2N) (TQC: 25 per critic)"""
    kappa: float = 1.0
    """width of the quantile Huber loss's quadratic zone (QR-DQN: 1; smaller: nearer the plain quantile loss)"""
    drop_top_quantiles: int = 0
    """TQC's truncation: the target drops each transition's d largest target quantiles (0: QR-DDPG, no truncation)"""
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


class Critic(nn.Module):  # the return's n_quantiles quantiles, (B, n_quantiles), in place of one Q-value
    def __init__(self, in_dim, act_dim, hidden, n_layers, max_u, bf16=False, n_quantiles=25):
        super().__init__()
        self.net, self.max_u, self.bf16 = mlp(in_dim + act_dim, n_quantiles, hidden, n_layers), max_u, bf16

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


def sample_transitions(ep, n_eps, n, her_future_p):
    """n transitions from the first n_eps episodes of `ep` (tensors o, ag: T+1 rows; g, u: T rows) with HER 'future'
    relabelling (Baselines' her_sampler.py), on ep's device, with no loop and no host sync (n_eps may be a tensor).
    Returns [[o, g'], [o', g']] as one (2, n, dim_o + dim_g) tensor, the actions, the next achieved goals."""
    T, rand = ep["u"].shape[1], lambda: torch.rand(n, dtype=torch.float64, device=ep["u"].device)
    e, t = (rand() * n_eps).long(), (rand() * T).long()  # uniform episode, uniform step (float64: never n_eps or T)
    # With probability her_future_p the goal becomes an achieved goal of a later step of the same episode,
    # t' uniform in {t+1, ..., T}; ag has T+1 rows, so t' = T is the final state (Baselines' 'future' strategy).
    future_t = t + 1 + (rand() * (T - t)).long()
    g = torch.where((rand() < her_future_p)[:, None], ep["ag"][e, future_t], ep["g"][e, t])
    x = torch.stack([torch.cat([ep["o"][e, t], g], 1), torch.cat([ep["o"][e, t + 1], g], 1)])
    return x, ep["u"][e, t], ep["ag"][e, t + 1]


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

    def sample(self, n, her_future_p):
        return sample_transitions(self.ep, self.n_eps, n, her_future_p)


def quantile_huber_loss(z, target, kappa):
    """QR-DQN's loss of predicted quantiles z (B, N) at tau_i = (2i+1)/(2N) against target samples (B, M): over all
    pairs u_ij = target_j - z_i, |tau_i - [u_ij < 0]| * L_kappa(u_ij) / kappa, summed over i, averaged over j and B."""
    tau = (2 * torch.arange(z.shape[1], device=z.device) + 1).float()[:, None] / (2 * z.shape[1])  # (N, 1)
    u = target[:, None, :] - z[:, :, None]  # (B, N, M): every target sample against every predicted quantile
    huber = F.huber_loss(u, torch.zeros_like(u), reduction="none", delta=kappa)  # L_kappa(u): one fused kernel
    # The asymmetric weight |tau_i - [u < 0]|: an under-estimate (u > 0) pulls z_i up with weight tau_i, an
    # over-estimate pulls it down with 1 - tau_i, so that z_i settles where a fraction tau_i of the targets lies below.
    weight = torch.where(u < 0, 1.0 - tau, tau)
    return (weight * huber).mean(2).sum(1).mean() / kappa


def update(nets, optimizer, norm, x, u, r, gamma, clip_return, action_l2, kappa=1.0, drop_top=0):
    """One gradient step of actor and critic on x = [[o, g], [o', g]] (2, B, dim), u (B, dim_u), r (B, 1). The critic
    regresses its N quantiles on the target's N - drop_top, by the quantile Huber loss. Both gradients come from the
    same parameters, applied by one Adam step (as in Baselines). Returns [a_loss, c_loss, Q], Q the quantiles' mean."""
    actor, critic, actor_target, critic_target = nets
    x = norm(x)
    with torch.no_grad():
        z_next = critic_target(x[1], actor_target(x[1]))  # (B, N): the target networks' quantiles at (o', pi'(o'))
        if drop_top:  # TQC: only the N - d smallest target quantiles (sorted per transition) are regressed on
            z_next = z_next.sort(1).values[:, : z_next.shape[1] - drop_top]
        target = (r + gamma * z_next).clamp_(-clip_return, 0.0)  # Baselines' clip, on each quantile
    q = critic(x[0], u)  # (B, N)
    critic_loss = quantile_huber_loss(q, target, kappa)
    pi = actor(x[0])
    critic.requires_grad_(False)  # the actor's loss needs dQ/du but must not train the critic (nor waste work on it)
    # Q = the mean of the N quantiles; .mean() over (B, N) averages them and the batch: ddpg_her.py's line
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
    if args.n_quantiles < 1 or args.kappa <= 0:  # ALGO LOGIC: the quantile critic's options
        fail(f"--n-quantiles must be positive and --kappa > 0, got {args.n_quantiles} and {args.kappa}")
    if not 0 <= args.drop_top_quantiles < args.n_quantiles:
        fail(f"--drop-top-quantiles must be in [0, n_quantiles) = [0, {args.n_quantiles}), got "
             f"{args.drop_top_quantiles}")
    # One env in this process gives the spaces, T and compute_reward, called once per batch of relabelled goals.
    env = gym.make(args.env_id)
    try:
        envs.check_goal_env(env)  # Dict observations with goals, compute_reward, a time limit, a symmetric action box
    except ValueError as error:
        fail(str(error))
    compute_reward = env.unwrapped.compute_reward
    T = env.spec.max_episode_steps
    gamma = 1.0 - 1.0 / T if args.gamma is None else args.gamma  # Baselines: gamma = 1 - 1/T
    clip_return = 1.0 / (1.0 - gamma) if args.clip_return else np.inf  # Baselines: |return| <= sum of gamma^t
    her_future_p = 1.0 - 1.0 / (1.0 + args.replay_k) if USE_HER else 0.0  # Baselines' her_sampler.py
    max_u = float(env.action_space.high[0])
    dim_o, dim_g = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    dims = dict(o=dim_o, g=dim_g, ag=dim_g, x=dim_o + dim_g, u=env.action_space.shape[0])
    if args.buffer_size < args.n_envs * T:
        fail(f"--buffer-size {args.buffer_size} cannot hold one cycle of {args.n_envs} episodes of {T} steps")

    # TRY NOT TO MODIFY: seeding, device and threads (same seed and threads, same run on a CPU; resumes restore RNGs)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    compute = pick_compute(args)  # device (--cuda), bf16 matmuls, update and env threads
    device = compute.device
    run.start(dict(T=T, gamma=gamma, clip_return_value=clip_return, her_future_p=her_future_p, dims=dims), compute)
    vec = envs.make_vec(args.env_id, args.n_envs, compute.env_threads)  # gym.make_vec: our ids in one mujoco.batch
    video_env = gym.make(args.env_id, render_mode="rgb_array") if args.capture_video else None  # one episode an epoch

    # ALGO LOGIC: networks, one Adam for both (two parameter groups), target networks
    actor = Actor(dims["x"], dims["u"], args.hidden, args.n_layers, max_u, compute.bf16).to(device)
    critic = Critic(dims["x"], dims["u"], args.hidden, args.n_layers, max_u, compute.bf16, args.n_quantiles).to(device)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    nets = (actor, critic, actor_target, critic_target)
    main_params = list(actor.parameters()) + list(critic.parameters())
    target_params = list(actor_target.parameters()) + list(critic_target.parameters())
    optimizer = torch.optim.Adam([dict(params=actor.parameters(), lr=args.actor_lr),
                                  dict(params=critic.parameters(), lr=args.critic_lr)], fused=True,
                                 capturable=compute.cudagraphs)  # its step count on the GPU, for CUDA graphs
    norm = Normalizer(dims["x"], args.norm_eps, args.clip_obs, args.norm_clip, device)
    replay = EpisodeReplay(args.buffer_size, T, dims, rng, device)
    state = dict(actor=actor, critic=critic, actor_target=actor_target, critic_target=critic_target,
                 optimizer=optimizer, normalizer=norm)  # what a checkpoint saves and a resume restores
    stats = torch.zeros(3, device=device)  # sums of [actor loss, critic loss, Q] over an epoch: no sync per update

    def train_batch():  # one update: a HER-relabelled batch, its rewards, a gradient step; all on `device`
        x, u, ag_next = replay.sample(args.batch_size, her_future_p)
        r = compute_reward(ag_next, x[0, :, dims["o"] :], {}).float()[:, None]  # the env's own reward, on tensors
        stats.add_(update(nets, optimizer, norm, x, u, r, gamma, clip_return, args.action_l2, args.kappa,
                          args.drop_top_quantiles))

    if compute.cudagraphs:  # LeanRL: one graph launch instead of ~150 kernel launches (eager if capture fails)
        train_batch = cuda_graph(train_batch, run)
    ep = {k: np.empty((args.n_envs, T + (k in ("o", "ag")), dims[k]), np.float32) for k in ("o", "ag", "g", "u")}

    def rollout(explore):
        """n_envs episodes of T steps: success flags at the last step (the paper's metric), episodes to keep."""
        obs, _ = vec.reset()
        keep = np.ones(args.n_envs, bool)
        for t in range(T):
            ep["o"][:, t], ep["ag"][:, t], ep["g"][:, t] = obs["observation"], obs["achieved_goal"], obs["desired_goal"]
            with torch.no_grad():
                x = torch.from_numpy(np.concatenate([ep["o"][:, t], ep["g"][:, t]], 1)).to(device)
                u = actor(norm(x)).cpu().numpy()
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
                f"{args.batch_size} per epoch; T={T}, gamma={gamma:.4f}, her_future_p={her_future_p}; "
                f"{args.n_quantiles} quantiles, kappa={args.kappa}, top {args.drop_top_quantiles} dropped; {compute}")

    with run.guard(), contextlib.closing(vec):  # Ctrl-C, kill: completed epochs are kept; the log says how to go on
        for epoch in range(start_epoch, args.n_epochs):
            vec.reset(seed=args.seed * 100_000 + epoch * args.n_envs)  # seeded per epoch: resumes repeat runs exactly
            epoch_start, train_success, update_s = time.time(), [], 0.0
            stats.zero_()
            for cycle in range(args.n_cycles):
                if sys.stdout.isatty():  # a live count within the epoch, overwritten by the epoch's line (not logged)
                    print(f"epoch {epoch + 1}/{args.n_epochs}: cycle {cycle + 1}/{args.n_cycles}", end="\r", flush=True)
                success, keep = rollout(explore=True)
                train_success.append(success)
                global_step += args.n_envs * T
                episodes += args.n_envs
                new = {k: torch.from_numpy(v if keep.all() else v[keep]).to(device) for k, v in ep.items()}
                replay.store(new)
                # Baselines: the normaliser sees the new episodes as the learner will, i.e. HER-relabelled goals.
                norm.update(sample_transitions(new, len(new["u"]), len(new["u"]) * T, her_future_p)[0][0])
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
                           elapsed_s=run.elapsed(), collect_s=train_time - update_s, update_s=update_s, test_s=test_s)
            # metrics.csv, model.pt (what evaluate.py needs) and checkpoint.pt, safe from Ctrl-C and kill -9;
            # the epoch's line comes after them: a run stopped once it is printed keeps the epoch
            run.end_epoch(metrics, dict(dims=dims, max_u=max_u, actor=actor.state_dict(), normalizer=norm.state_dict()),
                          state, replay, rng, dict(step=global_step, episodes=episodes, updates=n_updates))
            run.log(f"epoch {epoch + 1}/{args.n_epochs} | steps {global_step:,} | episodes {episodes:,} | test success "
                    f"{metrics['test_success']:.3f} | train success {metrics['train_success']:.3f} | Q {mean_q:.2f} | "
                    f"actor loss {a_loss:.3f} | critic loss {c_loss:.4f} | {metrics['sps']:.0f} steps/s | "
                    f"{metrics['elapsed_s'] / 60:.1f} min")
    run.finish(global_step)
