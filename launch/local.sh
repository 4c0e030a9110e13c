#!/usr/bin/env bash
# Trains in one process on this machine's devices (all GPUs/TPU chips it sees,
# or the CPU), e.g.
#   launch/local.sh configs/synthetic_scenes.py workdirs/demo --config.train.num_epochs=2
# Usage: launch/local.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
# Env: PYTHON (default: the repository's .venv, else python3).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,6p' "$0" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"
exec "$PYTHON" -m itr_jax.train --config="$CONFIG" --workdir="$WORKDIR" \
  --distributed=off "$@"
