#!/usr/bin/env bash
# Runs a sweep declared in a config file, then writes its report.
#   bash launch/sweep.sh configs/ablations/loss_terms.py [workdirs/sweeps/loss_terms] [--parallel=2 ...]
# Extra arguments go to `python -m itr_jax.sweep` (e.g. --set=train.num_epochs=2,
# --dry_run). Running it again skips finished members and resumes interrupted
# ones. On several hosts, start it on each: the host index and count are taken
# from SWEEP_HOST_INDEX/SWEEP_NUM_HOSTS, else SLURM_PROCID/SLURM_NTASKS, else 0/1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG.py[:arg] [SWEEP_DIR] [itr_jax.sweep flags...]" >&2
  exit 2
fi
CONFIG="$1"; shift
name="$(basename "${CONFIG%%:*}" .py)"
SWEEP_DIR="workdirs/sweeps/$name"
if [ $# -ge 1 ] && [[ "$1" != --* ]]; then SWEEP_DIR="$1"; shift; fi
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
HOST_INDEX="${SWEEP_HOST_INDEX:-${SLURM_PROCID:-0}}"
NUM_HOSTS="${SWEEP_NUM_HOSTS:-${SLURM_NTASKS:-1}}"
.venv/bin/python -m itr_jax.sweep --config="$CONFIG" --sweep_dir="$SWEEP_DIR" \
  --host_index="$HOST_INDEX" --num_hosts="$NUM_HOSTS" "$@"
# Host 0 reports what has finished by then; rerun `python -m itr_jax.report
# SWEEP_DIR` once every host is done.
if [ "$HOST_INDEX" = 0 ] && [[ " $* " != *" --dry_run "* ]]; then
  .venv/bin/python -m itr_jax.report "$SWEEP_DIR" > /dev/null
  echo "Report: $SWEEP_DIR/report/report.md"
fi
