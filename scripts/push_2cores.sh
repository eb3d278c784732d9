#!/usr/bin/env bash
# What README.md (Training) reports for a 2-core machine: FetchPush-v0 with the defaults, DDPG+HER sparse on 3 seeds and
# one seed of each other configuration, then the curves (per epoch and per minute).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-25}
for seed in 1 2 3; do
  python ddpg_her.py --env-id FetchPush-v0 --seed "$seed" --n-epochs "$EPOCHS" --save-model
done
python ddpg_her_dense.py --env-id FetchPushDense-v0 --seed 1 --n-epochs "$EPOCHS"
python ddpg.py --env-id FetchPush-v0 --seed 1 --n-epochs "$EPOCHS"
python ddpg_dense.py --env-id FetchPushDense-v0 --seed 1 --n-epochs "$EPOCHS"
python scripts/plot.py --envs FetchPush-v0 --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --out figures/push_2cores.png
python scripts/plot.py --envs FetchPush-v0 --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --x elapsed_s \
  --out figures/push_2cores_minutes.png
