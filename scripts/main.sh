#!/usr/bin/env bash
# The main job on its embedded default: `molearn compare` on real Multi-Fashion (Fashion-MNIST from the Debian
# package dataset-fashion-mnist, installed when missing): report.md, plots and runs.csv in out/compare/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh cli >&2  # matplotlib, tqdm, SciPy and PyYAML (YAML configs)
bash scripts/fashion-mnist.sh
exec .venv/bin/molearn compare --out out/compare "$@"
