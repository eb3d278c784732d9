# DDPG + HER whose hindsight goals are chosen by the critic: ddpg_her.py changed only where this idea needs it.
# Plappert et al. 2018, section 2 ("Request for Research"), paragraph "Automatic hindsight goals generation": instead
# of HER's hand-crafted 'future' rule, "learn which goals are most valuable for replay", chosen "from the goals
# achieved or seen during training", e.g. those that "*maximize* the Bellman error". Here, for every replayed
# transition that HER relabels (probability her_future_p, as in ddpg_her.py), K = --n-candidates candidate goals are
# drawn: K - m future achieved goals of its own episode (HER's 'future' rule, t' uniform in {t+1, ..., T}) and
# m = K * --buffer-goal-frac achieved goals of random stored episodes and steps; each candidate's |TD error| is
# computed with the current critic and target networks (the target as update() makes it: the env's reward for that
# goal, gamma, the clip; no gradient, all B*K rows in one forward pass) and the largest wins; its reward is the env's
# compute_reward for the chosen goal. --n-candidates 1 --buffer-goal-frac 0 is ddpg_her.py's sampling, draw for draw
# (the same batches from the same seed, so the same run: tests/test_research_ddpg_her_goal_td.py checks both).
#  - No generator network is trained: the "generator" is an argmax over sampled achieved goals, the paper's first
#    option ("chosen from the goals achieved"), and a greedy one (no sampling in proportion to the error, no
#    importance weights: the critic is trained on the goals it gets most wrong, a biased goal distribution).
#  - The normaliser still sees the new episodes with HER 'future' goals, as in ddpg_her.py (Baselines), not the chosen
#    ones: candidates are achieved goals of the same kind, so the range is alike; the normaliser stays independent of
#    the critic it feeds (no loop where the critic picks goals that move its own inputs' scaling); and the K=1 run
#    stays ddpg_her.py's run exactly.
#  - The |TD error| is computed for all B rows, relabelled or not (a fixed shape for CUDA graphs); with K = 1 not at
#    all (nothing to choose).
#  - Related work. research/ddpg_her_prioritized.py answers the same paragraph with PER: it chooses transitions by
#    their error, the goal still drawn by the 'future' rule; this file chooses the goal. Energy-based prioritisation
#    (Zhao and Tresp 2018) replays whole episodes in proportion to the object's energy along them, a physics prior,
#    not the critic, and keeps the 'future' goals. CHER (Fang et al. 2019) chooses relabelling goals from a pool of
#    achieved goals too, but by proximity to the desired goal plus diversity (a submodular facility-location score,
#    with a curriculum from diversity to proximity), not by the learner's error. HGG (Ren et al. 2019) chooses goals
#    from achieved states by the value function, but goals to act on (exploration), not to replay.
#   python research/ddpg_her_goal_td.py --env-id FetchPush-v0 --seed 1
#   python research/ddpg_her_goal_td.py --n-candidates 8 --buffer-goal-frac 0.25   6 future, 2 buffer candidates
#   python research/ddpg_her_goal_td.py --n-candidates 1 --buffer-goal-frac 0      ddpg_her.py, run for run
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
    n_candidates: int = 4
    """candidate goals per relabelled transition; the one of largest |TD error| is replayed (1: no choice)"""
    buffer_goal_frac: float = 0.5
    """share of the candidates that are achieved goals of random stored episodes and steps (the rest: HER's 'future'
    goals of the transition's own episode); n_candidates * buffer_goal_frac must be a whole number"""
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


def sample_goal_td(ep, n_eps, n, her_future_p, n_candidates, n_buffer, td_abs, compute_reward):
    """n transitions as sample_transitions draws them, but a relabelled transition's goal is, of n_candidates candidate
    goals, the one whose |TD error| td_abs(o, o', u, ag', goals) (n, K) is the largest: n_candidates - n_buffer future
    achieved goals of its own episode (HER's 'future' rule) and n_buffer achieved goals of random stored episodes and
    steps. n_candidates=1, n_buffer=0 draws what sample_transitions draws, in the same order: the same batch.
    Returns [[o, g'], [o', g']] (2, n, dim_o + dim_g), the actions, the rewards compute_reward(ag', g') (n, 1), and
    whether each goal is a buffer goal (n,) (float: 1 for a relabelled transition whose chosen candidate is one)."""
    T, device = ep["u"].shape[1], ep["u"].device
    rand = lambda *k: torch.rand(n, *k, dtype=torch.float64, device=device)  # noqa: E731
    e, t = (rand() * n_eps).long(), (rand() * T).long()  # uniform episode, uniform step (float64: never n_eps or T)
    # ALGO LOGIC: the candidates, (n, K, dim_g): future achieved goals of the same episode, t' uniform in {t+1, ..., T}
    # (ag has T+1 rows), then achieved goals of any stored episode (of the first n_eps) at any of its T+1 rows
    future_t = t[:, None] + 1 + (rand(n_candidates - n_buffer) * (T - t[:, None])).long()
    buffer_e, buffer_t = (rand(n_buffer) * n_eps).long(), (rand(n_buffer) * (T + 1)).long()
    goals = torch.cat([ep["ag"][e[:, None], future_t], ep["ag"][buffer_e, buffer_t]], 1)
    o, o_next, u, ag_next = ep["o"][e, t], ep["o"][e, t + 1], ep["u"][e, t], ep["ag"][e, t + 1]
    best = td_abs(o, o_next, u, ag_next, goals).argmax(1) if n_candidates > 1 else torch.zeros_like(t)
    relabel = rand() < her_future_p  # with probability her_future_p the goal becomes the chosen candidate
    g = torch.where(relabel[:, None], goals[torch.arange(n, device=device), best], ep["g"][e, t])
    x = torch.stack([torch.cat([o, g], 1), torch.cat([o_next, g], 1)])
    r = compute_reward(ag_next, g, {}).float()[:, None]  # the env's own reward, for the goal replayed
    return x, u, r, (relabel & (best >= n_candidates - n_buffer)).float()


def goal_td_errors(nets, norm, o, o_next, u, ag_next, goals, compute_reward, gamma, clip_return):
    """|TD error| (n, K) of each of n transitions under each of its K candidate goals (n, K, dim_g), with the current
    critic and target networks, the target as update() makes it (the env's reward for that goal, gamma, the clip):
    no gradient, the n*K rows in one forward pass."""
    actor, critic, actor_target, critic_target = nets
    n, k, dim_g = goals.shape
    rows = lambda v: v[:, None].expand(n, k, v.shape[1]).reshape(n * k, v.shape[1])  # noqa: E731  (row i*K+j: i)
    g = goals.reshape(n * k, dim_g)
    with torch.no_grad():
        r = compute_reward(rows(ag_next), g, {}).float()[:, None]
        x = norm(torch.stack([torch.cat([rows(o), g], 1), torch.cat([rows(o_next), g], 1)]))
        target = (r + gamma * critic_target(x[1], actor_target(x[1]))).clamp_(-clip_return, 0.0)
        return (target - critic(x[0], rows(u))).abs().view(n, k)


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

    def sample(self, n, her_future_p, n_candidates, n_buffer, td_abs, compute_reward):
        return sample_goal_td(self.ep, self.n_eps, n, her_future_p, n_candidates, n_buffer, td_abs, compute_reward)


def update(nets, optimizer, norm, x, u, r, gamma, clip_return, action_l2):
    """One gradient step of actor and critic on x = [[o, g], [o', g]] (2, B, dim), u (B, dim_u), r (B, 1). Both
    gradients come from the same parameters, applied by one Adam step (as in Baselines). Returns [a_loss, c_loss, Q]."""
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
    # ALGO LOGIC: the candidates, K - m future goals and m buffer goals
    if args.n_candidates < 1 or not 0.0 <= args.buffer_goal_frac <= 1.0:
        fail(f"--n-candidates must be >= 1 and --buffer-goal-frac in [0, 1], got {args.n_candidates} and "
             f"{args.buffer_goal_frac}")
    n_buffer = round(args.n_candidates * args.buffer_goal_frac)
    if abs(n_buffer - args.n_candidates * args.buffer_goal_frac) > 1e-9:
        fail(f"--buffer-goal-frac {args.buffer_goal_frac} of --n-candidates {args.n_candidates} is not a whole number "
             "of candidates")

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
    critic = Critic(dims["x"], dims["u"], args.hidden, args.n_layers, max_u, compute.bf16).to(device)
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
    stats = torch.zeros(4, device=device)  # sums of [actor loss, critic loss, Q, buffer goals' share] over an epoch

    def td_abs(o, o_next, u, ag_next, goals):  # each candidate's |TD error| with the networks as they are now
        return goal_td_errors(nets, norm, o, o_next, u, ag_next, goals, compute_reward, gamma, clip_return)

    def train_batch():  # one update: a HER-relabelled batch, its rewards, a gradient step; all on `device`
        x, u, r, from_buffer = replay.sample(args.batch_size, her_future_p, args.n_candidates, n_buffer, td_abs,
                                             compute_reward)  # the goals of largest |TD error|, their rewards
        stats[:3].add_(update(nets, optimizer, norm, x, u, r, gamma, clip_return, args.action_l2))
        stats[3].add_(from_buffer.mean())

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
                f"{args.batch_size} per epoch; T={T}, gamma={gamma:.4f}, her_future_p={her_future_p}; {compute}")

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
            a_loss, c_loss, mean_q, buffer_share = (stats / (args.n_cycles * args.n_batches)).tolist()
            metrics = dict(epoch=epoch + 1, env_steps=global_step, episodes=episodes, updates=n_updates,
                           test_success=float(np.mean(test_success)) if test_success else float("nan"),
                           train_success=float(np.mean(train_success)), mean_q=mean_q, actor_loss=a_loss,
                           critic_loss=c_loss, sps=args.n_cycles * args.n_envs * T / train_time,
                           elapsed_s=run.elapsed(), collect_s=train_time - update_s, update_s=update_s, test_s=test_s,
                           buffer_goal_share=buffer_share)  # replayed goals that are buffer goals (of relabelled: / p)
            # metrics.csv, model.pt (what evaluate.py needs) and checkpoint.pt, safe from Ctrl-C and kill -9;
            # the epoch's line comes after them: a run stopped once it is printed keeps the epoch
            run.end_epoch(metrics, dict(dims=dims, max_u=max_u, actor=actor.state_dict(), normalizer=norm.state_dict()),
                          state, replay, rng, dict(step=global_step, episodes=episodes, updates=n_updates))
            run.log(f"epoch {epoch + 1}/{args.n_epochs} | steps {global_step:,} | episodes {episodes:,} | test success "
                    f"{metrics['test_success']:.3f} | train success {metrics['train_success']:.3f} | Q {mean_q:.2f} | "
                    f"actor loss {a_loss:.3f} | critic loss {c_loss:.4f} | {metrics['sps']:.0f} steps/s | "
                    f"{metrics['elapsed_s'] / 60:.1f} min")
    run.finish(global_step)
