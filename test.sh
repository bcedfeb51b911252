#!/usr/bin/env bash
# Usage: bash test.sh EXP_NAME [--inception=pt_inception-2015-12-05-6726825d.pth]
# Evaluates every checkpoint of exp/EXP_NAME with the config saved there; writes
# exp/EXP_NAME/scores.csv and TensorBoard eval/* under exp/EXP_NAME/test.
# Dual encoders: retrieval metrics. XMC-GAN: G and EMA-G each get the stage-1 Fréchet
# distance and alignment (R-precision, cosine), plus FID and IS when the FID Inception
# weights are given (--inception or config.gan.eval.inception; nothing is downloaded).
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 1 ] || [ $# -gt 2 ] || [[ "$1" == -* ]] || { [ $# -eq 2 ] && [[ "$2" != --inception=* ]]; }; then
  echo "usage: bash test.sh EXP_NAME [--inception=PATH]" >&2
  exit 2
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec python -m cmccl_jax.main --mode=evaluate --workdir="exp/$1" "${@:2}"
