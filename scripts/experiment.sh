#!/usr/bin/env bash
# Run one of the seed papers' experiments (issue 3) into out/<name>/ (or --out DIR):
#   scripts/experiment.sh stochastic-toy | modo-tradeoff | objective-sampling  [options; --help lists them]
# Creates/reuses .venv; modo-tradeoff installs the Debian package dataset-fashion-mnist when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/experiment.sh stochastic-toy|modo-tradeoff|objective-sampling [options]}"
shift
bash scripts/env.sh plot >&2
if [ "$name" = modo-tradeoff ] && [ -z "${MOLEARN_FASHION_MNIST:-}" ] \
   && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y dataset-fashion-mnist >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y dataset-fashion-mnist >&2; }
fi
exec .venv/bin/molearn "$name" --out "out/$name" "$@"
