#!/usr/bin/env bash
# What README.md (Training, "Measured on this machine") reports for a 2-core machine, on FetchPush-v0 with the
# defaults: DDPG+HER sparse on 3 seeds (bf16 matmuls, the default) and the same 3 seeds in fp32 (--no-bf16-matmul),
# one seed of each other configuration, then the figures. Runs go one after another, about 4 hours in all.
set -euo pipefail
cd "$(dirname "$0")/.."
for seed in 1 2 3; do
  python ddpg_her.py --env-id FetchPush-v0 --seed "$seed" --n-epochs 18 --save-model
  python ddpg_her.py --env-id FetchPush-v0 --seed "$seed" --n-epochs 18 --no-bf16-matmul --exp-name ddpg_her_fp32
done
python ddpg_her_dense.py --env-id FetchPushDense-v0 --seed 1 --n-epochs 36
python ddpg.py --env-id FetchPush-v0 --seed 1 --n-epochs 20
python ddpg_dense.py --env-id FetchPushDense-v0 --seed 1 --n-epochs 20
python scripts/plot.py --envs FetchPush-v0 --exps ddpg_her ddpg_her_fp32 --out figures/push_bf16_vs_fp32.png
python scripts/plot.py --envs FetchPush-v0 --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --out figures/push_2cores.png
python scripts/plot.py --envs FetchPush-v0 --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --x elapsed_s \
  --out figures/push_2cores_minutes.png
