#!/usr/bin/env bash
# The core tests (engine, solvers, methods, Balancer, bad input, train, pareto, distributed) on the oldest and the newest torch
# that pyproject.toml allows, each in its own virtual environment (.venv-torch-VERSION, reused when present).
# CI runs this after scripts/test.sh. PyPI's builds of these versions carry CUDA libraries (about 3 GB each to
# download); the machine-wide pip cap (/etc/xdg/pip, torch <= 2.14.1) is bypassed for them.
# Usage: scripts/test-versions.sh [VERSION ...]     (default: 2.3.1 2.15.0)
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(2.3.1 2.15.0)
py="${PYTHON:-python3}"
tests=(tests/unit/test_engine.py tests/unit/test_engine_batches.py tests/unit/test_engine_layerwise.py
       tests/unit/test_engine_cuda.py tests/unit/test_balancer_loss_methods.py tests/unit/test_bad_input.py
       tests/unit/solvers tests/unit/methods tests/unit/train tests/unit/pareto tests/unit/distributed)
for v in "${versions[@]}"; do
  env_dir=".venv-torch-$v"
  stamp="$env_dir/.molearn-$(cat pyproject.toml scripts/test-versions.sh | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    [ -x "$env_dir/bin/python" ] || "$py" -m venv "$env_dir"
    echo "== installing torch $v into $env_dir" >&2
    PIP_CONSTRAINT=/dev/null "$env_dir/bin/python" -m pip install -q --disable-pip-version-check \
      "torch==$v" -e ".[test-core]" >&2
    touch "$stamp"
  fi
  echo "== torch $("$env_dir/bin/python" -c 'import torch; print(torch.__version__)'): core tests" >&2
  "$env_dir/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
done
