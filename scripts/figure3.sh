#!/usr/bin/env bash
# The paper's Figure 3: the four configurations on the four Fetch tasks (FetchReach, FetchPush, FetchSlide,
# FetchPickAndPlace), 5 seeds, 50 epochs at the paper's budget (--paper-budget), 80 runs of 4.75M env steps.
# Runs the grid on Ray (scripts/grid.py; local by default, --address for a cluster), then draws the figure
# (grids/figure3/figure3.png and .pdf) and the table (grids/figure3/figure3.md). Rerun the same command to continue after a kill.
# Any scripts/grid.py option runs a part of it or sizes it to the machine (docs/grid.md):
#   scripts/figure3.sh --smoke                          # every env and config, seed 1, 1 tiny epoch: minutes
#   scripts/figure3.sh --envs FetchPush-v0 --seeds 1 2 --epochs 10 --out grids/part
#   scripts/figure3.sh --configs ddpg_her ddpg --extra "" --cpus-per-run 4   # the 2-core defaults instead of the budget
#   scripts/figure3.sh --address auto --cpus-per-run 8 --track            # on a Ray cluster, logged to W&B
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/grid.py --figure figure3 "$@"
