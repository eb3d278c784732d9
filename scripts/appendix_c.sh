#!/usr/bin/env bash
# The paper's Appendix C: the four configurations on all 13 environments (50 epochs for Fetch and HandReach,
# 200 for the 8 hand-manipulation tasks), 5 seeds, the paper's budget: 260 runs.
# Runs the grid on Ray (scripts/grid.py; local by default, --address for a cluster), then draws the figure
# (grids/appendix_c/appendix_c.png and .pdf) and the table (grids/appendix_c/appendix_c.md). Rerun the same command to continue after a kill.
# Any scripts/grid.py option runs a part of it or sizes it to the machine (docs/grid.md):
#   scripts/appendix_c.sh --smoke                          # every env and config, seed 1, 1 tiny epoch: minutes
#   scripts/appendix_c.sh --envs FetchPush-v0 --seeds 1 2 --epochs 10 --out grids/part
#   scripts/appendix_c.sh --configs ddpg_her ddpg --extra "" --cpus-per-run 4   # the 2-core defaults instead of the budget
#   scripts/appendix_c.sh --address auto --cpus-per-run 8 --track            # on a Ray cluster, logged to W&B
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/grid.py --figure appendix_c "$@"
