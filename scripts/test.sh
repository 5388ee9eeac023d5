#!/usr/bin/env bash
# Set up the dev environment and run the whole test suite (lint, then pytest).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
venv=${IMGSYNTH_VENV:-.venv}
"$venv/bin/ruff" check .
# pytest exits 5 when it collects no test; with `set -e` that fails this script, as it must.
"$venv/bin/python" -m pytest "$@"
