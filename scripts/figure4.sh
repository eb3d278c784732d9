#!/usr/bin/env bash
# The paper's Figure 4: the four configurations on HandReach (50 epochs), HandManipulateBlockRotateXYZ,
# HandManipulateEggFull and HandManipulatePenRotate (200 epochs each), 5 seeds, the paper's budget: 80 runs.
# Runs the grid on Ray (scripts/grid.py; local by default, --address for a cluster), then draws the figure
# (grids/figure4/figure4.png and .pdf) and the table (grids/figure4/figure4.md). Rerun the same command to continue after a kill.
# Any scripts/grid.py option runs a part of it or sizes it to the machine (docs/grid.md):
#   scripts/figure4.sh --smoke                          # every env and config, seed 1, 1 tiny epoch: minutes
#   scripts/figure4.sh --envs HandReach-v0 --seeds 1 2 --epochs 10 --out grids/part
#   scripts/figure4.sh --configs ddpg_her ddpg --extra "" --cpus-per-run 4   # the 2-core defaults instead of the budget
#   scripts/figure4.sh --address auto --cpus-per-run 8 --track            # on a Ray cluster, logged to W&B
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/grid.py --figure figure4 "$@"
