#!/usr/bin/env bash
# The GPU check: one command that answers yes or no on a machine with a CUDA GPU (sized for 16 cores and one GPU:
# its steps' limits add to 16 minutes: where one call may last 10, run STEPS="1 2 3 4" (about 5 minutes) and
# STEPS=5 apart). Run from the repository root with the requirements installed. Every step asserts and
# the script exits 1 if any failed (the timings are printed beside their targets and do not fail it); $OUT (default
# gpu_bench/) gets the runs' logs.
# STEPS="3 5" runs only those steps.
#   1. FetchReach-v0 learns (test success >= 0.9 after 5 epochs) with its updates as CUDA graphs;
#   2. eager and graph updates agree on a fixed batch (tests/test_run_plumbing.py, tolerance in the test);
#   3. a GPU run's checkpoint.pt and model.pt hold only CPU tensors, and the run resumes and evaluates on the CPU;
#   4. timings: lscpu; the batched env (gym.make_vec) with 38 and 256 envs on 1, 2, 4, 8 and 16 threads (target: at
#      least 16,000 env steps/s with 38 envs), from scripts/bench_envs.py; ms per update at batch 4864, eager and as a
#      graph (target: at most 1 ms), and the training time of one paper-budget FetchPush-v0 epoch (target: at most
#      6 s), from scripts/bench_train.py --paper-budget;
#   5. the fast suite passes on the GPU machine (pytest; the Ray and W&B tests only where ray and wandb are installed;
#      on the machine's cores side by side where pytest-xdist is installed). Last: it is the longest, and the
#      timings must not wait on it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_bench}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl} WANDB_MODE=disabled
STEPS=${STEPS:-1 2 3 4 5}
[[ $STEPS =~ ^[1-5]( [1-5])*$ ]] || { echo "STEPS=\"$STEPS\": give step numbers 1-5 apart by spaces" >&2; exit 2; }
failed=() ran=()
step() {  # NAME SECONDS COMMAND...: a step under its own time limit, killed with its children; a failure is noted
  local name=$1 t=$2; shift 2
  [[ " $STEPS " == *" ${name%%.*} "* ]] || return 0  # STEPS="3 5": only those steps
  echo "== $name"; ran+=("${name%%.*}")
  # timeout runs programs, not this shell's functions: a function step runs in a child bash that is given them all,
  # and this script's -u and pipefail (a child does not inherit them)
  if ! timeout -k 5 "$t" bash -uo pipefail -c "$(declare -f); $(declare -p out root); \"\$@\"" step "$@"; then
    echo "FAILED: $name"; failed+=("$name")
  fi
}
last_run() { ls -d "$out"/runs/*__"$1"__* 2>/dev/null | tail -1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c 'import torch, mujoco; print("torch", torch.__version__, "mujoco", mujoco.__version__, "CUDA", torch.cuda.is_available())'
python -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"' || exit 1
root=$PWD

learn() {
  (cd "$out" && python "$root/ddpg_her.py" --env-id FetchReach-v0 --n-epochs 5 --n-envs 4 --n-cycles 10 \
    --batch-size 256 --n-test-rollouts 5 --exp-name gpu_reach --no-checkpoint) &&
  python - "$(last_run gpu_reach)" <<'EOF'
import csv, json, sys
config = json.load(open(f"{sys.argv[1]}/config.json"))
success = float(list(csv.DictReader(open(f"{sys.argv[1]}/metrics.csv")))[-1]["test_success"])
assert config["device"] == "cuda" and config["cudagraphs"], f"not on CUDA graphs: {config.get('cudagraphs_failed')}"
assert success >= 0.9, f"FetchReach-v0 test success {success} < 0.9 after 5 epochs"
print(f"FetchReach-v0 on CUDA graphs: test success {success:.3f} after 5 epochs (>= 0.9)")
EOF
}
step "1. FetchReach-v0 learns with CUDA graphs" 90 learn

step "2. eager and graph updates agree" 60 python -m pytest -q -p no:cacheprovider tests/test_run_plumbing.py \
  -k graph_and_eager

gpu_to_cpu() {
  local tiny=(--env-id FetchReach-v0 --n-envs 2 --n-cycles 2 --n-batches 2 --batch-size 32 --hidden 32
              --buffer-size 10000 --n-test-rollouts 1)
  (cd "$out" && python "$root/ddpg_her.py" "${tiny[@]}" --n-epochs 2 --save-model --exp-name gpu_tiny) || return 1
  local run; run=$(last_run gpu_tiny)
  CUDA_VISIBLE_DEVICES= python - "$run" <<'EOF' || return 1
import sys, torch
for name in ("checkpoint.pt", "model.pt"):  # a plain torch.load, on a machine that sees no GPU
    obj = torch.load(f"{sys.argv[1]}/{name}", weights_only=False)
    tensors = []
    def walk(x):
        if isinstance(x, torch.Tensor): tensors.append(x)
        elif isinstance(x, dict): [walk(v) for v in x.values()]
        elif isinstance(x, (list, tuple)): [walk(v) for v in x]
    walk(obj)
    assert tensors and all(t.device.type == "cpu" for t in tensors), name
    print(f"{name}: {len(tensors)} tensors, all on the CPU")
EOF
  grep -q '"device": "cuda"' "$run/config.json" || return 1  # before the resume, which records its own compute
  # grep reads to the end (no -q): under pipefail, tee cut off by an early exit of grep would fail the step
  CUDA_VISIBLE_DEVICES= python ddpg_her.py --resume "$run" --n-epochs 3 | tee /dev/stderr | grep "epoch 3/3" >/dev/null &&
  grep -q '"device": "cpu"' "$run/config.json" &&
  CUDA_VISIBLE_DEVICES= python evaluate.py "$run" --episodes 2 | grep "test success"
}
step "3. a GPU run resumes and evaluates on the CPU" 90 gpu_to_cpu

timings() {
  lscpu | grep -E "^(Model name|Socket|Core|Thread|CPU\(s\))" | tee "$out/lscpu.txt"  # physical cores or SMT threads
  # the batched env (gym.make_vec) at 38 and 256 envs on 1-16 threads (target: >= 16,000 env steps/s with 38 envs)
  python scripts/bench_envs.py --ids FetchPush-v0 --steps 200 --resets 10 --vector-ids FetchPush-v0 \
    --vector-kinds sync batch --vector-envs 38 256 --vector-steps 7600 --rounds 1 --batch-threads 1 2 4 8 16 \
    --batch-steps 60 | tee "$out/bench_envs.txt"
  python scripts/bench_train.py --paper-budget --n 50 --sb3-steps 0 | tee "$out/bench_train.txt"
}
step "4. timings (printed beside their targets)" 330 timings

suite() {  # what the GPU machine lacks is left out, by name; its cores run the tests side by side where pytest-xdist is
  local args=()
  if ! python -c 'import ray' 2>/dev/null; then
    echo "(no ray here: tests/test_grid.py and the plot of a smoke grid left out)"
    args+=(--ignore tests/test_grid.py --deselect tests/test_plot.py::test_plot_on_the_logs_of_a_smoke_grid)
  fi
  if ! python -c 'import wandb' 2>/dev/null; then
    echo "(no wandb here: the --track test left out)"
    args+=(--deselect tests/test_ddpg_her.py::test_track_goes_offline_without_a_network)
  fi
  if python -c 'import xdist' 2>/dev/null; then args+=(-n "$(( $(nproc) < 12 ? $(nproc) : 12 ))"); fi
  # a test that hangs fails with its traceback instead of the step being killed with no summary
  if python -c 'import pytest_timeout' 2>/dev/null; then args+=(--timeout 150); else echo "(no pytest-timeout here)"; fi
  # -v: one line per finished test, so that a suite cut off by the step's limit still shows which tests had not ended
  python -m pytest -v -p no:cacheprovider --durations 12 "${args[@]}"
}
step "5. the fast suite on the GPU machine" 400 suite

if ((${#failed[@]})); then
  echo "GPU check: NO (${#failed[@]} failed: ${failed[*]})"
  exit 1
fi
echo "GPU check: YES for steps ${ran[*]} (each passed; step 4's timings, where it ran, are beside their targets above)"
