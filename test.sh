#!/usr/bin/env bash
# Usage: bash test.sh EXP_NAME
# Evaluates every checkpoint of exp/EXP_NAME with the config saved there; writes
# exp/EXP_NAME/scores.csv and TensorBoard eval/* under exp/EXP_NAME/test.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash test.sh EXP_NAME" >&2
  exit 2
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec python -m cmccl_jax.main --mode=evaluate --workdir="exp/$1"
