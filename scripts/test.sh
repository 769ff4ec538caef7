#!/usr/bin/env bash
# The test suite (CI runs exactly this): lint, then pytest without the slow marker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh test,plot >&2
.venv/bin/ruff check src tests benchmarks
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
