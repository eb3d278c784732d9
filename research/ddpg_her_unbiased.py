# DDPG + HER with the paper's test of HER's bias and an importance-sampling correction: ddpg_her.py changed only where
# this idea needs it. Plappert et al. 2018, section 2 ("Request for Research"), paragraph "Unbiased HER": HER changes
# the joint distribution of replayed (s, a, s', g); with "a special action which takes the agent to a random state" the
# action "would seem to be perfect in hindsight", and "importance sampling to cancel the sampling bias" might help but
# "would probably lead to prohibitively high variance". Both halves, each behind an option:
#  - --teleport (Fetch tasks; FetchReach-v0 is the one to use): TeleportVectorEnv over the vector env adds one action
#    dimension; where it is > --teleport-threshold (0.93), the achieved goal (and its slice of the observation) jumps
#    to a random point drawn from the task's own goal distribution and stays there, actions ignored, for the rest of
#    the fixed-length episode.
#    The teleport reaches the desired goal by chance alone (FetchReach: 1.6% of its goals lie within 5 cm of another),
#    but the goal HER relabels it with always. FetchReach-v0 rather than FetchPush-v0: ddpg_her.py solves the plain
#    task within an epoch, so a success rate held down near 1.6% is the bias alone, on the cheapest task; and its goals
#    fill a 3-d box, where Push's lie on the table (there a random point lands within 5 cm of the goal 7.5% of the
#    time). The threshold is for exploration: at 0, its uniform random actions (--random-eps) teleport half the time,
#    and every training episode teleports within a few steps (train_teleport_rate 1.0 in a pilot), leaving almost no
#    reaching data; at 0.93 about 40% of exploring episodes teleport (the arithmetic at Args.teleport_threshold), and
#    the actor (tanh, range +-1) can still choose it. train_teleport_rate / test_teleport_rate: the fraction of
#    training / test episodes that teleport.
#    model.pt is not written with --teleport: evaluate.py makes the plain env, which has no teleport action.
#  - --correction is (the default; none: ddpg_her.py's update, the same run bit for bit): each replayed transition's
#    critic loss is weighted by p_task(g) / q(g | episode, t), the probability of its goal under the task's goal
#    distribution over that under the sampler that drew it, HER's mixture q = (1 - f) p_task + f p_future (f =
#    her_future_p; p_future: the achieved goals of steps t+1..T, uniform). The weight is the balance heuristic of
#    multiple importance sampling: one formula for every row, whichever part of the mixture drew its goal, and at most
#    1/(1 - f) = 5 before normalising, so the variance stays finite. Point masses (p_future) and densities (p_task) are
#    made comparable by smoothing both with the reward's own kernel, the eps-ball: M_task(g) = the fraction of the
#    batch's desired goals (task samples) within eps of g, M_future(g) = the fraction of steps t+1..T whose achieved
#    goal is within eps of g; w = M_task / ((1 - f) M_task + f M_future), then self-normalised to mean 1 over the
#    batch. A teleport's relabelled goal is the absorbing point, M_future = 1: its weight falls to about M_task / f
#    (~0.02). A relabelled goal outside the task's goals (M_task = 0) gets weight 0: the target is the task's goal
#    distribution. is_ess logs the effective sample size of the weights as a fraction of the batch (1: no correction).
#  - Departures: the weights correct the critic's loss alone (the bias enters through the Bellman target; the actor
#    maximises that critic at every replayed (s, g), as in ddpg_her.py); the eps-ball smoothing and the batch's own
#    desired goals as p_task's sample are this file's choices (the paper names no estimator).
#  - Not done: USHER (Schramm et al. 2023), which keeps HER's goals and weights each relabelled transition by
#    p(g | s, a) / p(g | s'), the density of the goal among the futures of (s, a) over that of s' (1 in a deterministic
#    env, so HER's speed is kept): its authors learn those densities with a second critic head (a least-squares
#    density loss over a time-remaining input) and a second, independently drawn goal per transition, with smoothing
#    and clipped ratios; more than this file's time box. The weights here come from HER's own sampler (no learned
#    density) and target the task's goals, at the price the paper predicts: relabelled goals, HER's gain, count
#    less. They are a heuristic, not an exact correction: the unrelabelled part of HER's mixture is the episode's own
#    desired goal (which depends on the trajectory), taken here as a fresh draw of the task's; and the batch's goals
#    that estimate p_task include the row's own.
#   python research/ddpg_her_unbiased.py --env-id FetchReach-v0 --teleport --correction none   HER's bias
#   python research/ddpg_her_unbiased.py --env-id FetchReach-v0 --teleport                     the correction
#   python research/ddpg_her_unbiased.py --env-id FetchPush-v0 --correction is                 its cost on a plain task
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for --capture-video; read when mujoco first renders
import contextlib
import copy
import sys
import time
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import envs  # registers FetchReach-v0, FetchPush-v0, ... and their ...Dense-v0 twins
from envs.fetch import FetchEnv  # --teleport's tasks
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
    teleport: bool = False
    """the paper's special action (Fetch tasks): one more action dimension; > --teleport-threshold sends the achieved
    goal to a random point of the task's goal distribution, where it stays to the end of the episode"""
    # The default from rollout()'s exploration (random_eps 0.3, noise_eps 0.2, max_u 1) with the policy's teleport
    # output near 0, as at the start: a step's action is uniform on [-1, 1] with probability 0.3, over the threshold h
    # with probability (1 - h) / 2; else the policy's output plus N(0, 0.2^2), over h with probability Q(h / 0.2) =
    # Q(4.65) ~ 2e-6, nothing. Per step p = 0.3 * 0.07 / 2 = 0.0105; over T = 50 steps 1 - (1 - p)^50 = 1 - 0.9895^50
    # = 0.41 of exploring episodes teleport (h 0.95: 0.31; 0.90: 0.53; h 0: p = 0.3 * 0.5 + 0.7 * 0.5 = 0.5, all of
    # them). The policy can still choose it: tanh outputs up to 1 (> 0.93 needs a pre-activation > 1.66), and an
    # output at h fires on 0.7 * 0.5 + 0.3 * 0.035 = 36% of exploring steps, every test step above it.
    teleport_threshold: float = 0.93
    """--teleport fires where its action dimension is > this fraction of the action range, in [0, 1); 0.93: ~40% of
    exploring 50-step episodes teleport; 0: the first version (exploration teleports every episode)"""
    correction: Literal["none", "is"] = "is"
    """none: HER's update as ddpg_her.py; is: each transition's critic loss weighted by p_task(g) / HER's q(g)"""


TELEPORT_STREAM = 7  # the teleports' generator: seeded with [seed, 7], never the stream of an env's seed


class TeleportVectorEnv:
    """A Fetch task's vector env with the paper's special action: actions get one more dimension; where it is
    > `threshold` (in action units) the env teleports, i.e. its achieved goal jumps to a point drawn from the task's
    goal distribution (`sample_goal(rng)`) and stays there to the end of the episode, whatever the actions; its
    observation freezes at that step, with the achieved goal's slice of it (`ag_slice`) at the new point. Reward and
    success are the task's, at that point. The teleports draw from a generator that reset(seed=s) seeds (resumes
    repeat runs exactly), a stream apart from the envs' own (seeded s + i: seeded with s alone, env 0's first teleport
    would land on its own desired goal)."""

    def __init__(self, vec, sample_goal, ag_slice, compute_reward, is_success, threshold):
        self.vec, self.sample_goal, self.ag_slice, self.threshold = vec, sample_goal, ag_slice, threshold
        self.compute_reward, self.is_success = compute_reward, is_success
        self.teleported = np.zeros(vec.num_envs, bool)  # in this episode, so far
        self.frozen = None  # the teleported envs' observations, then achieved goals
        self.rng = np.random.default_rng([0, TELEPORT_STREAM])

    def reset(self, seed=None):
        obs, info = self.vec.reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng([seed, TELEPORT_STREAM])
        self.teleported[:] = False
        self.frozen = {k: obs[k].copy() for k in ("observation", "achieved_goal")}
        return obs, info

    def step(self, u):
        # a teleported env's teleport dimension is ignored, as the rest
        go = (u[:, -1] > self.threshold) & ~self.teleported
        u = np.where(self.teleported[:, None], 0.0, u[:, :-1])  # (the env is still stepped: episodes keep length T)
        obs, reward, terminated, truncated, info = self.vec.step(u)
        for i in np.flatnonzero(go):  # the jump: a random point of the goal space, in the observation too
            self.frozen["achieved_goal"][i] = self.sample_goal(self.rng)
            self.frozen["observation"][i] = obs["observation"][i]
            self.frozen["observation"][i, self.ag_slice] = self.frozen["achieved_goal"][i]
        self.teleported |= go
        for k in ("observation", "achieved_goal"):  # absorbing: where it jumped, to the end of the episode
            obs[k][self.teleported] = self.frozen[k][self.teleported]
        reward = np.asarray(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], {}), np.float64)
        info = dict(info, is_success=np.asarray(self.is_success(obs["achieved_goal"], obs["desired_goal"]), np.float32))
        return obs, reward, terminated, truncated, info

    def close(self):
        self.vec.close()


def goal_slice(observation, achieved_goal):
    """Where the achieved goal sits in the observation (Fetch: the gripper's or the object's position)."""
    n = len(achieved_goal)
    starts = [i for i in range(len(observation) - n + 1) if np.array_equal(observation[i : i + n], achieved_goal)]
    return slice(starts[0], starts[0] + n) if starts else None


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
    Returns [[o, g'], [o', g']] as one (2, n, dim_o + dim_g) tensor, the actions, the next achieved goals, and each
    transition's episode and step (e, t), for the importance weights."""
    T, rand = ep["u"].shape[1], lambda: torch.rand(n, dtype=torch.float64, device=ep["u"].device)
    e, t = (rand() * n_eps).long(), (rand() * T).long()  # uniform episode, uniform step (float64: never n_eps or T)
    # With probability her_future_p the goal becomes an achieved goal of a later step of the same episode,
    # t' uniform in {t+1, ..., T}; ag has T+1 rows, so t' = T is the final state (Baselines' 'future' strategy).
    future_t = t + 1 + (rand() * (T - t)).long()
    g = torch.where((rand() < her_future_p)[:, None], ep["ag"][e, future_t], ep["g"][e, t])
    x = torch.stack([torch.cat([ep["o"][e, t], g], 1), torch.cat([ep["o"][e, t + 1], g], 1)])
    return x, ep["u"][e, t], ep["ag"][e, t + 1], (e, t)


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


def importance_weights(ep, e, t, g, task_goals, her_future_p, eps):
    """Each replayed transition's weight (B,), p_task(g) / q(g | episode e, step t), for goals g (B, dim_g) drawn by
    sample_transitions: q = (1 - f) p_task + f p_future, f = her_future_p, p_future uniform over the achieved goals of
    steps t+1..T. Both smoothed by the eps-ball: M_task(g), the fraction of task_goals (samples of p_task) within eps
    of g; M_future(g), the fraction of steps t+1..T whose achieved goal is within eps of g. Self-normalised: mean 1."""
    T = ep["u"].shape[1]
    m_task = (torch.cdist(g, task_goals, compute_mode="donot_use_mm_for_euclid_dist") < eps).float().mean(1)
    near = torch.linalg.vector_norm(ep["ag"][e] - g[:, None], dim=-1) < eps  # (B, T + 1): each step's achieved goal
    future = torch.arange(T + 1, device=g.device) > t[:, None]  # steps t+1..T
    m_future = (near & future).sum(1) / (T - t)
    # (never 0/0: g is the row's own desired goal, one of task_goals, or an achieved goal of steps t+1..T)
    w = m_task / ((1.0 - her_future_p) * m_task + her_future_p * m_future)
    return w / w.mean()


def update(nets, optimizer, norm, x, u, r, w, gamma, clip_return, action_l2):
    """One gradient step of actor and critic on x = [[o, g], [o', g]] (2, B, dim), u (B, dim_u), r (B, 1), with the
    critic's squared errors weighted by w (B,) (None: unweighted, ddpg_her.py's loss). Both gradients come from the
    same parameters, applied by one Adam step (as in Baselines). Returns [a_loss, c_loss, Q]."""
    actor, critic, actor_target, critic_target = nets
    x = norm(x)
    with torch.no_grad():
        q_next = critic_target(x[1], actor_target(x[1]))
        target = (r + gamma * q_next).clamp_(-clip_return, 0.0)  # Baselines: clip_return and clip_pos_returns
    q = critic(x[0], u)
    critic_loss = F.mse_loss(q, target) if w is None else (w[:, None] * (q - target).square()).mean()
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
    if not 0.0 <= args.teleport_threshold < 1.0:  # >= 1: never above the action range's top, max_u
        fail(f"--teleport-threshold {args.teleport_threshold}: must be in [0, 1), a fraction of the action range")
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
    # ALGO LOGIC: the teleport action (one more action dimension) and the importance weights' kernel, the reward's
    if args.teleport:
        if not isinstance(env.unwrapped, FetchEnv):
            fail(f"--teleport draws its points from a Fetch task's goal distribution; {args.env_id} is not one")
        if args.save_model or args.capture_video:
            fail("--teleport adds an action that evaluate.py's env (the plain task) does not have; run without "
                 "--save-model and --capture-video (checkpoint.pt keeps the actor)")
        ag_slice = goal_slice(*(env.reset(seed=0)[0][k] for k in ("observation", "achieved_goal")))
        if ag_slice is None:
            fail(f"--teleport: {args.env_id}'s observation does not hold its achieved goal")
        dims["u"] += 1
    eps = getattr(env.unwrapped, "distance_threshold", None)
    if args.correction == "is":  # the eps-ball kernel: the task's reward must be -[distance > eps]
        check = np.random.default_rng(0)  # goal pairs on both sides of the threshold
        g_check = check.normal(size=(2000, dim_g))
        ag_check = g_check + check.normal(size=g_check.shape) * (eps or 0.05)
        if eps is None or not np.array_equal(compute_reward(ag_check, g_check, {}),
                                             -(envs.goal_distance(ag_check, g_check) > eps).astype(np.float32)):
            fail(f"--correction is smooths goals with the reward's ball, -[distance > eps], which {args.env_id}'s "
                 "reward is not (its success has more than one threshold); use --correction none")

    # TRY NOT TO MODIFY: seeding, device and threads (same seed and threads, same run on a CPU; resumes restore RNGs)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    compute = pick_compute(args)  # device (--cuda), bf16 matmuls, update and env threads
    device = compute.device
    run.start(dict(T=T, gamma=gamma, clip_return_value=clip_return, her_future_p=her_future_p, dims=dims), compute)
    vec = envs.make_vec(args.env_id, args.n_envs, compute.env_threads)  # gym.make_vec: our ids in one mujoco.batch
    if args.teleport:
        vec = TeleportVectorEnv(vec, lambda g_rng: env.unwrapped._sample_goal(rng=g_rng), ag_slice,
                                env.unwrapped.compute_reward, env.unwrapped._is_success,
                                args.teleport_threshold * max_u)
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
    stats = torch.zeros(3, device=device)  # sums of [actor loss, critic loss, Q] over an epoch: no sync per update
    ess = torch.zeros((), device=device)  # sum of the weights' effective sample sizes (fractions of the batch)

    def train_batch():  # one update: a HER-relabelled batch, its rewards, a gradient step; all on `device`
        x, u, ag_next, (e, t) = replay.sample(args.batch_size, her_future_p)
        r = compute_reward(ag_next, x[0, :, dims["o"] :], {}).float()[:, None]  # the env's own reward, on tensors
        w = None
        if args.correction == "is":  # ALGO LOGIC: p_task(g) / HER's q(g); the batch's desired goals sample p_task
            g = x[0, :, dims["o"] :]
            w = importance_weights(replay.ep, e, t, g, replay.ep["g"][e, t], her_future_p, eps)
            ess.add_(1.0 / w.square().mean())  # (w has mean 1: ESS / B = 1 / mean(w^2))
        stats.add_(update(nets, optimizer, norm, x, u, r, w, gamma, clip_return, args.action_l2))

    if compute.cudagraphs:  # LeanRL: one graph launch instead of ~150 kernel launches (eager if capture fails)
        train_batch = cuda_graph(train_batch, run)
    ep = {k: np.empty((args.n_envs, T + (k in ("o", "ag")), dims[k]), np.float32) for k in ("o", "ag", "g", "u")}

    def rollout(explore):
        """n_envs episodes of T steps: success flags at the last step (the paper's metric), episodes to keep, and
        which episodes teleported (--teleport)."""
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
        teleported = vec.teleported.copy() if args.teleport else np.zeros(args.n_envs, bool)
        return np.asarray(info["is_success"], np.float64), keep, teleported

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
            epoch_start, train_success, update_s, train_teleport = time.time(), [], 0.0, []
            stats.zero_()
            ess.zero_()
            for cycle in range(args.n_cycles):
                if sys.stdout.isatty():  # a live count within the epoch, overwritten by the epoch's line (not logged)
                    print(f"epoch {epoch + 1}/{args.n_epochs}: cycle {cycle + 1}/{args.n_cycles}", end="\r", flush=True)
                success, keep, teleported = rollout(explore=True)
                train_success.append(success)
                train_teleport.append(teleported)
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
            tests = [rollout(explore=False) for _ in range(args.n_test_rollouts)]
            test_success, test_teleport = [test[0] for test in tests], [test[2] for test in tests]
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
                           # the fraction of episodes that teleported; the weights' effective batch fraction
                           test_teleport_rate=float(np.mean(test_teleport)) if test_teleport else float("nan"),
                           train_teleport_rate=float(np.mean(train_teleport)),
                           is_ess=(ess / (args.n_cycles * args.n_batches)).item() if args.correction == "is" else 1.0)
            # metrics.csv, model.pt (what evaluate.py needs) and checkpoint.pt, safe from Ctrl-C and kill -9;
            # the epoch's line comes after them: a run stopped once it is printed keeps the epoch
            run.end_epoch(metrics, dict(dims=dims, max_u=max_u, actor=actor.state_dict(), normalizer=norm.state_dict()),
                          state, replay, rng, dict(step=global_step, episodes=episodes, updates=n_updates))
            run.log(f"epoch {epoch + 1}/{args.n_epochs} | steps {global_step:,} | episodes {episodes:,} | test success "
                    f"{metrics['test_success']:.3f} | train success {metrics['train_success']:.3f} | Q {mean_q:.2f} | "
                    f"actor loss {a_loss:.3f} | critic loss {c_loss:.4f} | {metrics['sps']:.0f} steps/s | "
                    f"{metrics['elapsed_s'] / 60:.1f} min")
    run.finish(global_step)
