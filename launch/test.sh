#!/usr/bin/env bash
# Sets up the venv if needed, then runs the test suite (slow tests excluded;
# add `-m slow` to run only those). Extra arguments go to pytest (e.g. test
# files: only those run). The test files run in parallel, one worker per CPU
# core (pytest-xdist; a file's tests stay on one worker, so its module
# fixtures run once); ITR_TEST_WORKERS=0 runs them in this process,
# ITR_TEST_WORKERS=N on N workers. PYTHON, VENV and REQUIREMENTS pick the
# interpreter, venv and pinned set (launch/setup.sh; .ci/run's Python 3.12 lane).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "${VENV:-.venv}/bin/python" -m pytest -q -n "${ITR_TEST_WORKERS:-logical}" --dist loadfile "$@"
