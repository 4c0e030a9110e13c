#!/usr/bin/env bash
# Runs one training as NUM_PROCESSES processes on this machine, the way a
# multi-host job runs (a coordinator on localhost, each process reading only
# its share of every batch). For testing multi-host code paths without a
# cluster: on CPU each process gets DEVICES_PER_PROCESS simulated devices; with
# PLATFORM=gpu each process gets one GPU (process i uses GPU i).
#   launch/multiprocess_local.sh configs/synthetic_scenes.py workdirs/mp
#   NUM_PROCESSES=4 DEVICES_PER_PROCESS=2 launch/multiprocess_local.sh CONFIG WORKDIR
# Usage: launch/multiprocess_local.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
# Env: NUM_PROCESSES (2), DEVICES_PER_PROCESS (4, CPU only), PLATFORM (cpu|gpu),
#      PORT (coordinator port; default: a free one), PYTHON.
# Output: each process's lines prefixed with [pI]; also WORKDIR/logs/process_I.log.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-4}"
PLATFORM="${PLATFORM:-cpu}"
PORT="${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}"
mkdir -p "$WORKDIR/logs"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  if [ "$PLATFORM" = "cpu" ]; then
    device_env=(JAX_PLATFORMS=cpu
                XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
  else
    device_env=(JAX_LOCAL_DEVICE_IDS="$i")
  fi
  env "${device_env[@]}" "$PYTHON" -m itr_jax.train --config="$CONFIG" \
      --workdir="$WORKDIR" --coordinator_address="localhost:$PORT" \
      --num_processes="$NUM_PROCESSES" --process_id="$i" "$@" \
      > >(tee "$WORKDIR/logs/process_$i.log" | sed -u "s/^/[p$i] /") 2>&1 &
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  if ! wait "$pid"; then
    status=1
    cleanup  # one process failed: the others would wait for it forever
  fi
done
exit "$status"
