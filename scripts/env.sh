#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install molearn with the given extras.
# Usage: scripts/env.sh [extras]    e.g. scripts/env.sh test,plot
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-plot}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
# torch is pinned to the build that lies on this kind of machine (a looser pin pulls several GB of CUDA
# packages); pyproject.toml states the supported range.
stamp=".venv/.molearn-$(cat pyproject.toml scripts/env.sh | sha1sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${MOLEARN_TORCH:-2.13.0}"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
  touch "$stamp"
fi
