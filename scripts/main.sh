#!/usr/bin/env bash
# The main job on its embedded default: the 2-D toy comparison (trajectories plot + end-point table in out/toy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh plot >&2
exec .venv/bin/molearn toy --out out/toy "$@"
