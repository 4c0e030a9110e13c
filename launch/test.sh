#!/usr/bin/env bash
# Sets up .venv if needed, then runs the test suite (slow tests excluded; add
# `-m slow` to run only those). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec .venv/bin/python -m pytest -q "$@"
