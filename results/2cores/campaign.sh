#!/usr/bin/env bash
# The results campaign behind docs/results.md, at the 2-core defaults (a reduced scale: 40,000 env steps an epoch for
# Fetch and HandReach, 80,000 for hand manipulation, against the paper's 95,000 and 190,000; see docs/algorithm.md). Each part
# is one grid on Ray (scripts/grid.py) in results/2cores/PART/, two runs at a time on one core each. Rerun the script
# to continue after a kill (finished runs are skipped, interrupted ones resume); raise a part's epochs to extend it.
# The small logs (config.json, metrics.csv, log.txt; the grid's logs/, figure and table) are kept in the repository,
# the checkpoints are not (.gitignore). Cut seeds before environments: every environment first gets one curve.
#   results/2cores/campaign.sh            # every part, in order
#   results/2cores/campaign.sh her_all    # one part
set -euo pipefail
cd "$(dirname "$0")/../.."
grid() {  # PART, then grid.py options
  local part=$1; shift
  python scripts/grid.py --out "results/2cores/$part" --cpus-per-run 1 "$@"
}
parts=${*:-"her_all configs seeds reach hand figures"}
for part in $parts; do
  case $part in
    # 1. DDPG+HER sparse on all 13 environments, seed 1: the shape of each curve (Figure 3, Figure 4, Appendix C).
    # (The hand-manipulation budgets are this first session's: raise them to extend those runs.)
    her_all) grid her_all --figure appendix_c --extra "" --configs ddpg_her --seeds 1 --epochs 1 \
      FetchReach-v0=5 FetchPush-v0=15 FetchPickAndPlace-v0=25 FetchSlide-v0=25 HandReach-v0=10 \
      HandManipulateBlockRotateZ-v0=2 HandManipulateBlockRotateXYZ-v0=2 HandManipulateEggFull-v0=2 \
      HandManipulatePenRotate-v0=2 ;;
    # 2. The other three configurations on FetchPush, FetchPickAndPlace and HandReach (the paper's orderings), seeds
    # 1-2 (seed 1 of every run first); DDPG+HER sparse comes from parts 1 and 3. Shorter than part 1: the orderings
    # show early, and these curves are compared with DDPG+HER's over the same first epochs. FetchPush (first run to
    # 10 epochs, then extended to 25): long enough to tell dense HER from DDPG.
    configs) grid configs --envs FetchPush-v0 FetchPickAndPlace-v0 HandReach-v0 --seeds 1 2 \
      --configs ddpg_her_dense ddpg ddpg_dense --epochs 10 FetchPickAndPlace-v0=12 FetchPush-v0=25 ;;
    # 3. More seeds of DDPG+HER sparse on the Fetch tasks (3 in all, at part 1's budgets).
    seeds) grid seeds --envs FetchReach-v0 FetchPush-v0 FetchPickAndPlace-v0 FetchSlide-v0 --configs ddpg_her \
      --seeds 2 3 --epochs 5 FetchPush-v0=15 FetchPickAndPlace-v0=25 FetchSlide-v0=25 ;;
    # 4. FetchReach with the other three configurations ("easily solved by all four", the paper says), seed 1.
    reach) grid reach --envs FetchReach-v0 --configs ddpg_her_dense ddpg ddpg_dense --seeds 1 --epochs 5 ;;
    # 5. DDPG+HER sparse on the eight hand-manipulation variants, seed 1, again from the start and for longer than
    # part 1 (whose checkpoints predate the incremental replay format and cannot be extended): Figure 4's four
    # 12 epochs (960,000 env steps, about 5 of the paper's 190,000-step epochs), Appendix C's four 5 epochs.
    hand) grid hand --envs HandManipulateBlockRotateZ-v0 HandManipulateBlockRotateXYZ-v0 HandManipulateEggFull-v0 \
      HandManipulatePenRotate-v0 HandManipulateBlockRotateParallel-v0 HandManipulateBlockFull-v0 \
      HandManipulateEggRotate-v0 HandManipulatePenFull-v0 --configs ddpg_her --seeds 1 --epochs 5 \
      HandManipulateBlockRotateZ-v0=12 HandManipulateBlockRotateXYZ-v0=12 HandManipulateEggFull-v0=12 \
      HandManipulatePenRotate-v0=12 ;;
    # The figures and tables of docs/results.md, redrawn from the parts' logs (no training; any time, also mid-way):
    # the paper's Figure 3, Figure 4 and Appendix C at this scale. Part 1's hand-manipulation runs (1-2 epochs) are
    # left out: part 5 ran them again, longer.
    figures)
      r=results/2cores
      fetch="FetchReach-v0 FetchPush-v0 FetchSlide-v0 FetchPickAndPlace-v0"
      hand="HandManipulateBlockRotateZ-v0 HandManipulateBlockRotateParallel-v0 HandManipulateBlockRotateXYZ-v0
        HandManipulateBlockFull-v0 HandManipulateEggRotate-v0 HandManipulateEggFull-v0 HandManipulatePenRotate-v0
        HandManipulatePenFull-v0"
      scale="2-core defaults, an epoch 40,000 env steps (Fetch, HandReach) or 80,000 (the paper: 95,000 and 190,000)"
      python scripts/plot.py --runs-dir $r/her_all/runs/Fetch* $r/seeds/runs $r/configs/runs $r/reach/runs \
        --envs $fetch --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --out $r/figure3.png \
        --title "Figure 3 at reduced scale: $scale"
      python scripts/plot.py --runs-dir $r/her_all/runs/HandReach* $r/configs/runs $r/hand/runs \
        --envs HandReach-v0 HandManipulateBlockRotateXYZ-v0 HandManipulateEggFull-v0 HandManipulatePenRotate-v0 \
        --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --out $r/figure4.png --title "Figure 4 at reduced scale: $scale"
      for x in epoch env_steps; do
        python scripts/plot.py --runs-dir $r/her_all/runs/Fetch* $r/her_all/runs/HandReach* $r/seeds/runs $r/hand/runs \
          --envs $fetch HandReach-v0 $hand --exps ddpg_her --x $x --out $r/appendix_c_$x.png \
          --title "Appendix C at reduced scale, DDPG+HER sparse: $scale"
      done ;;
    *) echo "unknown part $part (her_all, configs, seeds, reach, hand, figures)"; exit 2 ;;
  esac
done
