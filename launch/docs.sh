#!/usr/bin/env bash
# Builds the documentation site (Sphinx + MyST) into docs/_build/html. Sets up
# .venv if needed and installs the pinned docs requirements into it once.
# Warnings are errors: a broken link, anchor or API reference fails the build.
# Extra arguments go to sphinx-build (e.g. -b linkcheck).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
stamp=.venv/.itr_jax_docs_installed
want="$(sha256sum requirements-docs.txt | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet -r requirements-docs.txt
  echo "$want" > "$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# -E: read every page again, so warnings of unchanged pages are not skipped.
.venv/bin/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html "$@"
echo "HTML: docs/_build/html/index.html"
