#!/usr/bin/env bash
# Usage: bash train.sh EXP_NAME [--config=configs/X.py] [--config.field=value ...]
# Trains into exp/EXP_NAME (checkpoints, TensorBoard events, config.json), resuming
# from the latest checkpoint there. Without --config it trains configs/default.py.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash train.sh EXP_NAME [--config=configs/X.py] [--config.field=value ...]" >&2
  exit 2
fi
exp="$1"; shift
config="configs/default.py"
args=()
for a in "$@"; do
  case "$a" in
    --config=*) config="${a#--config=}" ;;
    *) args+=("$a") ;;
  esac
done
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec python -m cmccl_jax.main --mode=train --workdir="exp/$exp" --config="$config" "${args[@]}"
