# Hierarchical Actor-Critic (HAC; Levy et al. 2019, "Learning Multi-Level Hierarchies with Hindsight") with two levels,
# each DDPG + HER as in ddpg_her.py, and the extension that Plappert et al. 2018 propose in section 2 ("Request for
# Research"), paragraph "HER+HRL": "replace in hindsight not only goals, but also higher-level actions": if the high
# level asked the low level for A and it reached B, the transition is replayed with the action B.
# Every --subgoal-horizon H steps the high level, an actor on [o, g], picks a subgoal in the achieved-goal space, in a
# box around the table; for the next H steps the low level, an actor on [o, subgoal], acts toward it, rewarded by the
# env's own compute_reward with the subgoal as the goal (T = 50, H = 10: 5 subgoals an episode). HAC's three kinds of
# transition:
#  - hindsight actions: the high level's transition stores as its action the achieved goal at the end of the H steps
#    where the subgoal was missed (Levy: the subgoal itself where it was reached, as here);
#  - hindsight goals: HER 'future' relabelling at both levels: the low level's within its H-step window (its episode),
#    the high level's over the ends of the later windows;
#  - subgoal testing: with probability --subgoal-test-p a subgoal is tested: the low level acts without noise for its H
#    steps, and if it misses the subgoal the high level gets a transition with the proposed subgoal, reward -H and
#    discount 0 (no bootstrap), whose goal is not relabelled (as Levy's).
# Where this departs from Levy et al. (paper and code, github.com/andrew-j-levy/Hierarchical-Actor-Critc-HAC-):
#  - two levels (their experiments: up to 3), each with ddpg_her.py's networks, normaliser, update (its action L2
#    too), polyak target networks, exploration (--noise-eps, --random-eps; the high level's in its [-1, 1] box
#    coordinates) and budget (epochs, cycles, batches: each update is one gradient step of each level), not theirs
#    (64-unit networks, a sigmoid-bounded critic, no target networks, their episodes and batch counts);
#  - the low level always takes H steps (theirs stops early at its subgoal), so an episode has T/H subgoals and the envs
#    step in lockstep; no terminal transitions at a reached goal (Baselines' HER; theirs: discount 0 there);
#  - their bound on Q, [-H, 0], is the clip of both levels' targets (Baselines': [-1/(1-gamma), 0]); gamma is
#    ddpg_her.py's 1 - 1/T at both levels (theirs: 0.98, the same for T = 50);
#  - HER: Baselines' 'future' with k = 4 at both levels (theirs: 3 goals from the level's states, the last always);
#  - one replay buffer of whole episodes (ddpg_her.py's) from which each level samples its own transitions; a window
#    whose tested subgoal was missed gives its penalty or its hindsight-action transition with probability 1/2 each
#    (their buffer holds both, each as likely as any other transition);
#  - the subgoal box is the bounding box of the desired and initial achieved goals of 200 seeded resets, widened by
#    --subgoal-margin on each side (theirs: set by hand per environment).
# evaluate.py runs one actor on [o, g]; this policy is two, each with its own normaliser, and holds a subgoal for H
# steps, so evaluate.py stops on its model.pt with a message; the run's test success is metrics.csv's test_success.
#   python research/hac_her.py --env-id FetchPush-v0 --seed 1
#   python research/hac_her.py --subgoal-horizon 5 --subgoal-test-p 0.5
#   python research/hac_her.py --no-hindsight-actions    the ablation: missed subgoals stored as proposed
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
from run_plumbing import Run, check_args, cuda_graph, explain_oom, fail, pick_compute  # what is not algorithm

NO_ACTOR = ("hac_her.py's policy has two levels (a subgoal every --subgoal-horizon steps; each level its own actor "
            "and normaliser), and evaluate.py runs one actor on [o, g]; the run's test success is in its metrics.csv")
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
    """discount of both levels; None means 1 - 1/T with T the episode length (Baselines and Levy et al.: 0.98)"""
    clip_return: bool = True
    """clip both levels' targets to [-H, 0] with H the --subgoal-horizon (Levy et al.'s bound on Q)"""
    subgoal_horizon: int = 10
    """H: the low level's steps toward each subgoal (a divisor of the episode length T): T/H subgoals an episode"""
    subgoal_test_p: float = 0.3
    """probability that a subgoal is tested: the low level acts without noise, and if it misses, the high level gets
    reward -H with no bootstrap (Levy et al.: 0.3)"""
    hindsight_actions: bool = True
    """the high level's transitions store a missed subgoal as the goal reached instead (the paper's proposal);
    --no-hindsight-actions: as the subgoal proposed (the ablation)"""
    subgoal_margin: float = 0.05
    """the subgoal box: the bounding box of the goals of 200 seeded resets, widened by this on each side (goal units)"""
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
    """(refused: evaluate.py's test episode runs one actor, not this two-level policy)"""
    save_model: bool = False
    """write runs/RUN_NAME/model.pt every epoch: both levels' actors and normalisers, the subgoal box and config"""
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


def sample_transitions(ep, n_eps, n, her_future_p, H):
    """n low-level transitions from the first n_eps episodes of `ep` (tensors o, ag: T+1 rows; g, u: T rows; sg: T/H
    rows, the subgoals) with HER 'future' relabelling (Baselines' her_sampler.py), on ep's device, with no loop and no
    host sync (n_eps may be a tensor). The goal is the subgoal of the H-step window holding step t (the low level's
    episode). Returns [[o, g'], [o', g']] as one (2, n, dim_o + dim_g) tensor, the actions, the next achieved goals."""
    T, rand = ep["u"].shape[1], lambda: torch.rand(n, dtype=torch.float64, device=ep["u"].device)
    e, t = (rand() * n_eps).long(), (rand() * T).long()  # uniform episode, uniform step (float64: never n_eps or T)
    # With probability her_future_p the goal becomes an achieved goal of a later step of the same H-step window,
    # t' uniform in {t+1, ..., (t // H + 1) H}: the window's last row is its final state (Levy: HER within the level's
    # episode, its H steps toward one subgoal).
    future_t = t + 1 + (rand() * ((t // H + 1) * H - t)).long()
    g = torch.where((rand() < her_future_p)[:, None], ep["ag"][e, future_t], ep["sg"][e, t // H])
    x = torch.stack([torch.cat([ep["o"][e, t], g], 1), torch.cat([ep["o"][e, t + 1], g], 1)])
    return x, ep["u"][e, t], ep["ag"][e, t + 1]


def sample_high_transitions(ep, n_eps, n, her_future_p, H):
    """n high-level transitions, one per H-step window k of an episode's T/H: [o_kH, g'] -> [o_(k+1)H, g'], its action
    in hindsight (hu: the subgoal, or the goal achieved instead) and the next achieved goal ag_(k+1)H; HER 'future'
    relabelling over the ends of the later windows. A window whose tested subgoal was missed gives, with probability
    1/2, its penalty transition instead: the proposed subgoal (sg), the episode's goal. Returns x (2, n, dim_o + dim_g),
    the actions (in goal units), the next achieved goals, and the penalty flags (n, 1)."""
    K, rand = ep["hu"].shape[1], lambda: torch.rand(n, dtype=torch.float64, device=ep["u"].device)
    e, k = (rand() * n_eps).long(), (rand() * K).long()
    penalty = (ep["penalty"][e, k] > 0) & (rand() < 0.5)[:, None]
    future_k = k + 1 + (rand() * (K - k)).long()  # k' uniform in {k+1, ..., K}: ag row k'H ends window k'-1
    her = (rand() < her_future_p)[:, None] & ~penalty  # Levy: penalty transitions keep the episode's goal
    g = torch.where(her, ep["ag"][e, future_k * H], ep["g"][e, k * H])
    x = torch.stack([torch.cat([ep["o"][e, k * H], g], 1), torch.cat([ep["o"][e, (k + 1) * H], g], 1)])
    return x, torch.where(penalty, ep["sg"][e, k], ep["hu"][e, k]), ep["ag"][e, (k + 1) * H], penalty


class EpisodeReplay:
    """Whole episodes in preallocated tensors on the learner's device (Baselines' replay_buffer.py)."""

    def __init__(self, size_in_transitions, T, dims, rng, device="cpu", H=1):
        self.size, self.n, self.rng = size_in_transitions // T, 0, rng
        # o and ag keep the final observation of each episode too: T + 1 rows. Both levels' data: the low level's
        # actions u; per H-step window the subgoal proposed (sg), the high level's action in hindsight (hu), and the
        # penalty flag of a tested subgoal that was missed.
        shapes = dict(o=(T + 1, dims["o"]), ag=(T + 1, dims["ag"]), g=(T, dims["g"]), u=(T, dims["u"]),
                      sg=(T // H, dims["g"]), hu=(T // H, dims["g"]), penalty=(T // H, 1))
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


def subgoal_box(env, margin, n=200):
    """The box subgoals lie in, (lo, hi) float32 arrays: the bounding box of the desired and initial achieved goals of
    n seeded resets of env (the task's goal range, the objects' start positions), widened by margin on each side."""
    goals = np.array([obs[key] for seed in range(n) for obs in [env.reset(seed=seed)[0]]
                      for key in ("desired_goal", "achieved_goal")])
    return (goals.min(0) - margin).astype(np.float32), (goals.max(0) + margin).astype(np.float32)


def to_subgoal(a, lo, hi):  # the high actor's action in [-1, 1] (per coordinate) -> a subgoal in the box [lo, hi]
    return lo + (a + 1) * (hi - lo) / 2


def to_action(subgoal, lo, hi):  # a subgoal (or a goal achieved in hindsight) -> the high critic's action coordinates
    return 2 * (subgoal - lo) / (hi - lo) - 1


def hindsight_action(subgoal, ag_end, testing, compute_reward, replace=True):
    """After the low level's H steps toward `subgoal` (n, dim_g), which ended at the achieved goal ag_end: the high
    level's action in hindsight (ag_end where the subgoal was missed: the paper's proposal and Levy's hindsight action;
    the subgoal itself where it was reached, as Levy's), the penalty flags (n, 1) of the tested subgoals (testing, (n,))
    that were missed, and whether each was reached (n,), by the low level's own reward at its last step. (replace
    False: the subgoal, always.)"""
    reached = compute_reward(ag_end, subgoal, {}) == 0
    return np.where(reached[:, None] | (not replace), subgoal, ag_end), (testing & ~reached)[:, None], reached


def high_rewards(ag_next, g, penalty, compute_reward, H, gamma):
    """The high level's rewards and discounts (B, 1): a penalty transition's -H with discount 0, no bootstrap (Levy's
    subgoal testing); else the env's reward for the goal g, with gamma."""
    r = compute_reward(ag_next, g, {}).float()[:, None]
    return torch.where(penalty, -float(H), r), gamma * (1.0 - penalty.float())


def update(nets, optimizer, norm, x, u, r, gamma, clip_return, action_l2):
    """One gradient step of actor and critic on x = [[o, g], [o', g]] (2, B, dim), u (B, dim_u), r (B, 1), and gamma a
    number or (B, 1) (the high level's penalty transitions: 0). Both gradients come from the same parameters, applied
    by one Adam step (as in Baselines). Returns [a_loss, c_loss, Q]."""
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
    # ALGO LOGIC: the hierarchy's options; K = T/H subgoals an episode
    H = args.subgoal_horizon
    if H < 1 or T % H:
        fail(f"--subgoal-horizon {H} must divide the episode length T = {T} (e.g. 5, 10, 25)")
    if not 0.0 <= args.subgoal_test_p <= 1.0 or args.subgoal_margin <= 0:  # (0: a flat box on Push, z / 0 = NaN)
        fail(f"--subgoal-test-p must be in [0, 1] and --subgoal-margin > 0, got {args.subgoal_test_p} and "
             f"{args.subgoal_margin}")
    if args.capture_video:
        fail("--capture-video records evaluate.py's test episode of one actor on [o, g], which this two-level policy "
             "is not")
    K = T // H
    clip_return = float(H) if args.clip_return else np.inf  # Levy: Q in [-H, 0] at every level (the penalty: -H)
    box_lo, box_hi = subgoal_box(env, args.subgoal_margin)
    her_future_p = 1.0 - 1.0 / (1.0 + args.replay_k) if USE_HER else 0.0  # Baselines' her_sampler.py
    max_u = float(env.action_space.high[0])
    dim_o, dim_g = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    dims = dict(o=dim_o, g=dim_g, ag=dim_g, x=dim_o + dim_g, u=env.action_space.shape[0])  # both levels' x: [o, goal]
    if args.buffer_size < args.n_envs * T:
        fail(f"--buffer-size {args.buffer_size} cannot hold one cycle of {args.n_envs} episodes of {T} steps")

    # TRY NOT TO MODIFY: seeding, device and threads (same seed and threads, same run on a CPU; resumes restore RNGs)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    compute = pick_compute(args)  # device (--cuda), bf16 matmuls, update and env threads
    device = compute.device
    run.start(dict(T=T, gamma=gamma, clip_return_value=clip_return, her_future_p=her_future_p, dims=dims,
                   subgoals_per_episode=K, subgoal_box=[box_lo.tolist(), box_hi.tolist()]), compute)
    vec = envs.make_vec(args.env_id, args.n_envs, compute.env_threads)  # gym.make_vec: our ids in one mujoco.batch

    # ALGO LOGIC: per level, networks, one Adam for both (two parameter groups), target networks, a normaliser. The
    # low level acts in the env's action box; the high level in [-1, 1] per coordinate of the subgoal box.
    def level(act_dim, max_action):
        actor = Actor(dims["x"], act_dim, args.hidden, args.n_layers, max_action, compute.bf16).to(device)
        critic = Critic(dims["x"], act_dim, args.hidden, args.n_layers, max_action, compute.bf16).to(device)
        optimizer = torch.optim.Adam([dict(params=actor.parameters(), lr=args.actor_lr),
                                      dict(params=critic.parameters(), lr=args.critic_lr)], fused=True,
                                     capturable=compute.cudagraphs)  # its step count on the GPU, for CUDA graphs
        norm = Normalizer(dims["x"], args.norm_eps, args.clip_obs, args.norm_clip, device)
        return (actor, critic, copy.deepcopy(actor), copy.deepcopy(critic)), optimizer, norm

    low_nets, low_optimizer, low_norm = level(dims["u"], max_u)
    high_nets, high_optimizer, high_norm = level(dims["g"], 1.0)
    low_actor, high_actor = low_nets[0], high_nets[0]
    main_params = [p for nets in (low_nets, high_nets) for net in nets[:2] for p in net.parameters()]
    target_params = [p for nets in (low_nets, high_nets) for net in nets[2:] for p in net.parameters()]
    box = [torch.from_numpy(b).to(device) for b in (box_lo, box_hi)]  # the updates' copy of the subgoal box
    replay = EpisodeReplay(args.buffer_size, T, dims, rng, device, H)
    levels = dict(low=(*low_nets, low_optimizer, low_norm), high=(*high_nets, high_optimizer, high_norm))
    parts = ("actor", "critic", "actor_target", "critic_target", "optimizer", "normalizer")
    state = {f"{name}_{part}": obj for name, objs in levels.items()  # what a checkpoint saves and a resume restores
             for part, obj in zip(parts, objs)}
    stats = torch.zeros(6, device=device)  # sums of [actor loss, critic loss, Q] of each level over an epoch

    def train_batch():  # one update of each level: HER-relabelled batches, their rewards, gradient steps; on `device`
        x, u, ag_next = sample_transitions(replay.ep, replay.n_eps, args.batch_size, her_future_p, H)
        r = compute_reward(ag_next, x[0, :, dims["o"] :], {}).float()[:, None]  # the env's own reward for the subgoal
        stats[:3] += update(low_nets, low_optimizer, low_norm, x, u, r, gamma, clip_return, args.action_l2)
        x, u, ag_next, penalty = sample_high_transitions(replay.ep, replay.n_eps, args.batch_size, her_future_p, H)
        r, gammas = high_rewards(ag_next, x[0, :, dims["o"] :], penalty, compute_reward, H, gamma)
        stats[3:] += update(high_nets, high_optimizer, high_norm, x, to_action(u, *box), r, gammas, clip_return,
                            args.action_l2)

    if compute.cudagraphs:  # LeanRL: one graph launch instead of ~150 kernel launches (eager if capture fails)
        train_batch = cuda_graph(train_batch, run)
    ep = {k: np.empty((args.n_envs, T + (k in ("o", "ag")), dims[k]), np.float32) for k in ("o", "ag", "g", "u")}
    ep.update(sg=np.empty((args.n_envs, K, dim_g), np.float32), hu=np.empty((args.n_envs, K, dim_g), np.float32),
              penalty=np.empty((args.n_envs, K, 1), np.float32))

    def act(actor, norm, o, g):
        with torch.no_grad():
            return actor(norm(torch.from_numpy(np.concatenate([o, g], 1)).to(device))).cpu().numpy()

    def noisy(u, max_action):  # Baselines: Gaussian noise, clip, then with probability random_eps a uniform random one
        u = np.clip(u + args.noise_eps * max_action * rng.standard_normal(u.shape, np.float32), -max_action, max_action)
        return np.where(rng.random((len(u), 1)) < args.random_eps, rng.uniform(-max_action, max_action, u.shape), u)

    def rollout(explore):
        """n_envs episodes of T steps, a subgoal every H: success flags at the last step (the paper's metric), episodes
        to keep, and whether each subgoal was reached and penalised (n_envs, K)."""
        obs, _ = vec.reset()
        keep, reached = np.ones(args.n_envs, bool), np.zeros((args.n_envs, K), bool)
        for t in range(T):
            ep["o"][:, t], ep["ag"][:, t], ep["g"][:, t] = obs["observation"], obs["achieved_goal"], obs["desired_goal"]
            k = t // H
            if t % H == 0:  # ALGO LOGIC: the high level picks a subgoal in the box, and whether to test it
                a = act(high_actor, high_norm, ep["o"][:, t], ep["g"][:, t])
                ep["sg"][:, k] = to_subgoal(noisy(a, 1.0) if explore else a, box_lo, box_hi)
                testing = rng.random(args.n_envs) < args.subgoal_test_p if explore else np.zeros(args.n_envs, bool)
            u = act(low_actor, low_norm, ep["o"][:, t], ep["sg"][:, k])
            if explore:  # a tested subgoal: the low level acts without noise (Levy)
                u = np.where(testing[:, None], u, noisy(u, max_u))
            ep["u"][:, t] = u
            obs, _, terminated, truncated, info = vec.step(u)
            # An episode that the env ends before T, or whose simulation went unstable (MuJoCo reset it), is not stored.
            keep &= ~(terminated | (truncated if t < T - 1 else info.get("sim_unstable", False)))
            if t % H == H - 1:  # ALGO LOGIC: the H steps are over: the high level's action in hindsight, the penalty
                ep["hu"][:, k], ep["penalty"][:, k], reached[:, k] = hindsight_action(
                    ep["sg"][:, k], obs["achieved_goal"], testing, compute_reward, args.hindsight_actions)
        ep["o"][:, T], ep["ag"][:, T] = obs["observation"], obs["achieved_goal"]
        return np.asarray(info["is_success"], np.float64), keep, np.stack([reached, ep["penalty"][..., 0] > 0])

    if run.resumed:  # restore everything the next epoch depends on
        start_epoch, global_step, episodes, n_updates = run.restore(state, replay, rng)
    else:
        start_epoch, global_step, episodes, n_updates = 0, 0, 0, 0
        run.log(f"run {run.dir}: {args.env_id}, {args.n_envs} envs x {args.n_cycles} cycles = "
                f"{args.n_envs * args.n_cycles} episodes and {args.n_cycles * args.n_batches} updates of batch "
                f"{args.batch_size} per epoch and level; T={T}, H={H} ({K} subgoals an episode, in the box "
                f"{box_lo.astype(float).round(3).tolist()}..{box_hi.astype(float).round(3).tolist()}), "
                f"gamma={gamma:.4f}, her_future_p={her_future_p}; {compute}")

    with run.guard(), contextlib.closing(vec):  # Ctrl-C, kill: completed epochs are kept; the log says how to go on
        for epoch in range(start_epoch, args.n_epochs):
            vec.reset(seed=args.seed * 100_000 + epoch * args.n_envs)  # seeded per epoch: resumes repeat runs exactly
            epoch_start, train_success, subgoals, update_s = time.time(), [], [], 0.0
            stats.zero_()
            for cycle in range(args.n_cycles):
                if sys.stdout.isatty():  # a live count within the epoch, overwritten by the epoch's line (not logged)
                    print(f"epoch {epoch + 1}/{args.n_epochs}: cycle {cycle + 1}/{args.n_cycles}", end="\r", flush=True)
                success, keep, reached_penalised = rollout(explore=True)
                train_success.append(success)
                subgoals.append(reached_penalised)
                global_step += args.n_envs * T
                episodes += args.n_envs
                new = {k: torch.from_numpy(v if keep.all() else v[keep]).to(device) for k, v in ep.items()}
                replay.store(new)
                # Baselines: the normalisers see the new episodes as the learners will, i.e. HER-relabelled goals.
                low_norm.update(sample_transitions(new, len(new["u"]), len(new["u"]) * T, her_future_p, H)[0][0])
                high_norm.update(sample_high_transitions(new, len(new["u"]), len(new["u"]) * K, her_future_p, H)[0][0])
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
            a_loss, c_loss, mean_q, high_a_loss, high_c_loss, high_q = (
                stats / (args.n_cycles * args.n_batches)).tolist()
            subgoal_success, subgoal_penalties = np.concatenate(subgoals, 1).mean((1, 2)).tolist()
            metrics = dict(epoch=epoch + 1, env_steps=global_step, episodes=episodes, updates=n_updates,
                           test_success=float(np.mean(test_success)) if test_success else float("nan"),
                           train_success=float(np.mean(train_success)), mean_q=mean_q, actor_loss=a_loss,
                           critic_loss=c_loss, sps=args.n_cycles * args.n_envs * T / train_time,
                           elapsed_s=run.elapsed(), collect_s=train_time - update_s, update_s=update_s, test_s=test_s,
                           subgoal_success=subgoal_success, subgoal_penalties=subgoal_penalties, high_mean_q=high_q,
                           high_actor_loss=high_a_loss, high_critic_loss=high_c_loss)
            # metrics.csv, model.pt (both levels: evaluate.py's one actor is not enough, see the top) and checkpoint.pt,
            # safe from Ctrl-C and kill -9; the epoch's line comes after them: a run stopped once it is printed keeps it
            model = dict(dims=dims, max_u=max_u, subgoal_horizon=H, subgoal_box=np.stack([box_lo, box_hi]),
                         no_actor=NO_ACTOR,  # evaluate.py says this, where it would run one actor
                         **{name: state[name].state_dict() for name in ("low_actor", "low_normalizer", "high_actor",
                                                                        "high_normalizer")})
            run.end_epoch(metrics, model, state, replay, rng, dict(step=global_step, episodes=episodes,
                                                                   updates=n_updates))
            run.log(f"epoch {epoch + 1}/{args.n_epochs} | steps {global_step:,} | episodes {episodes:,} | test success "
                    f"{metrics['test_success']:.3f} | train success {metrics['train_success']:.3f} | subgoals reached "
                    f"{subgoal_success:.3f} | Q {mean_q:.2f}, high {high_q:.2f} | "
                    f"actor loss {a_loss:.3f} | critic loss {c_loss:.4f} | {metrics['sps']:.0f} steps/s | "
                    f"{metrics['elapsed_s'] / 60:.1f} min")
    run.finish(global_step)
