#!/usr/bin/env bash
# The paper's Figure 3: the four configurations on the four Fetch tasks, 5 seeds, 50 epochs each, with the paper's
# per-epoch budget (--paper-budget: 1900 episodes and 2000 updates of 19 x 256 transitions per epoch), then the plot.
# That is 80 runs of 4.75M env steps: days on a laptop. Override the lists to run a part of it, e.g.
#   ENVS="FetchPush" SEEDS="1 2 3" EXTRA="" scripts/fetch_figure.sh     # the 2-core defaults instead of the budget
# Runs go one after another (timings stay comparable); a finished run is skipped when the script is rerun
# (an interrupted one is not resumed: use --resume runs/NAME for that).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVS=${ENVS:-"FetchReach FetchPush FetchSlide FetchPickAndPlace"}
SEEDS=${SEEDS:-"1 2 3 4 5"}
CONFIGS=${CONFIGS:-"ddpg_her ddpg_her_dense ddpg ddpg_dense"}
EPOCHS=${EPOCHS:-50}
EXTRA=${EXTRA:---paper-budget}
for env in $ENVS; do
  for config in $CONFIGS; do
    id="$env-v0"
    [[ $config == *dense ]] && id="${env}Dense-v0"
    for seed in $SEEDS; do
      if grep -qs "^done:" runs/${id}__${config}__${seed}__*/log.txt; then
        echo "skip $config $id seed $seed (done)"; continue
      fi
      python "$config.py" --env-id "$id" --seed "$seed" --n-epochs "$EPOCHS" --save-model $EXTRA
    done
  done
done
python scripts/plot.py --exps $CONFIGS --out figures/fetch_test_success.png --title "Fetch, median and IQR over seeds"
