#!/usr/bin/env bash
# Set up the dev environment and run the whole test suite (lint, then pytest).
# Extra arguments go to pytest. Tests marked `slow` (longer real-data training runs) are left
# out unless IMGSYNTH_SLOW=1 or your own -m expression asks for them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
venv=${IMGSYNTH_VENV:-.venv}
"$venv/bin/ruff" check .
# pytest exits 5 when it collects no test; with `set -e` that fails this script, as it must.
marker=(-m "not slow")
[ "${IMGSYNTH_SLOW:-0}" = 1 ] && marker=()
"$venv/bin/python" -m pytest "${marker[@]}" "$@"
