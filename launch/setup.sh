#!/usr/bin/env bash
# Creates a venv with pinned requirements and itr_jax itself (editable).
# Idempotent: re-installs only when the requirements or pyproject.toml change.
#   PYTHON        interpreter that creates the venv (default python3: 3.11)
#   VENV          the venv's folder (default .venv)
#   REQUIREMENTS  the pinned set (default requirements.txt; Python 3.12:
#                 requirements-py312.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
REQUIREMENTS="${REQUIREMENTS:-requirements.txt}"
if [ ! -f "$REQUIREMENTS" ]; then
  echo "launch/setup.sh: REQUIREMENTS=$REQUIREMENTS is not a file; name a pinned" \
       "requirements file such as requirements.txt or requirements-py312.txt." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.itr_jax_installed"
want="$(cat "$REQUIREMENTS" requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
  "$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
