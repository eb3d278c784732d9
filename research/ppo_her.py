# On-policy HER: PPO with hindsight goals, ddpg_her.py with PPO in place of DDPG and replay. It answers Plappert et al.
# 2018, section 2 ("Request for Research"), paragraph "On-policy HER": how to combine HER with PPO (Schulman et al.
# 2017), pointing to hindsight policy gradients (HPG: Rauber et al., "Hindsight policy gradients", ICLR 2019) and IPG
# (Gu et al. 2017). PPO as CleanRL's ppo_continuous_action.py: clipped surrogate, GAE, a Gaussian policy with a
# state-independent log-std, a value function, advantages normalised per minibatch, gradient norms clipped.
# Hindsight as HPG: every collected episode is also replayed with --replay-k alternative goals g', achieved goals of
# the same episode; its sparse rewards are recomputed by the env's compute_reward for g', and each of its steps t is
# weighted by HPG's per-decision importance weight w_t = prod_{k<=t} pi(a_k|s_k,g') / pi(a_k|s_k,g), self-normalised
# as HPG's weighted estimator: divided, at each step t, by its mean over the cycle's relabelled episodes (see
# hindsight_weights). The weighted samples join the episode's own (weight 1) in PPO's losses. --no-hindsight: PPO.
# What changes against ddpg_her.py (the rest, the normaliser, the env, the epochs and test rollouts, is ddpg_her.py's):
#  - No replay buffer, no target networks: a cycle's n_envs episodes (and their relabelled copies) make n_batches
#    minibatch steps of batch_size samples, drawn as shuffled passes over them (CleanRL's update epochs x minibatches;
#    defaults: 40 x 1024 samples, 10 passes over 16 x 50 x 5), and are then dropped. --buffer-size is accepted (the
#    grid's smoke budget passes it) and unused. An epoch is still n_cycles x n_envs episodes, 40,000 env steps.
#  - Goals: each alternative goal is the achieved goal at a step drawn uniformly from 1..T of the episode (HER's
#    'episode' strategy): a policy gradient needs one goal along an episode, which HER's per-step 'future' goals are
#    not. HPG relabels with every goal achieved in the whole batch instead (its "active goals"), and normalises per goal
#    over the episodes; goals of one episode each belong to that episode alone, so this file normalises per step over
#    all relabelled episodes of the cycle. Not clipped: one likely episode can carry a step's weight.
#  - HPG weights each reward by the ratios up to that reward's step; here the weight w_t of the state and action
#    (t) multiplies PPO's clipped surrogate and the value loss at t, and the GAE advantage of a relabelled step uses the
#    episode's later steps uncorrected (an actor-critic form, as IPG's; biased where pi(.|g') and pi(.|g) differ).
#  - The importance weights, the old log-probabilities and values are computed with the networks and normaliser of the
#    cycle's start (the normaliser updated with its data first, as ddpg_her.py), so PPO's ratio starts at 1.
#  - Actions: sampled from the Gaussian (unbounded, CleanRL), clipped to the action box for the env; the test action
#    and evaluate.py's is the mean, clipped. ddpg_her.py's noise_eps, random_eps, action_l2 and polyak are gone.
#  - The networks are ddpg_her.py's (3 x 256 ReLU, Glorot init); the mean's output layer is scaled by 0.01 (CleanRL's
#    std=0.01 init). The episode's end is a time limit: GAE bootstraps on V(o_T, g). The value targets are clipped to
#    [-1/(1-gamma), 0] (--clip-return, Baselines' range). Left out of CleanRL's: learning-rate annealing, value-loss
#    clipping, reward normalisation (rewards are -1 or 0); gradient norms are clipped per network, not jointly (the
#    value's loss, returns down to -50, would swamp the policy's). Adam's eps 1e-5, lr 3e-4 (CleanRL). Added to
#    CleanRL's: the dual clip (Ye et al. 2020, --dual-clip 3): a relabelled goal's action may be unlikely under that
#    goal, its ratio then grows without bound, and with a negative advantage PPO's clip leaves the loss unbounded
#    (a FetchPush run without it diverged, NaN actions, in its 15th epoch).
#   python research/ppo_her.py --env-id FetchReach-v0 --seed 1     train
#   python research/ppo_her.py --no-hindsight                      PPO alone, on the episodes' own goals
#   python research/ppo_her.py --resume runs/RUN_NAME              continue an interrupted run
#   python evaluate.py runs/RUN_NAME/model.pt --episodes 100       test a policy saved with --save-model
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for --capture-video; read when mujoco first renders
import contextlib
import math
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro

import envs  # registers FetchReach-v0, FetchPush-v0, ... and their ...Dense-v0 twins
from evaluate import test_episode
from run_plumbing import Run, check_args, fail, pick_compute  # what is not algorithm

DENSE = False  # this file's configuration: sparse rewards (the ...Dense-v0 ids belong to the *_dense.py scripts)
USE_HER = True  # this file's configuration: hindsight relabelling on (--no-hindsight: off)


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
    """cycles per epoch; a cycle = n_envs episodes (and their relabelled copies), then n_batches updates on them"""
    n_batches: int = 40
    """PPO minibatch updates (gradient steps) per cycle, shuffled passes over the cycle's samples (ddpg_her.py: 40)"""
    batch_size: int = 1024
    """samples (steps of original or relabelled episodes) per minibatch, at most the cycle's samples"""
    paper_budget: bool = False
    """ddpg_her.py's paper budget: n_envs=38, batch_size=19*256, (buffer_size=19*1e6, unused); and n_cycles=10 for
    FetchReach-v0, as Baselines' config.py"""
    n_test_rollouts: int = 10
    """test rounds per epoch, each n_envs deterministic episodes (paper: 10 per worker, 2 episodes each)"""
    buffer_size: int = 1_000_000
    """unused: PPO learns from each cycle's episodes and drops them (accepted for the grid's common options)"""
    actor_lr: float = 3e-4
    """Adam learning rate of the policy (mean network and log-std) (CleanRL's PPO: 3e-4)"""
    critic_lr: float = 3e-4
    """Adam learning rate of the value function (CleanRL's PPO: 3e-4)"""
    hidden: int = 256
    """units per hidden layer of policy and value networks (paper: 256)"""
    n_layers: int = 3
    """hidden layers of policy and value networks (paper: 3)"""
    clip_coef: float = 0.2
    """PPO's surrogate clipping coefficient epsilon: ratios clipped to [1 - eps, 1 + eps] (CleanRL: 0.2)"""
    dual_clip: float = 3.0
    """dual-clip PPO (Ye et al. 2020): a negative advantage's loss is at most dual_clip * |A| (0: off, CleanRL's)"""
    gae_lambda: float = 0.95
    """lambda of generalized advantage estimation (CleanRL: 0.95)"""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus (CleanRL's continuous PPO: 0)"""
    vf_coef: float = 0.5
    """coefficient of the value loss (CleanRL: 0.5)"""
    max_grad_norm: float = 0.5
    """gradient norm clip, per network (CleanRL: 0.5, both networks together)"""
    init_log_std: float = 0.0
    """initial log-std of the Gaussian policy, per action dimension (CleanRL: 0, std 1 of an action range of +-1)"""
    hindsight: bool = True
    """replay each episode also with --replay-k achieved goals, HPG-weighted; --no-hindsight: PPO on its own goals"""
    replay_k: int = 4
    """alternative goals per episode (relabelled copies; HER's k=4: 80% of the samples relabelled)"""
    clip_obs: float = 200.0
    """observations and goals are clipped to [-clip_obs, clip_obs] before normalising (paper: 200)"""
    norm_clip: float = 5.0
    """normalised inputs are clipped to [-norm_clip, norm_clip] (paper: 5)"""
    norm_eps: float = 0.01
    """lower bound of the normaliser's std (Baselines: 0.01)"""
    gamma: float | None = None
    """discount; None means 1 - 1/T with T the episode length (Baselines: 0.98 for 50 steps)"""
    clip_return: bool = True
    """clip the value targets to [-1/(1-gamma), 0], the range of possible returns (Baselines)"""
    env_threads: int = 0
    """threads of the batch that steps the n_envs envs (gym.make_vec: mujoco.batch, without the GIL); 0 = one per CPU"""
    torch_threads: int = 0
    """threads for updates (rollouts use one); 0 = PyTorch's default, one per physical core; 1 if jobs share cores"""
    cuda: bool = True
    """networks, replay buffer and updates on the GPU when there is one (the CPU otherwise; the first log line says)"""
    cudagraphs: bool = True
    """unused: the minibatch updates run eagerly (accepted for the common options)"""
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
    """write runs/RUN_NAME/checkpoint.pt every epoch (everything needed to resume)"""
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


class Actor(nn.Module):  # PPO (CleanRL): a Gaussian policy, its mean from a network, a log-std of its own (no input)
    def __init__(self, in_dim, act_dim, hidden, n_layers, max_u, bf16=False, init_log_std=0.0):
        super().__init__()
        self.net, self.max_u, self.bf16 = mlp(in_dim, act_dim, hidden, n_layers), max_u, bf16
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        with torch.no_grad():  # CleanRL: the mean's layer initialised with std 0.01, so that the first means are near 0
            self.net[-1].weight.mul_(0.01)

    def forward(self, x):  # the deterministic action: the mean, clipped to the action box (test rollouts, evaluate.py)
        return self.mean(x).clamp(-self.max_u, self.max_u)

    def mean(self, x):
        return mlp_forward(self.net, x, self.bf16)

    def sample(self, x):  # an exploring action, unbounded (CleanRL): the rollout clips it for the env
        mean = self.mean(x)
        return mean + self.log_std.exp() * torch.randn_like(mean)


def log_prob(mean, log_std, u):
    """log N(u; mean, diag(exp(log_std))^2), summed over the action's last axis."""
    return (-0.5 * ((u - mean) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class Critic(nn.Module):  # PPO: the value function V(o, g), no action
    def __init__(self, in_dim, hidden, n_layers, bf16=False):
        super().__init__()
        self.net, self.bf16 = mlp(in_dim, 1, hidden, n_layers), bf16

    def forward(self, x):
        return mlp_forward(self.net, x, self.bf16)[..., 0]


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


def hindsight_goals(ep, k):
    """The goals to replay each of the n episodes of `ep` (tensors o, ag: T+1 rows; g, u: T rows) with, (n, 1+k, T,
    dim_g): its own, then k achieved goals of the same episode, each at a step drawn uniformly from 1..T and kept along
    the whole episode (HER's 'episode' strategy; a policy gradient needs one goal along an episode)."""
    n, T = ep["u"].shape[:2]
    t = torch.randint(1, T + 1, (n, k), device=ep["u"].device)
    alternative = ep["ag"][torch.arange(n, device=t.device)[:, None], t]  # (n, k, dim_g)
    return torch.cat([ep["g"][:, None], alternative[:, :, None].expand(n, k, T, -1)], 1)


def hindsight_weights(logp, normalise=True):
    """HPG's per-decision importance weights of relabelled episodes, from logp (n, G, T): log pi(a_t|s_t, goal) under
    each episode's G goals, its own first. Row j > 0 of episode i at step t: w_t = prod_{k<=t} pi(a_k|s_k,g_j) /
    pi(a_k|s_k,g_0), in log space; with `normalise` (HPG's weighted estimator), divided by its mean over the n * (G-1)
    relabelled rows at the same step. The episodes' own rows weigh 1. Returns (n, G, T)."""
    n, G, T = logp.shape
    log_w = (logp[:, 1:] - logp[:, :1]).cumsum(-1)  # the per-decision product, prod_{k<=t}
    if normalise and G > 1:  # w / mean(w) over the relabelled rows at each t, without overflow: n (G-1) softmax
        w = torch.softmax(log_w.reshape(n * (G - 1), T), 0).reshape(n, G - 1, T) * (n * (G - 1))
    else:
        w = log_w.exp()
    return torch.cat([torch.ones_like(logp[:, :1]), w], 1)


def gae(r, v, gamma, lam):
    """Generalized advantage estimates (Schulman et al. 2016) along the last axis: rewards r (..., T), values v (...,
    T+1) of o_0..o_T. No episode ends before T, a time limit: the last step bootstraps on V(o_T)."""
    delta = r + gamma * v[..., 1:] - v[..., :-1]
    adv, last = torch.empty_like(r), torch.zeros_like(r[..., 0])
    for t in reversed(range(r.shape[-1])):
        last = delta[..., t] + gamma * lam * last
        adv[..., t] = last
    return adv


def clipped_surrogate(logp, logp_old, adv, w, clip_coef, dual_clip=0.0):
    """PPO's clipped surrogate loss, each sample weighted by w: mean of w max(-A r, -A clip(r, 1-eps, 1+eps)), r the
    probability ratio pi(a|s,g) / pi_old(a|s,g); with dual_clip c > 1, a negative advantage's loss is at most -c A
    (dual-clip PPO). Returns the loss and the log-ratios."""
    log_ratio = logp - logp_old
    # A relabelled goal's action can be far less likely under its goal than under the episode's: after an update its
    # ratio can grow without bound (exp overflowed in a FetchPush run), and with A < 0 PPO's clip leaves -A r
    # unbounded; the dual clip bounds it, and the ratio is taken from a log-ratio of at most 20 (no inf, no NaN).
    ratio = log_ratio.clamp(max=20.0).exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef))
    if dual_clip:
        loss = torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)
    return (w * loss).mean(), log_ratio


def update(actor, critic, optimizer, mb, clip_coef, ent_coef, vf_coef, max_grad_norm, dual_clip=0.0):
    """One PPO gradient step of policy and value function on a minibatch `mb`: normalised inputs x (B, dim), actions
    u, old log-probabilities logp, advantages adv, value targets ret, weights w (B). One Adam step for both, gradient
    norms clipped per network. Returns [policy loss, value loss, V, entropy, approx. KL, clip fraction]."""
    adv = (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)  # CleanRL: advantages normalised per minibatch
    logp = log_prob(actor.mean(mb["x"]), actor.log_std, mb["u"])
    pg_loss, log_ratio = clipped_surrogate(logp, mb["logp"], adv, mb["w"], clip_coef, dual_clip)
    v = critic(mb["x"])
    v_loss = 0.5 * (mb["w"] * (v - mb["ret"]).square()).mean()
    entropy = (actor.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()  # the Gaussian's, the same at every state
    optimizer.zero_grad(set_to_none=True)
    (pg_loss - ent_coef * entropy + vf_coef * v_loss).backward()
    for net in (actor, critic):
        nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
    optimizer.step()
    with torch.no_grad():  # CleanRL's diagnostics: the KL estimate (r - 1) - log r, the fraction of clipped ratios
        ratio = log_ratio.clamp(max=20.0).exp()
        approx_kl = (ratio - 1 - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    return torch.stack([pg_loss.detach(), v_loss.detach(), v.detach().mean(), entropy.detach(), approx_kl, clipfrac])


def cycle_samples(ep, actor, critic, norm, compute_reward, k, gamma, lam, clip_return, hindsight=True):
    """A cycle's samples from its n kept episodes `ep` (o, ag: T+1 rows; g, u: T rows): each episode with its own goal
    and, with hindsight, k achieved goals (hindsight_goals), its sparse rewards recomputed by the env's compute_reward
    for each goal; the normaliser updated with [o_t, g] of them all (as ddpg_her.py's: what the learner sees); then,
    with the networks as they are, the old log-probabilities, values, HPG weights, GAE advantages and value targets.
    Returns flat tensors, n * G * T rows, G = 1 + k goals per episode (1 without hindsight), the episode's own first."""
    n, T = ep["u"].shape[:2]
    goals = hindsight_goals(ep, k) if hindsight else ep["g"][:, None]  # (n, G, T, dim_g)
    G = goals.shape[1]
    r = compute_reward(ep["ag"][:, None, 1:].expand_as(goals), goals, {}).float()  # r_t = r(ag_{t+1}, g), (n, G, T)
    x = torch.cat([ep["o"][:, None].expand(n, G, T + 1, -1), torch.cat([goals, goals[:, :, -1:]], 2)], -1)
    norm.update(x[:, :, :T].reshape(n * G * T, -1))  # (row T, [o_T, g], is only the bootstrap's input)
    x = norm(x)
    u = ep["u"][:, None].expand(n, G, T, -1)
    with torch.no_grad():
        logp = log_prob(actor.mean(x[:, :, :T]), actor.log_std, u)  # log pi_old(a_t | o_t, g) for every goal g
        v = critic(x)
        w = hindsight_weights(logp)
        adv = gae(r, v, gamma, lam)
        ret = (adv + v[..., :T]).clamp(-clip_return, 0.0)  # the value targets: GAE's lambda-returns

    def flat(a):
        return a.reshape(n * G * T, *a.shape[3:])

    return dict(x=flat(x[:, :, :T]), u=flat(u), logp=flat(logp), adv=flat(adv), ret=flat(ret), w=flat(w), r=flat(r))


class NoReplay:
    """What run_plumbing's checkpoints save of a replay buffer: nothing, as PPO keeps no episode past its cycle."""

    def __init__(self, device):
        self.ep, self.n, self.unsaved, self.n_eps = {}, 0, np.zeros(0, bool), torch.zeros((), device=device)

    def store(self, batch, idx):
        pass


if __name__ == "__main__":
    args = tyro.cli(Args)
    run = Run(args, __file__)  # --resume: the saved options and the checkpoint (a finished run stops here)
    args = run.args
    if args.paper_budget:  # 19 MPI workers x 2 rollouts, 256 transitions per worker's batch, 1e6 per worker's buffer
        args.n_envs, args.batch_size, args.buffer_size = 38, 19 * 256, 19 * 1_000_000
        if args.env_id == "FetchReach-v0":  # Baselines' config.py: n_cycles=10 for 'FetchReach-v1' (exact id) only
            args.n_cycles = 10
    check_args(args, DENSE, USE_HER)
    for name, ok, rule in [("clip_coef", args.clip_coef > 0, "must be positive"),
                           ("dual_clip", args.dual_clip == 0 or args.dual_clip > 1, "must be 0 (off) or > 1"),
                           ("gae_lambda", 0 <= args.gae_lambda <= 1, "must be in [0, 1]"),
                           ("ent_coef", args.ent_coef >= 0, "must be >= 0"), ("vf_coef", args.vf_coef > 0,
                           "must be positive"), ("max_grad_norm", args.max_grad_norm > 0, "must be positive"),
                           ("init_log_std", math.isfinite(args.init_log_std), "must be finite")]:
        if not ok:
            fail(f"--{name.replace('_', '-')} {rule}, got {getattr(args, name)}")
    if args.hindsight and args.replay_k == 0:
        fail("--replay-k 0 gives no hindsight goal; use --no-hindsight for PPO on the episodes' own goals")
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
    k = args.replay_k if args.hindsight else 0  # alternative goals per episode
    max_u = float(env.action_space.high[0])
    dim_o, dim_g = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    dims = dict(o=dim_o, g=dim_g, ag=dim_g, x=dim_o + dim_g, u=env.action_space.shape[0])

    # TRY NOT TO MODIFY: seeding, device and threads (same seed and threads, same run on a CPU; resumes restore RNGs)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    compute = pick_compute(args)  # device (--cuda), bf16 matmuls, update and env threads
    device = compute.device
    run.start(dict(T=T, gamma=gamma, clip_return_value=clip_return, goals_per_episode=1 + k, dims=dims), compute)
    vec = envs.make_vec(args.env_id, args.n_envs, compute.env_threads)  # gym.make_vec: our ids in one mujoco.batch
    video_env = gym.make(args.env_id, render_mode="rgb_array") if args.capture_video else None  # one episode an epoch

    # ALGO LOGIC: networks, one Adam for both (two parameter groups); no target networks, no replay buffer
    actor = Actor(dims["x"], dims["u"], args.hidden, args.n_layers, max_u, compute.bf16, args.init_log_std).to(device)
    critic = Critic(dims["x"], args.hidden, args.n_layers, compute.bf16).to(device)
    optimizer = torch.optim.Adam([dict(params=actor.parameters(), lr=args.actor_lr),
                                  dict(params=critic.parameters(), lr=args.critic_lr)], eps=1e-5, fused=True)  # CleanRL
    norm = Normalizer(dims["x"], args.norm_eps, args.clip_obs, args.norm_clip, device)
    replay = NoReplay(device)  # (what the checkpoints save of a replay buffer: nothing)
    state = dict(actor=actor, critic=critic, optimizer=optimizer, normalizer=norm)  # what a checkpoint saves
    # sums over an epoch, no sync per update: [policy loss, value loss, V, entropy, approx. KL, clip fraction] per
    # update, and the relabelled samples' effective sample size fraction, (mean w)^2 / mean(w^2), per cycle
    stats, ess = torch.zeros(6, device=device), torch.zeros((), device=device)
    ep = {k: np.empty((args.n_envs, T + (k in ("o", "ag")), dims[k]), np.float32) for k in ("o", "ag", "g", "u")}

    def rollout(explore):
        """n_envs episodes of T steps: success flags at the last step (the paper's metric), episodes to keep."""
        obs, _ = vec.reset()
        keep = np.ones(args.n_envs, bool)
        for t in range(T):
            ep["o"][:, t], ep["ag"][:, t], ep["g"][:, t] = obs["observation"], obs["achieved_goal"], obs["desired_goal"]
            with torch.no_grad():
                x = torch.from_numpy(np.concatenate([ep["o"][:, t], ep["g"][:, t]], 1)).to(device)
                u = (actor.sample(norm(x)) if explore else actor(norm(x))).cpu().numpy()  # PPO: sampled actions
            ep["u"][:, t] = u  # (exploring: the Gaussian's sample, whose log-probability PPO needs; the env's, clipped)
            obs, _, terminated, truncated, info = vec.step(np.clip(u, -max_u, max_u))
            # An episode that the env ends before T, or whose simulation went unstable (MuJoCo reset it), is not stored.
            keep &= ~(terminated | (truncated if t < T - 1 else info.get("sim_unstable", False)))
        ep["o"][:, T], ep["ag"][:, T] = obs["observation"], obs["achieved_goal"]
        return np.asarray(info["is_success"], np.float64), keep

    if run.resumed:  # restore everything the next epoch depends on
        start_epoch, global_step, episodes, n_updates = run.restore(state, replay, rng)
    else:
        start_epoch, global_step, episodes, n_updates = 0, 0, 0, 0
        run.log(f"run {run.dir}: {args.env_id}, {args.n_envs} envs x {args.n_cycles} cycles = "
                f"{args.n_envs * args.n_cycles} episodes and {args.n_cycles * args.n_batches} PPO minibatch updates of "
                f"{args.batch_size} samples per epoch; T={T}, gamma={gamma:.4f}, "
                f"{f'hindsight: {k} achieved goals per episode' if k else 'no hindsight'}; {compute}")

    with run.guard(), contextlib.closing(vec):  # Ctrl-C, kill: completed epochs are kept; the log says how to go on
        for epoch in range(start_epoch, args.n_epochs):
            vec.reset(seed=args.seed * 100_000 + epoch * args.n_envs)  # seeded per epoch: resumes repeat runs exactly
            epoch_start, train_success, update_s = time.time(), [], 0.0
            stats.zero_(), ess.zero_()
            for cycle in range(args.n_cycles):
                if sys.stdout.isatty():  # a live count within the epoch, overwritten by the epoch's line (not logged)
                    print(f"epoch {epoch + 1}/{args.n_epochs}: cycle {cycle + 1}/{args.n_cycles}", end="\r", flush=True)
                success, keep = rollout(explore=True)
                train_success.append(success)
                global_step += args.n_envs * T
                episodes += args.n_envs
                new = {k: torch.from_numpy(v if keep.all() else v[keep]).to(device) for k, v in ep.items()}
                torch.set_num_threads(compute.update_threads)
                update_start = time.time()
                if len(new["u"]):  # (no episode kept: nothing to learn from)
                    data = cycle_samples(new, actor, critic, norm, compute_reward, k, gamma, args.gae_lambda,
                                         clip_return, args.hindsight)
                    if k:
                        w = data["w"].view(-1, 1 + k, T)[:, 1:]  # the relabelled samples' weights
                        ess.add_(w.mean().square() / w.square().mean())
                    # CleanRL's update epochs x minibatches: n_batches minibatches, shuffled passes over the samples
                    n, size = len(data["u"]), min(args.batch_size, len(data["u"]))
                    order = torch.cat([torch.randperm(n, device=device)
                                       for _ in range(math.ceil(args.n_batches * size / n))])
                    for b in range(args.n_batches):
                        mb = {key: value[order[b * size : (b + 1) * size]] for key, value in data.items()}
                        stats.add_(update(actor, critic, optimizer, mb, args.clip_coef, args.ent_coef, args.vf_coef,
                                          args.max_grad_norm, args.dual_clip))
                    n_updates += args.n_batches
                    if not torch.isfinite(stats).all():  # before a rollout acts on NaN weights (a sync per cycle)
                        fail(f"epoch {epoch + 1}, cycle {cycle + 1}: non-finite PPO losses or diagnostics "
                             f"{stats.tolist()}; try a lower --actor-lr or --critic-lr, or --dual-clip")
                if device.type == "cuda":
                    torch.cuda.synchronize()  # (time the updates as updates, not as the next rollout's wait)
                update_s += time.time() - update_start
                torch.set_num_threads(1)
            train_time, test_start = time.time() - epoch_start, time.time()
            test_success = [rollout(explore=False)[0] for _ in range(args.n_test_rollouts)]
            test_s = time.time() - test_start
            if args.capture_video:
                video = test_episode(video_env, actor, norm, epoch, f"videos/{run.name}/epoch{epoch + 1:03d}")[1]
                run.log(f"video of a test episode after epoch {epoch + 1}: {video}")
            a_loss, c_loss, mean_q, entropy, approx_kl, clipfrac = (stats / (args.n_cycles * args.n_batches)).tolist()
            if not all(map(math.isfinite, (a_loss, c_loss, mean_q, entropy))):  # never a silent NaN
                fail(f"epoch {epoch + 1}: non-finite losses (policy {a_loss}, value {c_loss}, V {mean_q}, entropy "
                     f"{entropy}); try a lower --actor-lr or --critic-lr")
            metrics = dict(epoch=epoch + 1, env_steps=global_step, episodes=episodes, updates=n_updates,
                           test_success=float(np.mean(test_success)) if test_success else float("nan"),
                           train_success=float(np.mean(train_success)), mean_q=mean_q, actor_loss=a_loss,
                           critic_loss=c_loss, entropy=entropy, approx_kl=approx_kl, clipfrac=clipfrac,
                           std=actor.log_std.exp().mean().item(),  # PPO: mean_q is V; actor_loss the surrogate's
                           weight_ess=ess.item() / args.n_cycles if k else float("nan"),
                           sps=args.n_cycles * args.n_envs * T / train_time,
                           elapsed_s=run.elapsed(), collect_s=train_time - update_s, update_s=update_s, test_s=test_s)
            # metrics.csv, model.pt (what evaluate.py needs) and checkpoint.pt, safe from Ctrl-C and kill -9;
            # the epoch's line comes after them: a run stopped once it is printed keeps the epoch
            run.end_epoch(metrics, dict(dims=dims, max_u=max_u, actor=actor.state_dict(), normalizer=norm.state_dict()),
                          state, replay, rng, dict(step=global_step, episodes=episodes, updates=n_updates))
            run.log(f"epoch {epoch + 1}/{args.n_epochs} | steps {global_step:,} | episodes {episodes:,} | test success "
                    f"{metrics['test_success']:.3f} | train success {metrics['train_success']:.3f} | V {mean_q:.2f} | "
                    f"policy loss {a_loss:.3f} | value loss {c_loss:.4f} | std {metrics['std']:.3f} | KL "
                    f"{approx_kl:.4f} | weight ESS {metrics['weight_ess']:.3f} | {metrics['sps']:.0f} steps/s | "
                    f"{metrics['elapsed_s'] / 60:.1f} min")
    run.finish(global_step)
