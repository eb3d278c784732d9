#!/usr/bin/env bash
# The runs behind docs/performance.md's 2026-11-25 FetchPush figures (FetchPush-v0, the 2-core defaults), one after another so
# that their timings stay comparable, then their logs copied to results/push_2cores/ and the figures drawn from there.
# About 2 hours on 2 cores: DDPG+HER sparse on 3 seeds (bf16 matmuls, the default), the same seed 1 in fp32
# (--no-bf16-matmul), and seed 1 of each other configuration (DDPG+HER dense for longer: it learns later).
set -euo pipefail
cd "$(dirname "$0")/../.."
for seed in 1 2 3; do python ddpg_her.py --env-id FetchPush-v0 --seed $seed --n-epochs 18 --save-model; done
python ddpg_her.py --env-id FetchPush-v0 --seed 1 --n-epochs 18 --no-bf16-matmul --exp-name ddpg_her_fp32
python ddpg_her_dense.py --env-id FetchPushDense-v0 --seed 1 --n-epochs 30
python ddpg.py --env-id FetchPush-v0 --seed 1 --n-epochs 10
python ddpg_dense.py --env-id FetchPushDense-v0 --seed 1 --n-epochs 10
# Keep the small logs (not the checkpoints) with the repository: the figures can be redrawn from them. (This takes
# every FetchPush run in runs/: start from an empty runs/.)
for run in runs/FetchPush*-v0__*; do
  mkdir -p "results/push_2cores/$(basename "$run")"
  cp "$run"/{config.json,metrics.csv,log.txt} "results/push_2cores/$(basename "$run")/"
done
# The saved DDPG+HER policies on 100 fresh episodes each.
for run in runs/FetchPush-v0__ddpg_her__*; do
  python evaluate.py "$run/model.pt" --episodes 100 | tee "results/push_2cores/$(basename "$run")/eval.txt"
done
python scripts/plot.py --runs-dir results/push_2cores --exps ddpg_her ddpg_her_dense ddpg ddpg_dense \
  --title "FetchPush-v0, 2-core defaults" --out figures/push_2cores.png
python scripts/plot.py --runs-dir results/push_2cores --exps ddpg_her ddpg_her_dense ddpg ddpg_dense --x elapsed_s \
  --title "FetchPush-v0, 2-core defaults" --out figures/push_2cores_minutes.png
python scripts/plot.py --runs-dir results/push_2cores --envs FetchPush-v0 --exps ddpg_her ddpg_her_fp32 \
  --title "DDPG+HER, bf16 matmuls (default) vs fp32" --out figures/push_bf16_vs_fp32.png
