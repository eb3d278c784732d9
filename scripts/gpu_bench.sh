#!/usr/bin/env bash
# Throughput on a many-core machine with one CUDA GPU (issue 11), in one go. Run from the repository root with the
# requirements installed; everything is printed, and $OUT (default gpu_bench/) gets the runs' metrics and logs.
#   scripts/gpu_bench.sh [SECONDS]   # SECONDS: all steps together (default 500); step 5 gets what is left
# 0. the CUDA tests (tests/test_reward_torch.py, tests/test_ddpg_her.py: -k cuda);
# 1. a short learning check on the GPU: FetchReach-v0, 3 epochs of 10 cycles, updates as CUDA graphs, then eager;
# 2. a tiny FetchReach run, its directory as OUT/gpu_tiny_run.tgz (tests/data/: resumed and evaluated on a CPU);
# 3. scripts/bench_train.py --paper-budget: one paper-budget epoch of FetchPush-v0 (its time per phase), ms per
#    update eager and as one CUDA graph at the paper's batch 4864, sampling, checkpoints, Stable-Baselines3;
# 4. scripts/bench_envs.py: collection with 16 and 38 (the paper's) sub-envs, processes against threads;
# 5. ddpg_her.py --paper-budget on FetchPickAndPlace-v0 for 50 epochs, or as many as fit in the time left.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_bench}
mkdir -p "$out"
end=$((SECONDS + ${1:-500}))
export PYTHONUNBUFFERED=1  # what a step printed survives its timeout
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "$(nproc) CPUs; $(python -c 'import torch, mujoco; print("torch", torch.__version__, "mujoco", mujoco.__version__)')"
step() {  # STEP_SECONDS COMMAND...: a step under its own time limit (never past the end), killed with its children
  local t=$(( $1 < end - SECONDS - 5 ? $1 : end - SECONDS - 5 )); shift
  if (( t > 0 )); then timeout -k 5 "$t" "$@"; fi  # (timeout kills the process group: env workers too)
}
last_run() { ls -d runs/*__"$1"__* 2>/dev/null | tail -1; }
copy() {  # a run's small logs, as OUT/NAME_metrics.csv and OUT/NAME_log.txt
  [ -n "$(last_run "$1")" ] || return 0
  cp "$(last_run "$1")/metrics.csv" "$out/$1_metrics.csv"
  cp "$(last_run "$1")/log.txt" "$out/$1_log.txt"
}
trap 'copy gpu_pnp' EXIT  # the long run's logs come back however the script ends
echo "== 0. CUDA tests"
step 90 python -m pytest -q -p no:cacheprovider tests/test_reward_torch.py tests/test_ddpg_her.py -k cuda
echo "== 1. learning check, CUDA graphs, then eager"
step 60 python ddpg_her.py --env-id FetchReach-v0 --n-epochs 3 --n-cycles 10 --exp-name gpu_reach --no-checkpoint
copy gpu_reach
step 60 python ddpg_her.py --env-id FetchReach-v0 --n-epochs 3 --n-cycles 10 --exp-name gpu_reach_eager \
  --no-checkpoint --no-cudagraphs
echo "== 2. a tiny run with its checkpoint"
step 60 python ddpg_her.py --env-id FetchReach-v0 --n-epochs 2 --n-envs 2 --n-cycles 2 --n-batches 2 --batch-size 32 \
  --hidden 32 --buffer-size 10000 --n-test-rollouts 1 --save-model --exp-name gpu_tiny
[ -n "$(last_run gpu_tiny)" ] && tar czf "$out/gpu_tiny_run.tgz" -C runs "$(basename "$(last_run gpu_tiny)")"
echo "== 3. bench_train.py --paper-budget"
step 150 python scripts/bench_train.py --paper-budget --n 50 --sb3-steps 1000
echo "== 4. bench_envs.py"
step 90 python scripts/bench_envs.py --ids FetchPush-v0 --steps 500 --resets 20 --vector-ids FetchPush-v0 \
  --vector-envs 16 38 --vector-steps 7600 --rounds 2
echo "== 5. 50 paper epochs of FetchPickAndPlace-v0 (at most $((end - SECONDS - 5)) s)"
step 100000 python ddpg_her.py --paper-budget --env-id FetchPickAndPlace-v0 --n-epochs 50 --exp-name gpu_pnp
