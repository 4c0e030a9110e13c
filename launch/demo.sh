#!/usr/bin/env bash
# Sets up .venv if needed, then trains and evaluates the default demo on the
# embedded synthetic-scenes dataset (generated on first use, no download).
# Extra arguments are passed to the trainer, e.g. --config.train.num_epochs=2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
WORKDIR="${WORKDIR:-workdirs/demo}"
.venv/bin/python -m itr_jax.train --config=configs/synthetic_scenes.py --workdir="$WORKDIR" "$@"
.venv/bin/python -m itr_jax.evaluate --workdir="$WORKDIR"
