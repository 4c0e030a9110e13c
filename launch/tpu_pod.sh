#!/usr/bin/env bash
# Starts training on every worker of a Cloud TPU VM pod slice (one process per
# worker host; JAX finds the other workers itself: --distributed=on).
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh \
#       configs/coco_vse.py gs://my-bucket/runs/coco --config.data.data_dir=gs://my-bucket/data/coco_precomp
# Usage: launch/tpu_pod.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
# Env: TPU_NAME, ZONE (required); PROJECT (default: gcloud's configured one);
#      REPO_DIR (where itr_jax is checked out and set up on every worker,
#      default: ~/itr_jax); PYTHON (default: REPO_DIR/.venv/bin/python).
# Prerequisites, once: the repository checked out at REPO_DIR on all workers
# (launch/setup.sh run there, plus `pip install "jax[tpu]"` into its .venv),
# the data on gs:// (.npy: staged to each worker's disk) or a path every worker
# can read, and WORKDIR a gs:// URL or on a
# file system all workers share (NFS/Filestore): orbax writes each
# checkpoint collectively from all workers, and resuming reads it back.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
CONFIG="$1"; WORKDIR="$2"; shift 2
REPO_DIR="${REPO_DIR:-~/itr_jax}"
PYTHON="${PYTHON:-.venv/bin/python}"
args=""
for a in "$@"; do args+=" $(printf '%q' "$a")"; done
remote="cd $REPO_DIR && TF_CPP_MIN_LOG_LEVEL=2 $PYTHON -m itr_jax.train"
remote+=" --config=$(printf '%q' "$CONFIG") --workdir=$(printf '%q' "$WORKDIR")"
remote+=" --distributed=on$args"
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" \
  ${PROJECT:+--project="$PROJECT"} --worker=all --command="$remote"
