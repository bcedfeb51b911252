#!/usr/bin/env bash
# Usage: bash ablate.sh [NAME] [--variants=baseline,root,phases,anti,random] [--seeds=0,1,2,3,4] [--config.x=y ...]
# Trains every curriculum variant × seed of configs/ablation.py at equal steps into exp/NAME
# (default exp/ablation; finished runs are skipped, a killed one resumes), then the robustness
# sweep, and writes results.md, curves/paired/convergence/robustness.png and results.json there.
set -euo pipefail
cd "$(dirname "$0")"
name="ablation"
if [ $# -ge 1 ] && [[ "$1" != -* ]]; then name="$1"; shift; fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec python -m cmccl_jax.experiments.ablation --workdir="exp/$name" "$@"
