#!/usr/bin/env python
"""Do the tests catch the bugs they are named for? Break the code one line at a time and run the tests.

    python tests/mutation_check.py                   # every mutation below
    python tests/mutation_check.py --list            # their names, files and test selections
    python tests/mutation_check.py --only fetch_reach_target_range hand_reach_np_random
    python tests/mutation_check.py --only 'fetch_*' --skip '*@parity'   # shell-style patterns
    python tests/mutation_check.py --baseline        # first check that each selection passes unmutated

Each mutation replaces one exact text (which must occur exactly once) in one file of a scratch copy of the
repository: the working tree as it is, committed or not, without .git, runs/, .venv* (the reference venv of
tests/parity.py is linked in) and caches. The mutation's pytest selection then runs in the copy (with
PYTHONPATH on the copy, so the mutated `envs` is the one imported). CAUGHT: pytest reports failing tests (or a
collection error); SURVIVED: it passes. The copy is restored after each mutation and removed at the end.
Exit status: 0 when every mutation marked `must_catch` is caught, 1 otherwise, 2 on a set-up error.
"""

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = shutil.ignore_patterns(".git", "runs", ".venv*", "__pycache__", ".pytest_cache", "*.egg-info", "wandb",
                                "videos", ".benchmarks", "MUJOCO_LOG.TXT")

ENVS_FAST = ["tests/test_envs.py", "tests/test_hand_envs.py", "-x", "-q"]
PARITY = ["tests/test_parity.py", "-m", "parity", "-x", "-q"]
RELAY = ["tests/test_research_ddpg_her_relay.py", "-x", "-q", "-k", "not resumes and not bad_options"]
RELAY_NSTEP = ["tests/test_research_ddpg_her_relay_nstep.py", "-x", "-q", "-k", "not resumes and not bad_n_step"]
# a fork's own tests and, of tests/test_research_shared_parts.py, that fork's
GAMMA_EPS = ["tests/test_research_ddpg_her_gamma_eps.py", "-x", "-q"]
BATCH = ["tests/test_vector.py", "-x", "-q", "-k",
         "matches_sync_vector_env and (FetchPush-v0 or HandManipulateEggFull-v0)"]


def SHARED(fork):  # noqa: N802  (a selection, as the constants around it)
    return [f"tests/test_research_{fork}.py", "tests/test_research_shared_parts.py", "-x", "-q", "-k",
            f"not shared_parts or {fork}"]
PLOT = ["tests/test_plot.py", "-x", "-q", "-k", "groups_runs or orders_the_curves"]


def m(name, file, old, new, tests, description, must_catch=True, env=None):
    return dict(name=name, file=file, old=old, new=new, tests=tests, description=description, must_catch=must_catch,
                env=env or {})


MUTATIONS = [
    # ---- the breaks of issue 12 (each left the suite, or parity, green before) --------------------------------------
    m("hand_is_success_scalar", "envs/hand.py",
      "return xp.astype((d_pos < self.distance_threshold) & (d_rot < self.rotation_threshold), xp.float32)",
      "return np.float32(np.all((d_pos < self.distance_threshold) & (d_rot < self.rotation_threshold)))",
      ENVS_FAST, "HandManipulateEnv._is_success returns one scalar for a whole batch"),
    m("fetch_reach_target_range", "envs/fetch.py",
      "            target_range=0.15,\n            reward_type=reward_type,\n            **kwargs,\n        )\n\n\n"
      "class FetchPushEnv",
      "            target_range=0.10,\n            reward_type=reward_type,\n            **kwargs,\n        )\n\n\n"
      "class FetchPushEnv",
      ENVS_FAST, "FetchReach target_range 0.15 -> 0.10 (fast suite)"),
    m("fetch_reach_target_range@parity", "envs/fetch.py",
      "            target_range=0.15,\n            reward_type=reward_type,\n            **kwargs,\n        )\n\n\n"
      "class FetchPushEnv",
      "            target_range=0.10,\n            reward_type=reward_type,\n            **kwargs,\n        )\n\n\n"
      "class FetchPushEnv",
      PARITY, "FetchReach target_range 0.15 -> 0.10 (parity)", env={"PARITY_IDS": "FetchReach-v0"}),
    m("fetch_air_probability", "envs/fetch.py",
      "AIR_TARGET_PROBABILITY, AIR_TARGET_MAX_HEIGHT = 0.5, 0.45",
      "AIR_TARGET_PROBABILITY, AIR_TARGET_MAX_HEIGHT = 0.45, 0.45",
      ENVS_FAST, "PickAndPlace goals in the air 50% -> 45% (fast suite)"),
    m("fetch_air_probability@parity", "envs/fetch.py",
      "AIR_TARGET_PROBABILITY, AIR_TARGET_MAX_HEIGHT = 0.5, 0.45",
      "AIR_TARGET_PROBABILITY, AIR_TARGET_MAX_HEIGHT = 0.45, 0.45",
      PARITY, "PickAndPlace goals in the air 50% -> 45% (parity)", env={"PARITY_IDS": "FetchPickAndPlace-v0"}),
    m("render_raises", "envs/goal_env.py",
      "    def render(self):\n        if self.render_mode is None:",
      "    def render(self):\n        raise RuntimeError('broken render')\n        if self.render_mode is None:",
      ENVS_FAST, "GoalEnv.render raises RuntimeError"),
    m("action_shape_check_removed", "envs/goal_env.py",
      "if action.shape != self.action_space.shape:", "if False:",
      ENVS_FAST, "the action shape check removed"),
    m("action_shape_check_removed@hand", "envs/goal_env.py",
      "if action.shape != self.action_space.shape:", "if False:",
      ["tests/test_envs.py", "-x", "-q", "-k", "bad_actions and Hand"],
      "the same, against the 18 hand ids alone (numpy's broadcast error also says 'shape')"),
    m("hand_reach_np_random", "envs/hand.py",
      "if rng.uniform() < INITIAL_GOAL_PROBABILITY:", "if np.random.uniform() < INITIAL_GOAL_PROBABILITY:",
      ENVS_FAST, "HandReach's 10% initial-goal branch draws from np.random"),
    m("hand_reach_np_random@seeding", "envs/hand.py",
      "if rng.uniform() < INITIAL_GOAL_PROBABILITY:", "if np.random.uniform() < INITIAL_GOAL_PROBABILITY:",
      ["tests/test_envs.py", "-x", "-q", "-k", "seed_reproduces_goal_sampling and HandReach"],
      "the same, against the seeding test alone (gymnasium's env checker also catches it, by chance)"),
    m("fetch_air_np_random@seeding", "envs/fetch.py",
      "if self.target_in_the_air and rng.uniform() < AIR_TARGET_PROBABILITY:",
      "if self.target_in_the_air and np.random.uniform() < AIR_TARGET_PROBABILITY:",
      ["tests/test_envs.py", "-x", "-q", "-k", "seed_reproduces_goal_sampling and Fetch"],
      "PickAndPlace's air branch draws from np.random"),
    # ---- rewards and success --------------------------------------------------------------------------------------
    m("fetch_sparse_sign", "envs/fetch.py",
      "return -xp.astype(d > self.distance_threshold, xp.float32)  # float32 0/-1",
      "return xp.astype(d > self.distance_threshold, xp.float32)  # float32 0/-1",
      ENVS_FAST, "Fetch sparse reward +1/0 instead of -1/0"),
    m("fetch_dense_sign", "envs/fetch.py",
      "        return -d\n", "        return d\n", ENVS_FAST, "Fetch dense reward +d"),
    m("fetch_threshold", "envs/fetch.py",
      "DISTANCE_THRESHOLD = 0.05", "DISTANCE_THRESHOLD = 0.06", ENVS_FAST, "Fetch success radius 5 -> 6 cm"),
    m("fetch_success_threshold_only", "envs/fetch.py",
      "np.float32(goal_distance(achieved_goal, desired_goal) < self.distance_threshold)",
      "np.float32(goal_distance(achieved_goal, desired_goal) < 1.2 * self.distance_threshold)",
      ENVS_FAST, "Fetch is_success with another radius than the reward"),
    m("goal_distance_l1", "envs/goal_env.py",
      "return xp.sqrt(xp.sum(diff * diff, axis=-1))", "return xp.sum(xp.abs(diff), axis=-1)",
      ENVS_FAST, "goal distance L1 instead of Euclidean"),
    m("hand_position_threshold", "envs/hand.py",
      "POSITION_THRESHOLD = 0.01  # paper", "POSITION_THRESHOLD = 0.015  # paper", ENVS_FAST,
      "hand position radius 1 -> 1.5 cm"),
    m("pen_position_threshold", "envs/hand.py",
      "PEN_POSITION_THRESHOLD = 0.05", "PEN_POSITION_THRESHOLD = 0.04", ENVS_FAST, "pen position radius 5 -> 4 cm"),
    m("rotation_threshold", "envs/hand.py",
      "ROTATION_THRESHOLD = 0.1 ", "ROTATION_THRESHOLD = 0.12 ", ENVS_FAST, "rotation threshold 0.1 -> 0.12 rad"),
    m("hand_dense_weight", "envs/hand.py",
      "DENSE_POSITION_WEIGHT = 10.0", "DENSE_POSITION_WEIGHT = 1.0", ENVS_FAST, "dense -(d_pos + d_rot)"),
    m("hand_dense_rot_sign", "envs/hand.py",
      "return -(DENSE_POSITION_WEIGHT * d_pos + d_rot)", "return -(DENSE_POSITION_WEIGHT * d_pos) + d_rot",
      ENVS_FAST, "hand dense reward rewards rotation error"),
    m("hand_sparse_offset", "envs/hand.py",
      "return self._is_success(achieved_goal, desired_goal) - 1.0",
      "return self._is_success(achieved_goal, desired_goal)", ENVS_FAST, "hand sparse reward 0/1 instead of -1/0"),
    m("hand_reach_threshold", "envs/hand.py",
      "REACH_DISTANCE_THRESHOLD = 0.01", "REACH_DISTANCE_THRESHOLD = 0.02", ENVS_FAST, "HandReach radius 1 -> 2 cm"),
    m("hand_reach_dense", "envs/hand.py",
      "        return -d\n", "        return -d * d\n", ENVS_FAST, "HandReach dense -d^2"),
    m("pen_ignore_z_off", "envs/hand.py",
      "randomize_initial_rotation=False, ignore_z_target_rotation=True,",
      "randomize_initial_rotation=False, ignore_z_target_rotation=False,", ENVS_FAST,
      "pen counts rotation about its own axis"),
    # ---- goals and initial states ------------------------------------------------------------------------------
    m("slide_target_offset", "envs/fetch.py",
      "target_offset=[0.4, 0.0, 0.0],", "target_offset=[0.3, 0.0, 0.0],", ENVS_FAST, "FetchSlide target offset"),
    m("slide_target_range", "envs/fetch.py",
      "target_range=0.3,", "target_range=0.2,", ENVS_FAST, "FetchSlide target range 0.3 -> 0.2"),
    m("slide_obj_range", "envs/fetch.py",
      "obj_range=0.1,", "obj_range=0.15,", ENVS_FAST, "FetchSlide object range 0.1 -> 0.15"),
    m("push_obj_range", "envs/fetch.py",
      "            obj_range=0.15,\n            target_range=0.15,\n            reward_type=reward_type,\n"
      "            **kwargs,\n        )\n\n\nclass FetchSlideEnv",
      "            obj_range=0.1,\n            target_range=0.15,\n            reward_type=reward_type,\n"
      "            **kwargs,\n        )\n\n\nclass FetchSlideEnv", ENVS_FAST, "FetchPush object range 0.15 -> 0.1"),
    m("min_object_gripper_distance", "envs/fetch.py",
      "MIN_OBJECT_GRIPPER_DISTANCE = 0.1", "MIN_OBJECT_GRIPPER_DISTANCE = 0.05", ENVS_FAST,
      "object may start 5 cm from the gripper"),
    m("air_max_height", "envs/fetch.py",
      "AIR_TARGET_PROBABILITY, AIR_TARGET_MAX_HEIGHT = 0.5, 0.45",
      "AIR_TARGET_PROBABILITY, AIR_TARGET_MAX_HEIGHT = 0.5, 0.3", ENVS_FAST, "goals in the air up to 30 cm"),
    m("gripper_start_offset", "envs/fetch.py",
      "GRIPPER_START_OFFSET = np.array([-0.498, 0.005, -0.431])",
      "GRIPPER_START_OFFSET = np.array([-0.498, 0.005, -0.401])", ENVS_FAST, "gripper starts 3 cm higher"),
    m("hand_target_position_range", "envs/hand.py",
      "TARGET_POSITION_RANGE = np.array([(-0.04, 0.04), (-0.06, 0.02), (0.0, 0.06)])",
      "TARGET_POSITION_RANGE = np.array([(-0.04, 0.04), (-0.04, 0.04), (0.0, 0.06)])", ENVS_FAST,
      "hand target position box"),
    m("hand_initial_position_noise", "envs/hand.py",
      "INITIAL_POSITION_NOISE = 0.005", "INITIAL_POSITION_NOISE = 0.01", ENVS_FAST,
      "object start noise 5 -> 10 mm (fast suite)"),
    m("hand_initial_position_noise@parity", "envs/hand.py",
      "INITIAL_POSITION_NOISE = 0.005", "INITIAL_POSITION_NOISE = 0.01", PARITY,
      "object start noise 5 -> 10 mm (parity)", env={"PARITY_IDS": "HandManipulateEggFull-v0"}),
    m("meeting_point_offset", "envs/hand.py",
      "MEETING_POINT_OFFSET = np.array([0.0, -0.09, 0.05])", "MEETING_POINT_OFFSET = np.array([0.0, -0.07, 0.05])",
      ENVS_FAST, "HandReach meeting point 2 cm off"),
    m("fingertip_gap", "envs/hand.py",
      "FINGERTIP_GAP = 0.005", "FINGERTIP_GAP = 0.01", ENVS_FAST, "HandReach tips stop 1 cm short"),
    m("hand_reach_initial_probability", "envs/hand.py",
      "INITIAL_GOAL_PROBABILITY = 0.1", "INITIAL_GOAL_PROBABILITY = 0.05", ENVS_FAST,
      "HandReach initial goals 10% -> 5%"),
    m("z_axis", "envs/hand.py",
      "_Z_AXIS = np.array([0.0, 0.0, 1.0])", "_Z_AXIS = np.array([0.0, 1.0, 0.0])", ENVS_FAST,
      "RotateZ goals about y"),
    # ---- episode lengths, timing, actions, observations ----------------------------------------------------------
    m("fetch_episode_length", "envs/__init__.py",
      '"FetchReach": ("envs.fetch:FetchReachEnv", 50),', '"FetchReach": ("envs.fetch:FetchReachEnv", 60),',
      ENVS_FAST, "FetchReach episodes of 60 steps"),
    m("hand_episode_length", "envs/__init__.py",
      '"HandManipulateEggFull": ("envs.hand:HandManipulateEggFullEnv", 100),',
      '"HandManipulateEggFull": ("envs.hand:HandManipulateEggFullEnv", 50),', ENVS_FAST,
      "HandManipulateEggFull episodes of 50 steps"),
    m("n_substeps", "envs/goal_env.py",
      "N_SUBSTEPS = 20 ", "N_SUBSTEPS = 10 ", ENVS_FAST, "10 substeps (50 Hz control)"),
    m("fetch_max_displacement", "envs/fetch.py",
      "MAX_DISPLACEMENT = 0.05", "MAX_DISPLACEMENT = 0.03", ENVS_FAST, "3 cm per unit of action"),
    m("fetch_gripper_scale", "envs/fetch.py",
      "sims.qpos[rows][:, self._actuator_qpos] + action[:, 3:4]",
      "sims.qpos[rows][:, self._actuator_qpos] + 0.5 * action[:, 3:4]",
      ENVS_FAST, "gripper action halved"),
    m("fetch_fingers_unlocked", "envs/fetch.py",
      "self._finger_qpos] = 0.0", "self._finger_qpos] = 0.01", ENVS_FAST,
      "blocked gripper not closed"),
    m("hand_action_scale", "envs/hand.py",
      "np.clip(center + action * self._ctrl_half_range,", "np.clip(center + 0.5 * action * self._ctrl_half_range,",
      ENVS_FAST, "hand actions reach half the actuator range"),
    m("fetch_obs_velocity_swap", "envs/fetch.py",
      "object_velp - grip_velp, object_velr, grip_velp, fingers_qvel)",
      "object_velp - grip_velp, grip_velp, object_velr, fingers_qvel)", ENVS_FAST, "Fetch observation layout"),
    m("fetch_obs_velocity_unscaled", "envs/fetch.py",
      "sims.qvel[:, :, None])[..., 0] * self.dt", "sims.qvel[:, :, None])[..., 0]", ENVS_FAST,
      "Fetch object-task velocities not scaled by dt"),
    m("fetch_finger_velocity_unscaled", "envs/fetch.py",
      "sims.qvel[:, self._finger_qvel] * self.dt", "sims.qvel[:, self._finger_qvel]", ENVS_FAST,
      "Fetch finger velocities not scaled"),
    m("hand_obs_qpos", "envs/hand.py",
      "np.concatenate((qpos[:, :n], sims.qvel", "np.concatenate((sims.qvel[:, :n], sims.qvel", ENVS_FAST,
      "hand observation: velocities for positions"),
    m("hand_reach_obs_qvel_scaled", "envs/hand.py",
      "np.concatenate((sims.qpos[:, :n], sims.qvel[:, :n], tips), axis=1)",
      "np.concatenate((sims.qpos[:, :n], sims.qvel[:, :n] * self.dt, tips), axis=1)", ENVS_FAST,
      "HandReach velocities scaled"),
    # ---- the training scripts (ddpg_her.py; tests/test_replay.py, test_networks.py, test_ddpg_her.py) ---------------
    m("train_checkpoint_odd_epochs", "run_plumbing.py",
      "if args.checkpoint:", "if args.checkpoint and epoch % 2:",
      ["tests/test_ddpg_her.py", "-x", "-q", "-k", "kill_9 or resume"], "checkpoint only after odd epochs"),
    m("train_checkpoint_even_epochs", "run_plumbing.py",
      "if args.checkpoint:", "if args.checkpoint and (epoch + 1) % 2:",
      ["tests/test_ddpg_her.py", "-x", "-q", "-k", "kill_9 or resume"], "checkpoint only after even epochs"),
    m("train_replay_overwrites_not_saved", "ddpg_her.py",
      "        self.unsaved[idx] = True",
      "        self.unsaved[idx[idx >= self.n - (self.n < self.size) * len(idx)]] = True",
      ["tests/test_ddpg_her.py", "-x", "-q", "-k", "resume_continues"],
      "the incremental checkpoint misses the episodes that overwrote old ones"),
    m("train_her_future_never_final", "ddpg_her.py",
      "future_t = t + 1 + (rand() * (T - t)).long()",
      "future_t = t + 1 + (rand() * (T - 1 - t)).long()",
      ["tests/test_replay.py", "-x", "-q"], "HER 'future' never picks the final state"),
    m("train_her_probability_inverted", "ddpg_her.py",
      "(rand() < her_future_p)", "(rand() > her_future_p)",
      ["tests/test_replay.py", "-x", "-q"], "HER relabels with probability 1 - p"),
    m("train_polyak_inverted", "ddpg_her.py",
      "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
      "torch._foreach_lerp_(target_params, main_params, args.polyak)",
      ["tests/test_ddpg_her.py", "-x", "-q", "-k", "tiny_run"], "target networks averaged with 1 - polyak"),
    m("train_no_discount", "ddpg_her.py",
      "target = (r + gamma * q_next).clamp_(-clip_return, 0.0)", "target = (r + q_next).clamp_(-clip_return, 0.0)",
      ["tests/test_networks.py", "-x", "-q"], "no discount in the target"),
    m("train_clip_above_zero", "ddpg_her.py",
      "target = (r + gamma * q_next).clamp_(-clip_return, 0.0)",
      "target = (r + gamma * q_next).clamp_(-clip_return, 1.0)",
      ["tests/test_networks.py", "-x", "-q"], "target clipped at 1 instead of 0"),
    m("train_actor_loss_sign", "ddpg_her.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2 * (pi / actor.max_u).square().mean()",
      "actor_loss = critic(x[0], pi).mean() + action_l2 * (pi / actor.max_u).square().mean()",
      ["tests/test_networks.py", "-x", "-q"], "actor minimises Q"),
    m("train_action_l2_unscaled", "ddpg_her.py",
      "action_l2 * (pi / actor.max_u).square().mean()", "action_l2 * pi.square().mean()",
      ["tests/test_networks.py", "-x", "-q"], "the L2 penalty on pi instead of pi / max_u"),
    m("train_norm_clip_removed", "ddpg_her.py",
      "return x.clamp_(-self.norm_clip, self.norm_clip)", "return x",
      ["tests/test_networks.py", "-x", "-q"], "normalised inputs not clipped to [-5, 5]"),
    m("train_norm_std_floor_removed", "ddpg_her.py",
      "(self.sumsq / count - mean.square()).clamp(min=self.eps**2)",
      "(self.sumsq / count - mean.square()).clamp(min=0.0)",
      ["tests/test_networks.py", "-x", "-q"], "the normaliser's std not floored at norm_eps"),
    m("train_random_eps_inverted", "ddpg_her.py",
      "rng.random((len(u), 1)) < args.random_eps", "rng.random((len(u), 1)) > args.random_eps",
      ["tests/test_ddpg_her.py", "-x", "-q", "-k", "exploration"], "random actions with probability 1 - 0.3"),
    m("train_sampler_never_last_step", "ddpg_her.py",
      "(rand() * T).long()  # uniform episode", "(rand() * (T - 1)).long()  # uniform episode",
      ["tests/test_replay.py", "-x", "-q"], "the sampler never draws the last step of an episode"),
    m("train_norm_replaced_not_in_place", "ddpg_her.py",
      "        self.mean.copy_(mean)", "        self.mean = mean.float()",
      ["tests/test_networks.py", "-x", "-q"], "the normaliser's mean replaced: a CUDA graph would read stale values"),
    m("train_resume_ignores_options", "run_plumbing.py",
      "    if refused:  # a resumed run", "    if False:  # a resumed run",
      ["tests/test_ddpg_her.py", "-x", "-q", "-k", "resume"], "--resume silently ignores other options"),
    m("train_resume_fills_options_silently", "run_plumbing.py",
      "        if self.ckpt and self.ckpt[\"filled\"]:", "        if False:",
      ["tests/test_run_plumbing.py", "-x", "-q", "-k", "resume"], "a resume takes today's defaults without a word"),
    m("train_resume_keeps_dropped_options", "run_plumbing.py",
      "    if dropped:  # an option this version", "    if False:  # an option this version",
      ["tests/test_run_plumbing.py", "-x", "-q", "-k", "resume"], "a resume of an option that is gone crashes"),
    # ---- run_plumbing.py's GPU path, on the CPU with mocks (tests/test_run_plumbing.py) ------------------------------
    m("gpu_bf16_emulated", "run_plumbing.py",
      "torch.cuda.get_device_capability(device) >= (8, 0)", "torch.cuda.is_bf16_supported()",
      ["tests/test_run_plumbing.py", "-x", "-q"], "bf16 matmuls on GPUs that only emulate bf16"),
    m("gpu_capture_failure_raises", "run_plumbing.py",
      "            except Exception as error:  # nothing of the failed capture ran",
      "            except ImportError as error:  # nothing of the failed capture ran",
      ["tests/test_run_plumbing.py", "-x", "-q"], "a failed CUDA graph capture crashes the run"),
    m("gpu_capture_failure_silent", "run_plumbing.py",
      "                    run.update_config(cudagraphs=False, cudagraphs_failed=why)", "                    pass",
      ["tests/test_run_plumbing.py", "-x", "-q"], "a failed capture is not recorded in config.json"),
    m("gpu_oom_trace", "run_plumbing.py",
      "    except torch.OutOfMemoryError:", "    except MemoryError:",
      ["tests/test_run_plumbing.py", "-x", "-q"], "a replay buffer too big for the GPU dies with torch's trace"),
    m("gpu_checkpoint_cuda_tensors", "run_plumbing.py",
      "        return obj.cpu()", "        return obj",
      ["tests/test_run_plumbing.py", "-x", "-q"], "checkpoints keep CUDA tensors"),
    m("gpu_busy_warning", "run_plumbing.py",
      "if cpu and compute.update_threads > 1 and", "if compute.update_threads > 1 and",
      ["tests/test_run_plumbing.py", "-x", "-q"], "a GPU run is told to use --torch-threads 1"),
    m("resume_old_format_crashes", "run_plumbing.py",
      '    if ckpt.get("format") != CHECKPOINT_FORMAT:', "    if False:",
      ["tests/test_ddpg_her.py", "-x", "-q", "-k", "resume_continues"],
      "a checkpoint of the old format crashes the resume instead of being refused"),
    # ---- the research forks (research/*.py; tests/test_research_*.py): each idea's defining lines ------------------
    m("nstep_bootstrap_from_next_state", "research/ddpg_her_nstep.py", "boot = ahead if every_step else ahead[-1:]",
      "boot = ahead if every_step else ahead[:1]", ["tests/test_research_ddpg_her_nstep.py", "-x", "-q"],
      "plain n-step bootstraps from o[t+1] instead of o[t+k]"),
    m("nstep_no_cut_at_episode_end", "research/ddpg_her_nstep.py", "inside = i < k[:, None]",
      "inside = i < k[:, None].clamp(min=n)", ["tests/test_research_ddpg_her_nstep.py", "-x", "-q"],
      "rewards past the episode's end are summed: the cut at T is lost"),
    m("nstep_discount_gamma_n", "research/ddpg_her_nstep.py",
      "return returns[-1], gamma ** k[None, :, None].float()",
      "return returns[-1], gamma ** k[None, :, None].float().clamp(min=n)",
      ["tests/test_research_ddpg_her_nstep.py", "-x", "-q"], "a cut target's Q' discounted by gamma^n, not gamma^k"),
    m("mher_weights_reversed", "research/ddpg_her_nstep.py", "w = torch.where(inside, mher_lambda**i, 0.0)",
      "w = torch.where(inside, mher_lambda ** (n - 1 - i), 0.0)", ["tests/test_research_ddpg_her_nstep.py", "-x", "-q"],
      "MHER(lambda) weights reversed: lambda=0 no longer gives the 1-step target"),
    m("td3_her_max_not_min", "research/td3_her.py", "q_next = torch.min(", "q_next = torch.max(",
      ["tests/test_research_td3_her.py", "-x", "-q", "-k", "min_of_the_two"],
      "the target takes the larger of the two target critics (no clipped double Q)"),
    m("td3_her_noise_unclipped", "research/td3_her.py",
      "noise = (torch.randn_like(u) * policy_noise).clamp_(-noise_clip, noise_clip) * max_u",
      "noise = torch.randn_like(u) * policy_noise * max_u",
      ["tests/test_research_td3_her.py", "-x", "-q", "-k", "smoothing or min_of_the_two"],
      "target policy smoothing noise not clipped to +-noise_clip*max_u"),
    m("td3_her_action_unclipped", "research/td3_her.py", "return (u + noise).clamp_(-max_u, max_u)",
      "return u + noise", ["tests/test_research_td3_her.py", "-x", "-q", "-k", "smoothing"],
      "the smoothed target action not clipped to +-max_u"),
    m("td3_her_actor_not_delayed", "research/td3_her.py", "if (i + 1) % policy_frequency == 0:",
      "if i % policy_frequency == 0:", ["tests/test_research_td3_her.py", "-x", "-q", "-k", "policy_frequency_th"],
      "the actor steps after the 1st, 3rd, ... critic update instead of every policy_frequency-th"),
    m("td3_her_actor_on_critic2", "research/td3_her.py", "stats[0].add_(actor_update(actor, critic1,",
      "stats[0].add_(actor_update(actor, critic2,", ["tests/test_research_td3_her.py", "-x", "-q", "-k", "critic1"],
      "the main loop steps the actor on Q2 instead of Q1"),
    m("sac_target_min_of_twins", "research/sac_her.py",
      "q_next = critic_target(x[1], u_next).min(0).values - alpha * log_pi_next",
      "q_next = critic_target(x[1], u_next).mean(0) - alpha * log_pi_next",
      ["tests/test_research_sac_her.py", "-x", "-q"], "the target averages the twin target critics (no minimum)"),
    m("sac_target_entropy_bonus", "research/sac_her.py",
      "q_next = critic_target(x[1], u_next).min(0).values - alpha * log_pi_next",
      "q_next = critic_target(x[1], u_next).min(0).values",
      ["tests/test_research_sac_her.py", "-x", "-q"], "the target loses the soft-value term -alpha * log pi"),
    m("sac_temperature_direction", "research/sac_her.py",
      "alpha_loss = -(temperature.log_alpha.exp() * (log_pi.detach() + target_entropy)).mean()",
      "alpha_loss = (temperature.log_alpha.exp() * (log_pi.detach() + target_entropy)).mean()",
      ["tests/test_research_sac_her.py", "-x", "-q"], "the temperature moves away from the target entropy"),
    m("sac_tanh_log_prob_correction", "research/sac_her.py",
      "- 2 * (math.log(2) - u - F.softplus(-2 * u)) - math.log(self.max_u))", "- math.log(self.max_u))",
      ["tests/test_research_sac_her.py", "-x", "-q"], "the squashed sample's log-probability misses the tanh term"),
    m("sac_actor_entropy_sign", "research/sac_her.py",
      "actor_loss = ((alpha * log_pi - critic(x[0], pi).min(0).values).mean()",
      "actor_loss = ((-alpha * log_pi - critic(x[0], pi).min(0).values).mean()",
      ["tests/test_research_sac_her.py", "-x", "-q"], "the actor's entropy term with its sign flipped (issue 32)"),
    m("sac_actor_mean_of_twins", "research/sac_her.py",
      "actor_loss = ((alpha * log_pi - critic(x[0], pi).min(0).values).mean()",
      "actor_loss = ((alpha * log_pi - critic(x[0], pi).mean(0)).mean()",
      ["tests/test_research_sac_her.py", "-x", "-q"], "the actor climbs the twins' mean, not their minimum"),
    m("prio_max_never_raised", "research/ddpg_her_prioritized.py",
      "        torch.maximum(self.priority.max, p.max(), out=self.priority.max)\n", "        pass\n",
      ["tests/test_research_ddpg_her_prioritized.py", "-x", "-q"],
      "PER's running max priority never rises: new transitions enter at 1 forever (issue 32)"),
    m("prio_draws_uniform", "research/ddpg_her_prioritized.py",
      "i = torch.searchsorted(cdf, (1.0 - rand()) * cdf[-1])", "i = (rand() * n_eps * T).long()",
      ["tests/test_research_ddpg_her_prioritized.py", "-x", "-q"], "replayed slots drawn uniformly, not by priority"),
    m("prio_alpha_not_applied", "research/ddpg_her_prioritized.py", "index_put_((i,), p.pow(self.alpha))",
      "index_put_((i,), p)", ["tests/test_research_ddpg_her_prioritized.py", "-x", "-q"],
      "draws follow p instead of p^alpha"),
    m("prio_eps_dropped", "research/ddpg_her_prioritized.py", "p = td.double().abs().flatten() + self.eps",
      "p = td.double().abs().flatten()", ["tests/test_research_ddpg_her_prioritized.py", "-x", "-q"],
      "a new priority is |TD error| without PER's eps"),
    m("prio_is_weights_ignored", "research/ddpg_her_prioritized.py",
      "critic_loss = (td.square() if w is None else w * td.square()).mean()", "critic_loss = td.square().mean()",
      ["tests/test_research_ddpg_her_prioritized.py", "-x", "-q"],
      "--importance-weights no longer weighs the critic's squared errors"),
    m("relay_reach_reward_from_object", "research/ddpg_her_relay.py",
      'achieved = torch.where(reach, ep["o"][e, t + 1, :GRIP], ep["ag"][e, t + 1])', 'achieved = ep["ag"][e, t + 1]',
      RELAY, "the reach task's reward compares the object's next position, not the gripper's, with its goal"),
    m("relay_reach_goal_next_object", "research/ddpg_her_relay.py",
      'gr = torch.where((rand() < her_future_p)[:, None], ep["o"][e, future_t, :GRIP], ep["ag"][e, t])',
      'gr = torch.where((rand() < her_future_p)[:, None], ep["o"][e, future_t, :GRIP], ep["ag"][e, t + 1])',
      RELAY, "the reach task's goal is where the object is after the step, not at t"),
    m("relay_goal_slot_kept", "research/ddpg_her_relay.py", "torch.where(reach, 0.0, xn[..., dim_o:])",
      "xn[..., dim_o:]", RELAY, "the reach task's input keeps the main task's goal g"),
    m("relay_grip_goal_own_statistics", "research/ddpg_her_relay.py",
      "gr = (x[..., dim_o + GRIP :].clamp(-self.clip_obs, self.clip_obs) - self.mean[dim_o:]) / self.std[dim_o:]",
      "gr = x[..., dim_o + GRIP :].clamp(-self.clip_obs, self.clip_obs)", RELAY,
      "the gripper's goal is not normalised with g's statistics"),
    m("relay_reach_near_object", "research/ddpg_her_relay.py",
      "far = np.linalg.norm(o[:, :GRIP] - ag, axis=1) > reach_radius", "far = np.ones(len(o), bool)", RELAY,
      "envs act for the reach task even with the gripper at the object"),
    m("relay_nstep_bootstrap_from_next_state", "research/ddpg_her_relay_nstep.py",
      'torch.cat([ep["o"][e, t + k], g, gr], 1)', 'torch.cat([ep["o"][e, t + 1], g, gr], 1)', RELAY_NSTEP,
      "the n-step target bootstraps from o[t+1] instead of o[t+k]"),
    m("relay_nstep_reach_rewards_from_object", "research/ddpg_her_relay_nstep.py",
      'achieved = torch.where(reach, ep["o"][e, t + ahead, :GRIP], ep["ag"][e, t + ahead])',
      'achieved = ep["ag"][e, t + ahead]', RELAY_NSTEP,
      "the reach task's n rewards compare the object's positions, not the gripper's, with its goal"),
    m("relay_nstep_no_cut_at_episode_end", "research/ddpg_her_relay_nstep.py",
      "r = torch.where(i < k[:, None], gamma**i * r, 0.0).sum(0)", "r = (gamma**i * r).sum(0)", RELAY_NSTEP,
      "rewards past the episode's end are summed: the cut at T is lost"),
    m("relay_nstep_discount_gamma", "research/ddpg_her_relay_nstep.py", "return r, gamma ** k[:, None].float()",
      "return r, gamma * torch.ones_like(k[:, None].float())", RELAY_NSTEP,
      "the bootstrap is discounted by gamma, not gamma^k"),
    # ---- scripts/plot.py: the figures of docs/research.md ----------------------------------------------------------
    m("plot_split_by_first_key_only", "scripts/plot.py",
      'for key in split_by or ()])', 'for key in (split_by or ())[:1]])',
      PLOT, "--split-by draws one curve per value of its first key only"),
    m("plot_max_env_steps_ignored", "scripts/plot.py",
      'rows = [row for row in rows if float(row["env_steps"]) <= max_env_steps]', 'rows = rows',
      PLOT, "--max-env-steps does not cut the runs"),
    m("plot_labels_sorted_as_text", "scripts/plot.py",
      'natural(e[1])))', 'e[1]))',
      PLOT, "curves ordered as text: n_batches=120 before n_batches=40"),
    m("plot_legend_columns_fixed", "scripts/plot.py",
      "        if ncol == 1 or box.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width:",
      "        if True:",
      ["tests/test_plot.py", "-x", "-q", "-k", "wide"], "a legend wider than the panels widens the figure"),
    m("plot_legend_rows_flatten_panel", "scripts/plot.py",
      "    fig.set_figheight(fig.get_figheight() + 0.21 * (-(-len(legend) // ncol) - 1))", "",
      ["tests/test_plot.py", "-x", "-q", "-k", "wide"], "a legend of many rows flattens the panels"),
    m("plot_seed_median_drops_unreached", "scripts/plot.py",
      "steps(np.median([np.inf if x is None else x for x in xs]))",
      "steps(np.median([x for x in xs if x is not None] or [np.inf]))",
      ["tests/test_plot.py", "-x", "-q", "-k", "per_seed"],
      "a seed that never reaches a level drops out of the median"),
    m("plot_seed_median_of_first_seed", "scripts/plot.py",
      "steps(np.median([np.inf if x is None else x for x in xs]))", "steps(xs[0])",
      ["tests/test_plot.py", "-x", "-q", "-k", "per_seed"], "the per-seed table reports one seed, not the median"),
    m("plot_eleventh_curve_like_the_first", "scripts/plot.py",
      'linestyle=("-", "--", ":")[i // 10 % 3]', 'linestyle="-"',
      ["tests/test_plot.py", "-x", "-q", "-k", "alike"], "the 11th curve looks like the first"),
    m("grid_seed_left_out_accepted", "scripts/grid.py",
      "        if not set(old.get(\"seeds\", [])) <= set(seeds):", "        if False:",
      ["tests/test_grid.py", "-x", "-q", "-k", "another_grid"], "a grid directory's seed left out goes unnoticed"),
    # ---- scripts/hparam_search.py (tests/test_grid.py) -------------------------------------------------------------
    m("hparam_search_missing_option_not_refused", "scripts/hparam_search.py",
      "        if missing:", "        if False:",
      ["tests/test_grid.py", "-x", "-q", "-k", "refuses_a_config"],
      "a fork without a searched option (sac_her.py: --noise-eps) is searched, and its trials fail"),
    # ---- research/ddpg_her_gamma_eps.py: gamma and epsilon as the value function's inputs (issue 32) -----------------
    m("gamma_eps_reward_at_task_eps", "research/ddpg_her_gamma_eps.py",
      "return -(envs.goal_distance(ag_next, g) > eps[:, 0]).float()[:, None]",
      "return -(envs.goal_distance(ag_next, g) > 0.05).float()[:, None]",
      GAMMA_EPS,
      "the reward is the task's, not recomputed at each transition's epsilon"),
    m("gamma_eps_bootstrap_one_gamma", "research/ddpg_her_gamma_eps.py",
      "torch.minimum(r + gamma * q_next,", "torch.minimum(r + gamma.mean() * q_next,",
      GAMMA_EPS,
      "the target bootstraps with one gamma for the whole batch"),
    m("gamma_eps_clip_one_gamma", "research/ddpg_her_gamma_eps.py",
      "lowest = -1.0 / (1.0 - gamma) if clip_return", "lowest = -1.0 / (1.0 - gamma.max()) if clip_return",
      GAMMA_EPS,
      "the target's clip takes the largest gamma of the batch, not each transition's"),
    m("gamma_eps_horizon_uniform", "research/ddpg_her_gamma_eps.py",
      "gamma = 1.0 - 1.0 / (math.log(h_min) + rand() * math.log(h_max / h_min)).exp()",
      "gamma = 1.0 - 1.0 / (h_min + rand() * (h_max - h_min))",
      GAMMA_EPS, "horizons drawn uniformly, not log-uniformly"),
    m("gamma_eps_actor_blind_to_task", "research/ddpg_her_gamma_eps.py",
      "x = torch.cat([x, self.task_cond.expand(len(x), N_COND)], -1)",
      "x = torch.cat([x, torch.zeros_like(self.task_cond).expand(len(x), N_COND)], -1)",
      GAMMA_EPS,
      "acting and testing ignore the task's gamma and epsilon"),
    m("gamma_eps_task_cond_unset", "research/ddpg_her_gamma_eps.py",
      "    actor.task_cond.copy_(cond_inputs(", "    actor.task_cond.add_(0 * cond_inputs(",
      GAMMA_EPS,
      "the script never gives the actor the task's gamma and epsilon"),
    m("gamma_eps_reward_check_skipped", "research/ddpg_her_gamma_eps.py",
      "        if not np.array_equal(compute_reward(ag_check, g_check, {}), thresholded):",
      "        if False:",
      GAMMA_EPS, "a task whose reward is not one threshold is trained with the wrong reward"),
    # ---- research/ddpg_her_goal_td.py: the candidate goal of largest |TD error| replayed (issue 32) ---------------
    m("goal_td_argmin", "research/ddpg_her_goal_td.py",
      ".argmax(1) if n_candidates > 1", ".argmin(1) if n_candidates > 1",
      ["tests/test_research_ddpg_her_goal_td.py", "-x", "-q", "-k", "not resumes and not bad_options and not _run"],
      "the candidate of smallest |TD error| is replayed"),
    m("goal_td_signed_error", "research/ddpg_her_goal_td.py",
      "(target - critic(x[0], rows(u))).abs()", "(target - critic(x[0], rows(u)))",
      ["tests/test_research_ddpg_her_goal_td.py", "-x", "-q", "-k", "not resumes and not bad_options and not _run"],
      "candidates ranked by their signed TD error, not its size"),
    m("goal_td_future_includes_t", "research/ddpg_her_goal_td.py",
      "future_t = t[:, None] + 1 + ", "future_t = t[:, None] + ",
      ["tests/test_research_ddpg_her_goal_td.py", "-x", "-q", "-k", "not resumes and not bad_options and not _run"],
      "'future' candidates from t' in {t, ..., T-1}: the goal achieved before the step, not after"),
    m("goal_td_buffer_goals_own_episode", "research/ddpg_her_goal_td.py",
      'ep["ag"][buffer_e, buffer_t]', 'ep["ag"][e[:, None], buffer_t]',
      ["tests/test_research_ddpg_her_goal_td.py", "-x", "-q", "-k", "not resumes and not bad_options and not _run"],
      "the 'buffer' candidates come from the transition's own episode"),
    m("goal_td_reward_original_goal", "research/ddpg_her_goal_td.py",
      "r = compute_reward(ag_next, g, {})", 'r = compute_reward(ag_next, ep["g"][e, t], {})',
      ["tests/test_research_ddpg_her_goal_td.py", "-x", "-q", "-k", "not resumes and not bad_options and not _run"],
      "the replayed reward is the episode's own goal's, not the chosen goal's"),
    m("goal_td_score_with_main_critic", "research/ddpg_her_goal_td.py",
      "gamma * critic_target(x[1], actor_target(x[1]))", "gamma * critic(x[1], actor_target(x[1]))",
      ["tests/test_research_ddpg_her_goal_td.py", "-x", "-q", "-k", "not resumes and not bad_options and not _run"],
      "the candidates' targets bootstrap from the main critic, not the target critic"),
    m("goal_td_rows_tiled", "research/ddpg_her_goal_td.py",
      "v[:, None].expand(n, k, v.shape[1]).reshape(n * k, v.shape[1])", "v.repeat(k, 1)",
      ["tests/test_research_ddpg_her_goal_td.py", "-x", "-q", "-k", "not resumes and not bad_options and not _run"],
      "the batched rows pair candidates with other transitions' states and actions"),
    # ---- research/ddpg_her_unbiased.py: HER's bias shown by a teleport action, and importance weights (issue 32) -----
    m("unbiased_teleport_not_absorbing", "research/ddpg_her_unbiased.py",
      "self.teleported |= go", "self.teleported = go",
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "teleport_jumps"],
      "a teleported env moves again from the next step: the teleport is not absorbing"),
    m("unbiased_teleport_to_desired_goal", "research/ddpg_her_unbiased.py",
      'self.frozen["achieved_goal"][i] = self.sample_goal(self.rng)',
      'self.frozen["achieved_goal"][i] = obs["desired_goal"][i]',
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "teleport_jumps or teleport_points"],
      "the teleport lands on the desired goal, not on a random point of the goal space"),
    m("unbiased_teleport_rng_is_env_stream", "research/ddpg_her_unbiased.py",
      "self.rng = np.random.default_rng([seed, TELEPORT_STREAM])", "self.rng = np.random.default_rng(seed)",
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "teleport_jumps or teleport_points"],
      "the teleports draw env 0's goal stream: its first teleport lands on its own desired goal"),
    m("unbiased_threshold_ignored", "research/ddpg_her_unbiased.py",
      "go = (u[:, -1] > self.threshold) & ~self.teleported", "go = (u[:, -1] > 0) & ~self.teleported",
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "teleport_jumps"],
      "the teleport fires on any positive teleport action, whatever --teleport-threshold"),
    m("unbiased_future_includes_own_step", "research/ddpg_her_unbiased.py",
      "> t[:, None]  # steps t+1..T", ">= t[:, None]  # steps t+1..T",
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "importance_weights"],
      "M_future counts the transition's own step t, which HER's 'future' never draws"),
    m("unbiased_weights_without_mixture", "research/ddpg_her_unbiased.py",
      "w = m_task / ((1.0 - her_future_p) * m_task + her_future_p * m_future)",
      "w = m_task / (m_task + m_future)",
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "importance_weights"],
      "the weights' denominator is not HER's mixture (1 - f) p_task + f p_future"),
    m("unbiased_critic_loss_unweighted", "research/ddpg_her_unbiased.py",
      "critic_loss = F.mse_loss(q, target) if w is None else (w[:, None] * (q - target).square()).mean()",
      "critic_loss = F.mse_loss(q, target)",
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "critic_loss"],
      "the critic's loss ignores the importance weights"),
    m("unbiased_weights_not_passed", "research/ddpg_her_unbiased.py",
      "stats.add_(update(nets, optimizer, norm, x, u, r, w, gamma",
      "stats.add_(update(nets, optimizer, norm, x, u, r, None, gamma",
      ["tests/test_research_ddpg_her_unbiased.py", "-x", "-q", "-k", "tiny_run_resumes"],
      "--correction is computes the weights but the script's update never gets them"),
    # ---- research/hac_her.py: Hierarchical Actor-Critic, the high level's action replaced in hindsight (issue 32) ---
    m("hac_hindsight_action_kept", "research/hac_her.py",
      "return np.where(reached[:, None] | (not replace), subgoal, ag_end), (testing & ~reached)[:, None], reached",
      "return np.where(reached[:, None] | (not replace), subgoal, subgoal), (testing & ~reached)[:, None], reached",
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "not bad_options"],
      "a missed subgoal is stored as the high level's action, not the goal the low level reached"),
    m("hac_penalty_untested", "research/hac_her.py",
      "return np.where(reached[:, None] | (not replace), subgoal, ag_end), (testing & ~reached)[:, None], reached",
      "return np.where(reached[:, None] | (not replace), subgoal, ag_end), (~reached)[:, None], reached",
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "not bad_options"],
      "every missed subgoal is penalised, tested or not"),
    m("hac_penalty_bootstraps", "research/hac_her.py",
      "return torch.where(penalty, -float(H), r), gamma * (1.0 - penalty.float())",
      "return torch.where(penalty, -float(H), r), gamma * (1.0 - 0 * penalty.float())",
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "not bad_options"],
      "the penalty transitions bootstrap (discount gamma, not 0)"),
    m("hac_penalty_minus_one", "research/hac_her.py",
      "return torch.where(penalty, -float(H), r), gamma * (1.0 - penalty.float())",
      "return torch.where(penalty, -1.0, r), gamma * (1.0 - penalty.float())",
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "not bad_options"],
      "the penalty of a missed tested subgoal is -1, not -H"),
    m("hac_low_goal_is_the_tasks", "research/hac_her.py",
      'ep["ag"][e, future_t], ep["sg"][e, t // H])', 'ep["ag"][e, future_t], ep["g"][e, t])',
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "not bad_options"],
      "the low level learns (and is rewarded) toward the episode's goal, not its subgoal"),
    m("hac_tested_with_noise", "research/hac_her.py",
      "u = np.where(testing[:, None], u, noisy(u, max_u))", "u = noisy(u, max_u)",
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "not bad_options"],
      "the low level explores while its subgoal is tested"),
    m("hac_subgoals_beyond_the_box", "research/hac_her.py",
      "return lo + (a + 1) * (hi - lo) / 2", "return lo + (a + 1) * (hi - lo)",
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "not bad_options"],
      "the high level's subgoals span twice the box"),
    # ---- research/ppo_her.py: on-policy HER, PPO with HPG-weighted hindsight goals (issue 32) ----------------------
    m("ppo_her_weights_not_cumulative", "research/ppo_her.py",
      "log_w = (logp[:, 1:] - logp[:, :1]).cumsum(-1)", "log_w = (logp[:, 1:] - logp[:, :1])",
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "not resumes and not bad_options and not no_hindsight_run"],
      "the hindsight weight is step t's ratio alone, not the product over k <= t"),
    m("ppo_her_weights_not_normalised", "research/ppo_her.py",
      ".reshape(n, G - 1, T) * (n * (G - 1))", ".reshape(n, G - 1, T)",
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "not resumes and not bad_options and not no_hindsight_run"],
      "the self-normalised weights sum to 1 per step instead of averaging 1 (relabelled samples all but ignored)"),
    m("ppo_her_surrogate_unclipped", "research/ppo_her.py",
      "ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)", "ratio",
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "not resumes and not bad_options and not no_hindsight_run"],
      "PPO's surrogate without its clip (a plain importance-weighted policy gradient)"),
    m("ppo_her_surrogate_unweighted", "research/ppo_her.py",
      "return (w * loss).mean(), log_ratio", "return loss.mean(), log_ratio",
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "not resumes and not bad_options and not no_hindsight_run"],
      "the policy loss ignores the hindsight weights"),
    m("ppo_her_dual_clip_off", "research/ppo_her.py",
      "        loss = torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)", "        pass",
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "dual_clip"],
      "a negative advantage's loss unbounded: a relabelled goal's huge ratio diverges the policy"),
    m("ppo_her_ratio_overflows", "research/ppo_her.py",
      "    ratio = log_ratio.clamp(max=20.0).exp()\n    loss", "    ratio = log_ratio.exp()\n    loss",
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "dual_clip"], "a huge log-ratio overflows to NaN gradients"),
    m("ppo_her_value_loss_unweighted", "research/ppo_her.py",
      'v_loss = 0.5 * (mb["w"] * (v - mb["ret"]).square()).mean()', 'v_loss = 0.5 * (v - mb["ret"]).square().mean()',
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "not resumes and not bad_options and not no_hindsight_run"],
      "the value loss ignores the hindsight weights"),
    m("ppo_her_gae_without_lambda", "research/ppo_her.py",
      "last = delta[..., t] + gamma * lam * last", "last = delta[..., t] + gamma * last",
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "not resumes and not bad_options and not no_hindsight_run"],
      "GAE with lambda = 1 whatever --gae-lambda"),
    m("ppo_her_reward_of_the_original_goal", "research/ppo_her.py",
      'r = compute_reward(ep["ag"][:, None, 1:].expand_as(goals), goals, {}).float()',
      'r = compute_reward(ep["ag"][:, None, 1:].expand_as(goals), ep["g"][:, None].expand_as(goals), {}).float()',
      ["tests/test_research_ppo_her.py", "-x", "-q", "-k", "not resumes and not bad_options and not no_hindsight_run"],
      "relabelled episodes keep the rewards of the episode's own goal"),
    # ---- research/ddpg_her_frequent.py and the envs' n_substeps: RL with very frequent actions (issue 32) -----------
    m("frequent_gamma_per_step_not_per_second", "research/ddpg_her_frequent.py",
      "gamma_25 ** (25 / args.frequency_hz)", "gamma_25",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "50_hz"],
      "the 25 Hz discount per step at any frequency: 10x the horizon in seconds at 250 Hz"),
    m("frequent_n_step_not_scaled", "research/ddpg_her_frequent.py",
      "n_step = max(1, args.n_step * steps_per_25hz)", "n_step = max(1, args.n_step)",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "50_hz"],
      "n-step returns over n0 steps, not n0 * f / 25 (the same seconds)"),
    m("frequent_n_step_undiscounted", "research/ddpg_her_frequent.py",
      "r = torch.where(i < k[:, None], gamma**i * r, 0.0).sum(0)", "r = torch.where(i < k[:, None], r, 0.0).sum(0)",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "not 25_hz and not 50_hz and not bad_options"],
      "the n-step rewards summed without their discounts gamma^i"),
    m("frequent_param_noise_adapts_backwards", "research/ddpg_her_frequent.py",
      "self.std.mul_(1.0 / self.alpha if distance > self.target else self.alpha)",
      "self.std.mul_(self.alpha if distance > self.target else 1.0 / self.alpha)",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "not 25_hz and not 50_hz and not bad_options"],
      "parameter noise grows when the perturbed actions are already too far"),
    m("frequent_param_noise_not_applied", "research/ddpg_her_frequent.py",
      "w_b = [(p + dp, q + dq) for", "w_b = [(p + 0 * dp, q + 0 * dq) for",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "not 25_hz and not 50_hz and not bad_options"],
      "the perturbed actor acts with the actor's own weights"),
    m("frequent_env_warm_up_with_n_substeps", "envs/fetch.py",
      "mujoco.mj_step(m, d, nstep=N_SUBSTEPS)", "mujoco.mj_step(m, d, nstep=self.n_substeps)",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "not 25_hz and not 50_hz and not bad_options"],
      "Fetch's warm-up steps shorten with n_substeps: another start state at each frequency"),
    m("frequent_env_ignores_n_substeps", "envs/goal_env.py",
      "self.n_substeps = int(n_substeps)", "self.n_substeps = N_SUBSTEPS",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "not 25_hz and not 50_hz and not bad_options"],
      "n_substeps accepted and ignored: every env at 25 Hz"),
    m("frequent_evaluate_at_25hz", "evaluate.py",
      "env_kwargs = ckpt.get(\"env_kwargs\", {})", "env_kwargs = {}",
      ["tests/test_research_ddpg_her_frequent.py", "-x", "-q", "-k", "50_hz"],
      "evaluate.py tests a policy of another frequency at 25 Hz"),
    m("evaluate_no_actor_unnamed", "evaluate.py",
      "    if \"actor\" not in ckpt:", "    if False:",
      ["tests/test_research_hac_her.py", "-x", "-q", "-k", "resumes"],
      "evaluate.py fails with a KeyError on a model.pt of two actors"),
    # ---- research/ddpg_her_qr.py: a quantile critic, distributional RL (issue 32) ----------------------------------
    m("qr_tau_not_midpoints", "research/ddpg_her_qr.py",
      "tau = (2 * torch.arange(z.shape[1], device=z.device) + 1).float()[:, None] / (2 * z.shape[1])",
      "tau = torch.arange(z.shape[1], device=z.device).float()[:, None] / z.shape[1]",
      ["tests/test_research_ddpg_her_qr.py", "-x", "-q", "-k", "not resumes and not bad_options"],
      "the quantile fractions i/N instead of the midpoints (2i+1)/(2N)"),
    m("qr_indicator_flipped", "research/ddpg_her_qr.py",
      "weight = torch.where(u < 0, 1.0 - tau, tau)", "weight = torch.where(u > 0, 1.0 - tau, tau)",
      ["tests/test_research_ddpg_her_qr.py", "-x", "-q", "-k", "not resumes and not bad_options"],
      "the quantile loss's indicator [u < 0] flipped: quantile i learns tau = 1 - tau_i"),
    m("qr_weight_symmetric", "research/ddpg_her_qr.py",
      "weight = torch.where(u < 0, 1.0 - tau, tau)", "weight = 0.5",
      ["tests/test_research_ddpg_her_qr.py", "-x", "-q", "-k", "not resumes and not bad_options"],
      "the asymmetric weight |tau - [u < 0]| missing: every output regresses to the median"),
    m("qr_target_from_main_nets", "research/ddpg_her_qr.py",
      "z_next = critic_target(x[1], actor_target(x[1]))", "z_next = critic(x[1], actor(x[1]))",
      ["tests/test_research_ddpg_her_qr.py", "-x", "-q", "-k", "not resumes and not bad_options"],
      "the target's quantiles come from the main networks, not the target networks"),
    m("qr_target_mean_not_quantiles", "research/ddpg_her_qr.py",
      "target = (r + gamma * z_next).clamp_(-clip_return, 0.0)",
      "target = (r + gamma * z_next.mean(1, keepdim=True)).clamp_(-clip_return, 0.0)",
      ["tests/test_research_ddpg_her_qr.py", "-x", "-q", "-k", "not resumes and not bad_options"],
      "one scalar target (the quantiles' mean), not one target sample per quantile"),
    m("qr_target_unclipped", "research/ddpg_her_qr.py",
      "target = (r + gamma * z_next).clamp_(-clip_return, 0.0)", "target = r + gamma * z_next",
      ["tests/test_research_ddpg_her_qr.py", "-x", "-q", "-k", "not resumes and not bad_options"],
      "the target's quantiles are not clipped to [-1/(1-gamma), 0]"),
    m("qr_actor_one_quantile", "research/ddpg_her_qr.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = -critic(x[0], pi)[:, -1].mean() + action_l2",
      ["tests/test_research_ddpg_her_qr.py", "-x", "-q", "-k", "not resumes and not bad_options"],
      "the actor climbs the top quantile, not the mean of the quantiles"),
    # ---- issue 32's sweep: the same kinds of break in every fork's copy of the update (a sign, a running statistic)
    m("ddpg_her_nstep@polyak_inverted", "research/ddpg_her_nstep.py",
      "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
      "torch._foreach_lerp_(target_params, main_params, args.polyak)",
      SHARED("ddpg_her_nstep"),
      "the target networks averaged with 1 - polyak"),
    m("ddpg_her_nstep@normaliser_frozen", "research/ddpg_her_nstep.py",
      "        self.count += len(x)\n", "        self.count += 0 * len(x)\n",
      SHARED("ddpg_her_nstep"),
      "the normaliser's count never moves (its statistics stay those of nothing seen)"),
    m("ddpg_her_nstep@actor_loss_sign", "research/ddpg_her_nstep.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = critic(x[0], pi).mean() + action_l2",
      SHARED("ddpg_her_nstep"),
      "the actor minimises Q"),
    m("ddpg_her_nstep@action_l2_sign", "research/ddpg_her_nstep.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = -critic(x[0], pi).mean() - action_l2",
      SHARED("ddpg_her_nstep"),
      "the action L2 penalty rewards large actions"),
    m("ddpg_her_prioritized@polyak_inverted", "research/ddpg_her_prioritized.py",
      "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
      "torch._foreach_lerp_(target_params, main_params, args.polyak)",
      SHARED("ddpg_her_prioritized"),
      "the target networks averaged with 1 - polyak"),
    m("ddpg_her_prioritized@normaliser_frozen", "research/ddpg_her_prioritized.py",
      "        self.count += len(x)\n", "        self.count += 0 * len(x)\n",
      SHARED("ddpg_her_prioritized"),
      "the normaliser's count never moves (its statistics stay those of nothing seen)"),
    m("ddpg_her_prioritized@actor_loss_sign", "research/ddpg_her_prioritized.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = critic(x[0], pi).mean() + action_l2",
      SHARED("ddpg_her_prioritized"),
      "the actor minimises Q"),
    m("ddpg_her_prioritized@action_l2_sign", "research/ddpg_her_prioritized.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = -critic(x[0], pi).mean() - action_l2",
      SHARED("ddpg_her_prioritized"),
      "the action L2 penalty rewards large actions"),
    m("ddpg_her_relay@polyak_inverted", "research/ddpg_her_relay.py",
      "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
      "torch._foreach_lerp_(target_params, main_params, args.polyak)",
      SHARED("ddpg_her_relay"),
      "the target networks averaged with 1 - polyak"),
    m("ddpg_her_relay@normaliser_frozen", "research/ddpg_her_relay.py",
      "        self.count += len(x)\n", "        self.count += 0 * len(x)\n",
      SHARED("ddpg_her_relay"),
      "the normaliser's count never moves (its statistics stay those of nothing seen)"),
    m("ddpg_her_relay@actor_loss_sign", "research/ddpg_her_relay.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = critic(x[0], pi).mean() + action_l2",
      SHARED("ddpg_her_relay"),
      "the actor minimises Q"),
    m("ddpg_her_relay@action_l2_sign", "research/ddpg_her_relay.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = -critic(x[0], pi).mean() - action_l2",
      SHARED("ddpg_her_relay"),
      "the action L2 penalty rewards large actions"),
    m("ddpg_her_relay_nstep@polyak_inverted", "research/ddpg_her_relay_nstep.py",
      "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
      "torch._foreach_lerp_(target_params, main_params, args.polyak)",
      SHARED("ddpg_her_relay_nstep"),
      "the target networks averaged with 1 - polyak"),
    m("ddpg_her_relay_nstep@normaliser_frozen", "research/ddpg_her_relay_nstep.py",
      "        self.count += len(x)\n", "        self.count += 0 * len(x)\n",
      SHARED("ddpg_her_relay_nstep"),
      "the normaliser's count never moves (its statistics stay those of nothing seen)"),
    m("ddpg_her_relay_nstep@actor_loss_sign", "research/ddpg_her_relay_nstep.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = critic(x[0], pi).mean() + action_l2",
      SHARED("ddpg_her_relay_nstep"),
      "the actor minimises Q"),
    m("ddpg_her_relay_nstep@action_l2_sign", "research/ddpg_her_relay_nstep.py",
      "actor_loss = -critic(x[0], pi).mean() + action_l2", "actor_loss = -critic(x[0], pi).mean() - action_l2",
      SHARED("ddpg_her_relay_nstep"),
      "the action L2 penalty rewards large actions"),
    m("sac_her@polyak_inverted", "research/sac_her.py",
      "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
      "torch._foreach_lerp_(target_params, main_params, args.polyak)",
      SHARED("sac_her"),
      "the target networks averaged with 1 - polyak"),
    m("sac_her@normaliser_frozen", "research/sac_her.py",
      "        self.count += len(x)\n", "        self.count += 0 * len(x)\n",
      SHARED("sac_her"),
      "the normaliser's count never moves (its statistics stay those of nothing seen)"),
    m("td3_her@polyak_inverted", "research/td3_her.py",
      "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
      "torch._foreach_lerp_(target_params, main_params, args.polyak)",
      SHARED("td3_her"),
      "the target networks averaged with 1 - polyak"),
    m("td3_her@normaliser_frozen", "research/td3_her.py",
      "        self.count += len(x)\n", "        self.count += 0 * len(x)\n",
      SHARED("td3_her"),
      "the normaliser's count never moves (its statistics stay those of nothing seen)"),
    m("td3_her@actor_loss_sign", "research/td3_her.py",
      "actor_loss = -critic1(x, pi).mean() + action_l2", "actor_loss = critic1(x, pi).mean() + action_l2",
      SHARED("td3_her"),
      "the actor minimises Q"),
    m("td3_her@action_l2_sign", "research/td3_her.py",
      "actor_loss = -critic1(x, pi).mean() + action_l2", "actor_loss = -critic1(x, pi).mean() - action_l2",
      SHARED("td3_her"),
      "the action L2 penalty rewards large actions"),
    m("sac_her@action_l2_sign", "research/sac_her.py",
      "                  + action_l2 * (pi_mean / actor.max_u).square().mean())",
      "                  - action_l2 * (pi_mean / actor.max_u).square().mean())",
      ["tests/test_research_sac_her.py", "-x", "-q"], "the action L2 penalty rewards large mean actions"),
    # the same breaks in issue 32's later forks, whose copies are ddpg_her.py's lines verbatim (PPO: the normaliser)
    *[m(f"{fork}@normaliser_frozen", f"research/{fork}.py", "        self.count += len(x)\n",
        "        self.count += 0 * len(x)\n", SHARED(fork), "the normaliser's count never moves")
      for fork in ("ddpg_her_gamma_eps", "ddpg_her_goal_td", "ddpg_her_qr", "ddpg_her_frequent", "hac_her", "ppo_her")],
    *[m(f"{fork}@polyak_inverted", f"research/{fork}.py",
        "torch._foreach_lerp_(target_params, main_params, 1.0 - args.polyak)",
        "torch._foreach_lerp_(target_params, main_params, args.polyak)", SHARED(fork),
        "the target networks averaged with 1 - polyak")
      for fork in ("ddpg_her_gamma_eps", "ddpg_her_goal_td", "ddpg_her_qr", "ddpg_her_frequent", "hac_her")],
    *[m(f"{fork}@{name}", f"research/{fork}.py", "actor_loss = -critic(x[0], pi).mean() + action_l2", new,
        SHARED(fork), description)
      for fork in ("ddpg_her_gamma_eps", "ddpg_her_goal_td", "ddpg_her_qr", "ddpg_her_frequent", "hac_her")
      for name, new, description in (
          ("actor_loss_sign", "actor_loss = critic(x[0], pi).mean() + action_l2", "the actor minimises Q"),
          ("action_l2_sign", "actor_loss = -critic(x[0], pi).mean() - action_l2",
           "the action L2 penalty rewards large actions"))],
    # ---- GoalVectorEnv, gym.make_vec's batched env (tests/test_vector.py) -------------------------------------------
    m("batch_no_autoreset", "envs/vector.py",
      "        if self._autoreset.any():  # next-step autoreset", "        if False:  # next-step autoreset",
      BATCH, "GoalVectorEnv steps an ended episode instead of resetting it"),
    m("batch_time_limit_late", "envs/vector.py",
      "(self._elapsed >= self.max_episode_steps)", "(self._elapsed > self.max_episode_steps)",
      BATCH, "GoalVectorEnv truncates one step late"),
    m("batch_same_seed_everywhere", "envs/vector.py",
      "seed = [int(seed) + i for i in range(self.num_envs)]", "seed = [int(seed) for i in range(self.num_envs)]",
      BATCH, "GoalVectorEnv seeds every sub-env alike"),
    m("batch_unseeded_reset_reseeds", "envs/vector.py",
      "if (seed is not None and seed[i] is not None) or self._rngs[i] is None:", "if True:",
      ["tests/test_vector.py", "-x", "-q", "-k", "unseeded"], "reset() without a seed starts fresh generators"),
    m("batch_jacobian_cross_sign", "envs/vector.py",
      "ang[..., 1] * r[..., 2] - ang[..., 2] * r[..., 1],", "ang[..., 2] * r[..., 1] - ang[..., 1] * r[..., 2],",
      ["tests/test_vector.py", "-x", "-q", "-k", "jacobians"],
      "the batch's site Jacobian: a sign of the cross product"),
    m("batch_kinematics_flags_kept", "envs/vector.py",
      "            self._flags[:] = self._flags_kept\n", "            pass\n",
      BATCH, "contacts stay off after the blocked gripper's kinematics"),
    m("batch_nan_actions_pass", "envs/vector.py",
      "        if not finite.all():", "        if False:",
      ["tests/test_vector.py", "-x", "-q", "-k", "bad_actions"], "GoalVectorEnv takes NaN actions"),
    m("batch_unstable_silent", "envs/vector.py",
      "        unstable = stepping & self.sims.warning_number[:, _UNSTABLE].any(axis=1)",
      "        unstable = stepping & False",
      ["tests/test_vector.py", "-x", "-q", "-k", "unstable"], "an unstable simulation goes unreported"),
    m("batch_error_unnamed", "envs/vector.py",
      "        if not hasattr(error, \"ids\"):", "        if True:",
      ["tests/test_vector.py", "-x", "-q", "-k", "mujoco_error"], "a MuJoCo error does not name its env"),
    m("batch_reward_of_reset_rows", "envs/vector.py",
      "rewards = np.where(stepping, self.task.compute_reward(achieved, self._goals, {}), 0.0)",
      "rewards = np.where(True, self.task.compute_reward(achieved, self._goals, {}), 0.0)",
      BATCH, "an autoreset step reports a reward"),
    m("make_vec_own_task_batched", "envs/vector.py",
      "    if entry_point is None:\n", "    if False:\n",
      ["tests/test_vector.py", "-x", "-q", "-k", "your_own"], "a task of your own is handed nthread it does not take"),
    m("batch_training_collection", "envs/vector.py",
      "if (seed is not None and seed[i] is not None) or self._rngs[i] is None:", "if True:",
      ["tests/test_vector.py", "-x", "-q", "-k", "training_collects"],
      "every reset reseeds the sub-envs afresh: the first epoch differs from the threads' collection"),
    # ---- envs.ThreadVectorEnv (tests/test_vector.py) ---------------------------------------------------------------
    m("vector_no_autoreset", "envs/vector.py",
      "            if self._autoreset_envs[i]:", "            if False:",
      ["tests/test_vector.py", "-x", "-q"], "ThreadVectorEnv steps an ended episode instead of resetting it"),
    m("vector_same_seed_everywhere", "envs/vector.py",
      "[seed + i for i in range(self.num_envs)]", "[seed for i in range(self.num_envs)]",
      ["tests/test_vector.py", "-x", "-q"], "ThreadVectorEnv seeds every sub-env alike"),
    m("vector_errors_swallowed", "envs/vector.py",
      "            future.result()", "            future.exception()",
      ["tests/test_vector.py", "-x", "-q"], "an error in a thread does not reach the caller"),
]


def make_copy() -> str:
    scratch = tempfile.mkdtemp(prefix="mutation-")
    root = os.path.join(scratch, "repo")
    shutil.copytree(REPO, root, ignore=IGNORE, symlinks=True)
    ref = os.path.join(REPO, ".venv-ref")
    if os.path.isdir(ref):
        os.symlink(ref, os.path.join(root, ".venv-ref"))
    return root


def run_env(root: str, extra: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    env.setdefault("MUJOCO_GL", "egl")
    return env


def run_pytest(root: str, tests: list, extra_env: dict, timeout: float) -> tuple:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=run_env(root, extra_env), capture_output=True, text=True,
                              timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = -1, (exc.stdout or "") if isinstance(exc.stdout, str) else ""
    return rc, out, time.perf_counter() - t0


def verdict(rc: int, out: str) -> tuple:
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
    if rc == 0:
        return "SURVIVED", ""
    if rc == 1:
        return "CAUGHT", failed[0] if failed else "(failures)"
    if rc == 2 and failed:
        return "CAUGHT", failed[0] + " (collection error)"
    if rc == -1:
        return "TIMEOUT", ""
    return "ERROR", f"pytest exit {rc}: " + out.strip().splitlines()[-1][:120] if out.strip() else f"pytest exit {rc}"


def check_texts(mutations) -> list:
    problems = []
    for mu in mutations:
        path = os.path.join(REPO, mu["file"])
        text = open(path).read() if os.path.exists(path) else ""
        n = text.count(mu["old"])
        if n != 1:
            problems.append(f"{mu['name']}: the old text occurs {n} times in {mu['file']} (must be exactly once)")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations (names or shell patterns)")
    p.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="leave these out (names or patterns)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--baseline", action="store_true", help="first run each test selection on the unmutated copy")
    p.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    p.add_argument("-v", "--verbose", action="store_true", help="print the pytest output tail of each run")
    args = p.parse_args(argv)

    chosen = [mu for mu in MUTATIONS
              if (not args.only or any(fnmatch.fnmatch(mu["name"], pat) for pat in args.only))
              and not any(fnmatch.fnmatch(mu["name"], pat) for pat in args.skip)]
    if args.list:
        for mu in MUTATIONS:
            env = " ".join(f"{k}={v!r}" for k, v in mu["env"].items())
            print(f"{mu['name']:<36} {mu['file']:<18} {'' if mu['must_catch'] else '(may survive) '}{mu['description']}"
                  f"\n{'':<36} pytest {' '.join(mu['tests'])} {env}")
        return 0
    if not chosen:
        print("mutation_check: no mutation matches", file=sys.stderr)
        return 2
    problems = check_texts(chosen)
    if problems:
        print("mutation_check: " + "\n  ".join(["old texts not found exactly once:"] + problems), file=sys.stderr)
        return 2

    root = make_copy()
    results = []
    try:
        where = subprocess.run([sys.executable, "-c", "import envs; print(envs.__file__)"], cwd=root,
                               env=run_env(root, {}), capture_output=True, text=True).stdout.strip()
        if not where.startswith(root):
            print(f"mutation_check: the copy imports envs from {where!r}, not from {root}", file=sys.stderr)
            return 2
        print(f"mutation_check: {len(chosen)} mutations in a copy at {root}", flush=True)
        if args.baseline:
            for tests, env in {(tuple(mu["tests"]), tuple(sorted(mu["env"].items()))) for mu in chosen}:
                rc, out, sec = run_pytest(root, list(tests), dict(env), args.timeout)
                print(f"  baseline {'pass' if rc == 0 else 'FAIL'} ({sec:.0f} s): pytest {' '.join(tests)} {dict(env)}",
                      flush=True)
                if rc != 0:
                    print(out[-3000:])
                    return 2
        for mu in chosen:
            path = os.path.join(root, mu["file"])
            original = open(path).read()
            try:
                with open(path, "w") as f:
                    f.write(original.replace(mu["old"], mu["new"], 1))
                rc, out, sec = run_pytest(root, mu["tests"], mu["env"], args.timeout)
            finally:
                with open(path, "w") as f:
                    f.write(original)
            result, where = verdict(rc, out)
            results.append((mu, result, where, sec))
            print(f"  {result:<8} {mu['name']:<36} {sec:5.0f} s  {where}", flush=True)
            if args.verbose:
                print("\n".join("      " + line for line in out.strip().splitlines()[-15:]))
    finally:
        shutil.rmtree(os.path.dirname(root), ignore_errors=True)

    rows = [("mutation", "file", "result", "first failing test", "s", "description")]
    rows += [(mu["name"], mu["file"], r + ("" if mu["must_catch"] or r == "CAUGHT" else " (allowed)"), w, f"{s:.0f}",
              mu["description"]) for mu, r, w, s in results]
    widths = [max(len(str(x)) for x in col) for col in zip(*rows)]
    print()
    for i, row in enumerate(rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    missed = [mu["name"] for mu, r, _, _ in results if mu["must_catch"] and r != "CAUGHT"]
    print(f"\nmutation_check: {sum(r == 'CAUGHT' for _, r, _, _ in results)}/{len(results)} caught"
          + (f"; not caught (must be): {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
