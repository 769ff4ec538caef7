#!/usr/bin/env bash
# Run one of the seed papers' experiments (issue 3) into out/<name>/ (or --out DIR):
#   scripts/experiment.sh stochastic-toy | modo-tradeoff | objective-sampling  [options; --help lists them]
# Creates/reuses .venv; modo-tradeoff installs the Debian package dataset-fashion-mnist when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/experiment.sh stochastic-toy|modo-tradeoff|objective-sampling [options]}"
shift
bash scripts/env.sh plot >&2
if [ "$name" = modo-tradeoff ]; then bash scripts/fashion-mnist.sh; fi
exec .venv/bin/molearn "$name" --out "out/$name" "$@"
