#!/usr/bin/env bash
# Create .venv and install imgsynth into it.
#   bash scripts/setup.sh          runtime + built-in real data (pydicom-data, nilearn)
#   bash scripts/setup.sh --dev    + test tools (pytest, ruff, hypothesis, playwright)
# torch is installed first, on its own, so that a CPU-only machine gets the CPU build:
# IMGSYNTH_TORCH (default torch==2.13.0) and IMGSYNTH_TORCH_INDEX (e.g. a CUDA or CPU wheel
# index URL) choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${IMGSYNTH_VENV:-.venv}
extras=data
[ "${1:-}" = "--dev" ] && extras=dev

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing ${IMGSYNTH_TORCH:-torch==2.13.0}" >&2
  if [ -n "${IMGSYNTH_TORCH_INDEX:-}" ]; then
    "${pip[@]}" "${IMGSYNTH_TORCH:-torch==2.13.0}" --index-url "$IMGSYNTH_TORCH_INDEX"
  else
    "${pip[@]}" "${IMGSYNTH_TORCH:-torch==2.13.0}"
  fi
fi
echo "[setup] installing imgsynth[$extras]" >&2
"${pip[@]}" -e ".[$extras]"
echo "[setup] ready: $venv/bin/imgsynth ($("$venv/bin/imgsynth" --version))" >&2
