#!/usr/bin/env bash
# The comparisons of docs/research.md: the research forks (research/*.py) against ddpg_her.py, on the same budget,
# seeds and machine, as grids on Ray (scripts/grid.py), two runs at a time on one core each (2-core defaults: an
# epoch is 40,000 env steps, a reduced scale against the paper's 95,000). Each grid writes a folder
# results/research/PART or PART_VARIANT (the runs' small logs, the grid's figure and table); rerun after a kill:
# finished runs are skipped, interrupted ones resume. The checkpoints are not kept in the repository (.gitignore).
#   scripts/research.sh                 # every part, in order (hours on 2 cores)
#   scripts/research.sh push polyak     # some parts
#   scripts/research.sh --smoke         # every part end to end with a tiny budget (minutes), in a temporary folder
#   OUT=DIR scripts/research.sh ...     # the parts' folders in DIR instead of results/research (or the temporary one)
set -euo pipefail
cd "$(dirname "$0")/.."
forks="research/ddpg_her_nstep research/td3_her research/sac_her research/ddpg_her_prioritized"
# the Fetch tasks with an object: also the reach task (RHER), alone and with n-step returns (the combined fork)
object_forks="$forks research/ddpg_her_relay research/ddpg_her_relay_nstep"
smoke=()
out=${OUT:-results/research}  # OUT=DIR: the parts' folders go there instead
if [ "${1:-}" = --smoke ]; then
  shift
  smoke=(--smoke --seeds 1)
  out=${OUT:-$(mktemp -d)/research}
fi
grid() {  # PART, then grid.py options (--smoke replaces the budget: 1 epoch of 2 cycles, tiny networks)
  local part=$1; shift
  if ((${#smoke[@]})); then
    python scripts/grid.py --out "$out/$part" --cpus-per-run 1 "$@" "${smoke[@]}" --epochs 1
  else
    python scripts/grid.py --out "$out/$part" --cpus-per-run 1 "$@"
  fi
}
all="screen push utd batch256 utd80 combined_polyak pnp_screen pnp hand polyak mher rfr_push rfr_gamma_eps rfr_ppo rfr_goal_td rfr_qr rfr_frequent rfr_hac rfr_unbiased"
parts=${*:-$all}
for part in $parts; do
  case $part in
    # A first look, seed 1: every fork and the baseline on FetchPush for 5 epochs, the goal's budget (200,000 env
    # steps).
    screen) grid screen --envs FetchPush-v0 --configs ddpg_her $object_forks --seeds 1 --extra "" --epochs 5 ;;
    # Every fork and the baseline on FetchPush and FetchPickAndPlace, 3 seeds, the 2-core defaults.
    push) grid push --envs FetchPush-v0 --configs ddpg_her $object_forks --seeds 1 2 3 --extra "" --epochs 15 ;;
    # More updates per env step: 3x the 2-core defaults' 40 updates per cycle, for the baseline, the n-step fork (the
    # one fork that left the do-nothing level in part screen), the relay fork and the combined fork, 3 seeds, the
    # goal's budget.
    utd) grid utd --envs FetchPush-v0 --configs ddpg_her research/ddpg_her_nstep research/ddpg_her_relay \
      research/ddpg_her_relay_nstep --seeds 1 2 3 --extra "--n-batches 120" --epochs 5 ;;
    # A pilot: the relay fork with 4x the updates at a quarter of the batch (the same replayed samples per env step
    # as part utd's 3x; the cheaper updates of RHER's batch 256), seed 1, the goal's budget.
    batch256) grid batch256 --envs FetchPush-v0 --configs research/ddpg_her_relay --seeds 1 \
      --extra "--batch-size 256 --n-batches 160" --epochs 5 ;;
    # FetchPickAndPlace at the goal's budget (400,000 env steps): the combined fork, the best on FetchPush, against
    # the baseline, 3 seeds; then the combined fork with part utd80's best arm (2x the updates, --polyak 0.9), and
    # with 3x the updates and --polyak 0.9; then the n-step fork, the best section-2 fork on FetchPush; then the other
    # forks, each at its defaults (TD3, SAC, prioritised replay, the reach task alone).
    pnp_screen)
      grid pnp_screen --envs FetchPickAndPlace-v0 --configs ddpg_her research/ddpg_her_relay_nstep \
        --seeds 1 2 3 --extra "" --epochs 10
      grid pnp_screen_utd80_polyak_0.9 --envs FetchPickAndPlace-v0 --configs research/ddpg_her_relay_nstep \
        --seeds 1 2 3 --extra "--n-batches 80 --polyak 0.9" --epochs 10
      grid pnp_screen_utd120_polyak_0.9 --envs FetchPickAndPlace-v0 --configs research/ddpg_her_relay_nstep \
        --seeds 1 2 3 --extra "--n-batches 120 --polyak 0.9" --epochs 10
      grid pnp_screen_nstep --envs FetchPickAndPlace-v0 --configs research/ddpg_her_nstep --seeds 1 2 3 --extra "" \
        --epochs 10
      grid pnp_screen_forks --envs FetchPickAndPlace-v0 --configs research/td3_her research/sac_her \
        research/ddpg_her_prioritized research/ddpg_her_relay --seeds 1 2 3 --extra "" --epochs 10 ;;
    # Toward the goal's two conditions at once (0.9 within 200,000 env steps, and no more minutes than ddpg_her.py),
    # the combined fork, 3 seeds: with 2x the updates per cycle (part utd's 3x met the env steps at 2.8x the cost per
    # env step), alone and with --polyak 0.9 ...
    utd80)
      grid utd80 --envs FetchPush-v0 --configs research/ddpg_her_relay_nstep --seeds 1 2 3 \
        --extra "--n-batches 80" --epochs 5
      grid utd80_polyak_0.9 --envs FetchPush-v0 --configs research/ddpg_her_relay_nstep --seeds 1 2 3 \
        --extra "--n-batches 80 --polyak 0.9" --epochs 5 ;;
    # ... and with its target networks moving further per cycle (2x, 4x; the updates' cost unchanged).
    combined_polyak)
      for p in 0.9 0.8; do
        grid "combined_polyak_$p" --envs FetchPush-v0 --configs research/ddpg_her_relay_nstep --seeds 1 2 3 \
          --extra "--polyak $p" --epochs 5
      done ;;
    # Every fork and the baseline on FetchPickAndPlace, 3 seeds, 1M env steps. (The campaign's ddpg_her runs here are
    # part pnp_screen's, copied with their checkpoints and resumed from epoch 10: the grid resumes a shorter run.)
    pnp) grid pnp --envs FetchPickAndPlace-v0 --configs ddpg_her $object_forks --seeds 1 2 3 --extra "" --epochs 25 ;;
    # HandManipulateBlockRotateZ: 1 seed, 12 epochs (80,000 env steps each; the baseline reached 0.42 there).
    hand) grid hand --envs HandManipulateBlockRotateZ-v0 --configs ddpg_her $forks --seeds 1 --extra "" --epochs 12 ;;
    # Faster information propagation, no fork: ddpg_her.py with other polyak coefficients (the target networks move
    # once per cycle; 1 - polyak is how far). One grid per value; plot.py --split-by polyak draws them together.
    polyak)
      for p in 0.8 0.9 0.98; do
        grid "polyak_$p" --envs FetchPush-v0 --configs ddpg_her --seeds 1 2 3 --extra "--polyak $p" --epochs 15
      done
      if ((${#smoke[@]} == 0)); then
        python scripts/plot.py --runs-dir "$out"/polyak_*/runs "$out"/push/runs --envs FetchPush-v0 --exps ddpg_her \
          --split-by polyak --x env_steps --out "$out/polyak.png" --title "FetchPush-v0, ddpg_her.py by --polyak"
      fi ;;
    # The n-step fork's correction for off-policy data, MHER(lambda) (--mher-lambda 0.7, Yang et al.'s scripts), on
    # FetchPush, 3 seeds, 400,000 env steps; its comparison is part push's n-step fork and ddpg_her.py, same seeds.
    mher) grid mher --envs FetchPush-v0 --configs research/ddpg_her_nstep --seeds 1 2 3 --extra "--mher-lambda 0.7" \
      --epochs 10 ;;
    # Issue 32, the Request for Research's other paragraphs: each fork on FetchPush, 3 seeds, 600,000 env steps,
    # beside ddpg_her.py of the same commit (ddpg_her.py and envs/ changed since part push: the batched envs).
    rfr_push) grid rfr_push --envs FetchPush-v0 --configs ddpg_her research/ddpg_her_gamma_eps --seeds 1 2 3 \
      --extra "" --epochs 15 ;;
    # The gamma-epsilon fork's own conditions: gamma alone (--no-sample-eps) and epsilon alone (--no-sample-gamma),
    # FetchPush, 3 seeds, 600,000 env steps; part rfr_push holds both together and the baseline.
    rfr_gamma_eps)
      grid rfr_gamma_only --envs FetchPush-v0 --configs research/ddpg_her_gamma_eps --seeds 1 2 3 \
        --extra=--no-sample-eps --epochs 15
      grid rfr_eps_only --envs FetchPush-v0 --configs research/ddpg_her_gamma_eps --seeds 1 2 3 \
        --extra=--no-sample-gamma --epochs 15 ;;
    # On-policy HER (research/ppo_her.py: PPO with hindsight policy gradients' weights) and PPO without hindsight: on
    # FetchReach, 3 seeds, 200,000 env steps, beside ddpg_her.py; on FetchPush, 3 seeds, 600,000 env steps (part
    # rfr_push holds ddpg_her.py's runs).
    rfr_ppo)
      grid rfr_ppo_reach --envs FetchReach-v0 --configs ddpg_her research/ppo_her --seeds 1 2 3 --extra "" --epochs 5
      grid rfr_ppo_reach_no_hindsight --envs FetchReach-v0 --configs research/ppo_her --seeds 1 2 3 \
        --extra=--no-hindsight --epochs 5
      grid rfr_ppo_push --envs FetchPush-v0 --configs research/ppo_her --seeds 1 2 3 --extra "" --epochs 15
      grid rfr_ppo_push_no_hindsight --envs FetchPush-v0 --configs research/ppo_her --seeds 1 2 3 \
        --extra=--no-hindsight --epochs 15 ;;
    # Automatic hindsight goals (research/ddpg_her_goal_td.py: of 4 candidate goals, 2 future and 2 from the buffer,
    # the one of largest |TD error| replayed), FetchPush, 3 seeds, 600,000 env steps (part rfr_push: the baseline);
    # its own condition: the 4 candidates all future goals (the choosing without the buffer's goals).
    rfr_goal_td)
      grid rfr_goal_td --envs FetchPush-v0 --configs research/ddpg_her_goal_td --seeds 1 2 3 --extra "" --epochs 15
      grid rfr_goal_td_future --envs FetchPush-v0 --configs research/ddpg_her_goal_td --seeds 1 2 3 \
        --extra "--buffer-goal-frac 0" --epochs 15 ;;
    # A distributional critic (research/ddpg_her_qr.py: 25 quantiles, QR's loss), FetchPush, 3 seeds, 600,000 env
    # steps (part rfr_push: the baseline); its own condition: TQC's truncation (the top 2 of 25 target quantiles
    # dropped, the ratio of TQC's 10 of 125).
    rfr_qr)
      grid rfr_qr --envs FetchPush-v0 --configs research/ddpg_her_qr --seeds 1 2 3 --extra "" --epochs 15
      grid rfr_qr_tqc --envs FetchPush-v0 --configs research/ddpg_her_qr --seeds 1 2 3 \
        --extra "--drop-top-quantiles 2" --epochs 15 ;;
    # Very frequent actions (research/ddpg_her_frequent.py): FetchPush at 50, 100 and 250 Hz (n_substeps 10, 5, 2),
    # 2 s episodes and the discount per second of 25 Hz, the same episodes and updates as ddpg_her.py (15 epochs:
    # 12,000 episodes, 600,000 env steps at 25 Hz, 6,000,000 at 250 Hz; part rfr_push is 25 Hz), 3 seeds; then at
    # 250 Hz the paper's remedies: parameter-space noise in place of the Gaussian action noise, 1-step-at-25-Hz
    # returns (10 steps at 250 Hz), and both. Compare the curves by episodes (plot.py --x episodes), not env steps.
    rfr_frequent)
      for f in 50 100 250; do
        grid "rfr_frequent_${f}hz" --envs FetchPush-v0 --configs research/ddpg_her_frequent --seeds 1 2 3 \
          --extra "--frequency-hz $f" --epochs 15
      done
      grid rfr_frequent_250hz_param_noise --envs FetchPush-v0 --configs research/ddpg_her_frequent --seeds 1 2 3 \
        --extra "--frequency-hz 250 --param-noise --noise-eps 0" --epochs 15
      grid rfr_frequent_250hz_nstep --envs FetchPush-v0 --configs research/ddpg_her_frequent --seeds 1 2 3 \
        --extra "--frequency-hz 250 --n-step 1" --epochs 15
      grid rfr_frequent_250hz_both --envs FetchPush-v0 --configs research/ddpg_her_frequent --seeds 1 2 3 \
        --extra "--frequency-hz 250 --param-noise --noise-eps 0 --n-step 1" --epochs 15 ;;
    # HER + HRL (research/hac_her.py: two-level HAC, a subgoal every 10 steps, hindsight actions), FetchPush (part
    # rfr_push: the baseline) and FetchPickAndPlace beside ddpg_her.py, 3 seeds, 600,000 env steps; its own condition:
    # without the paper's hindsight actions (missed subgoals stored as proposed).
    rfr_hac)
      grid rfr_hac --envs FetchPush-v0 --configs research/hac_her --seeds 1 2 3 --extra "" --epochs 15
      grid rfr_hac_pnp --envs FetchPickAndPlace-v0 --configs ddpg_her research/hac_her --seeds 1 2 3 --extra "" \
        --epochs 15
      grid rfr_hac_no_hindsight_actions --envs FetchPush-v0 --configs research/hac_her --seeds 1 2 3 \
        --extra=--no-hindsight-actions --epochs 15 ;;
    # Unbiased HER (research/ddpg_her_unbiased.py): the bias made visible on FetchReach with a teleport action (an
    # absorbing jump to a random goal), HER as ddpg_her.py (--correction none) against the importance-sampling
    # correction, 3 seeds, 200,000 env steps; the correction's cost on the plain tasks: FetchPush (part rfr_push: the
    # baseline; --correction none is ddpg_her.py bit for bit), 600,000 env steps, and FetchReach (part rfr_ppo_reach).
    rfr_unbiased)
      grid rfr_unbiased_teleport_none --envs FetchReach-v0 --configs research/ddpg_her_unbiased --seeds 1 2 3 \
        --extra "--teleport --correction none" --epochs 5
      grid rfr_unbiased_teleport --envs FetchReach-v0 --configs research/ddpg_her_unbiased --seeds 1 2 3 \
        --extra=--teleport --epochs 5
      grid rfr_unbiased --envs FetchPush-v0 --configs research/ddpg_her_unbiased --seeds 1 2 3 --extra "" --epochs 15
      grid rfr_unbiased_reach --envs FetchReach-v0 --configs research/ddpg_her_unbiased --seeds 1 2 3 --extra "" \
        --epochs 5 ;;
    *) echo "unknown part $part (one of: $all)"; exit 2 ;;
  esac
done
