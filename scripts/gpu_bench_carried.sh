#!/usr/bin/env bash
# scripts/gpu_bench.sh on a GPU machine that has Python 3.12 and CUDA torch but not this project's other
# requirements, and no network (as the machines lent to this project's sessions are). Two halves:
#   scripts/gpu_bench_carried.sh prepare   here, from the repository root: the cp312 wheels that the machine lacks go
#                                           to .whl/, the robot models to .gpu/site/ (both git-ignored)
#   scripts/gpu_bench_carried.sh run       there, with .whl and .gpu carried beside the tree: installs the wheels
#                                           into /tmp/site, runs gpu_bench.sh (STEPS="3 5" selects steps) and copies
#                                           its log, timings and runs' metrics to $OUT
# The robot models travel as a bare `gymnasium_robotics` package holding only envs/assets/{fetch,hand,stls,textures}:
# envs/goal_env.py finds them by the package's location and never imports its code. The wheel list (--no-deps) fits
# the image that was lent here in 2026-12 (torch, numpy, cloudpickle, typing-extensions, pytest, pytest-xdist and
# pytest-timeout already there; no ray, no wandb: gpu_bench.sh leaves their tests out); another image may need more.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  rm -rf .whl .gpu && mkdir -p .whl .gpu/site/gymnasium_robotics/envs/assets
  platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
             --platform manylinux2014_x86_64)
  # mujoco's own needs glfw, PyOpenGL and mujoco-studio serve rendering and its viewer, which the check does not use
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d .whl mujoco==4.0.1 mujoco-core==4.0.1 gymnasium==1.4.0 farama-notifications==0.0.6 tyro==1.0.17 \
    docstring-parser==0.18.0 typeguard==4.6.1 array-api-compat==1.16.0 || exit 1
  assets=$(python -c 'import envs.goal_env as g, os; print(os.path.dirname(g.model_path("fetch")))') || exit 1
  touch .gpu/site/gymnasium_robotics/__init__.py &&
    cp -r "$assets"/{fetch,hand,stls,textures} .gpu/site/gymnasium_robotics/envs/assets/ || exit 1
  du -sh .whl .gpu ;;
run)
  PY=${PY:-python3}
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
    exit 9
  export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD
  # gpu_bench.sh calls `python`; a symbolic link to a venv's python3 would lose the venv, so a script execs it
  mkdir -p /tmp/shim && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$PY")" >/tmp/shim/python &&
    chmod +x /tmp/shim/python && export PATH=/tmp/shim:$PATH
  res=${OUT:-gpu_bench_out}; mkdir -p "$res"; rm -rf /tmp/gb  # a warm machine keeps the last call's runs
  OUT=/tmp/gb bash scripts/gpu_bench.sh 2>&1 | tee "$res/gpu_bench.log"
  rc=${PIPESTATUS[0]}
  cp /tmp/gb/bench_train.txt "$res/" 2>/dev/null
  for d in /tmp/gb/runs/*; do [ -f "$d/metrics.csv" ] && cp "$d/metrics.csv" "$res/$(basename "$d")_metrics.csv"; done
  exit "$rc" ;;
*) echo "usage: scripts/gpu_bench_carried.sh prepare|run" >&2; exit 2 ;;
esac
