#!/usr/bin/env bash
# Usage: bash sample.sh EXP_NAME "a caption" ["another caption" ...] [--num_samples=8] [--step=-1] [--noema] [--out=F.png]
# Writes a PNG grid from the XMC-GAN experiment exp/EXP_NAME: one row per caption,
# --num_samples images across (EMA generator of the latest checkpoint by default).
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 2 ] || [[ "$1" == -* ]]; then
  echo 'usage: bash sample.sh EXP_NAME "a caption" ["another caption" ...] [--num_samples=N] [--step=S] [--noema]' >&2
  exit 2
fi
exp="$1"; shift
flags=(); captions=()
for a in "$@"; do
  case "$a" in
    --*) flags+=("$a") ;;
    *) captions+=("$a") ;;
  esac
done
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec python -m cmccl_jax.main --mode=sample --workdir="exp/$exp" "${flags[@]}" -- "${captions[@]}"
