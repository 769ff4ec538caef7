#!/usr/bin/env bash
# The GPU checks of issue 13 in one run (a few minutes on one GPU): the CUDA tests (no host synchronisation in any
# combine or strategy, CUDA-graph capture and replay, CUDA vs CPU), then both benchmarks with --device cuda.
# Results go to $OUT (default benchmarks/results/gpu-<GPU name>/): step.*, solvers.*, tests.log, machine.txt.
#
# It runs with the machine's own python3 and torch (the H200 image of the device tool has torch, pytest, hypothesis,
# numpy and scipy). What that machine lacks travels as wheels in .whl/ (TorchJD 0.18 and the solvers its
# weightings call: quadprog, qpsolvers, cvxpy, ecos, clarabel, scs, osqp); without them the benchmarks run with
# --no-torchjd where they can. Usage: bash benchmarks/gpu.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/molearn-site .whl/*.whl
  export PYTHONPATH="/tmp/molearn-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
gpu="$("$py" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name().replace(" ", "-"))')"
out="${OUT:-benchmarks/results/gpu-$gpu}"
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'; } >"$out/machine.txt"
quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
have_torchjd="$("$py" -c 'import importlib.util as u; print(int(u.find_spec("torchjd") is not None))')"
status=0
"$py" -m pytest -q -p no:cacheprovider tests/unit/test_engine_cuda.py tests/unit/methods/test_cuda_graphs.py \
  tests/unit/methods/test_sync_free.py tests/unit/methods/test_moco.py tests/unit/pareto/test_indicators.py \
  2>&1 | tee "$out/tests.log" || status=1
if [ "$have_torchjd" = 1 ]; then
  "$py" benchmarks/bench_solvers.py --device cuda --out "$out" "${quick[@]}" || status=1
else
  echo "bench_solvers.py skipped: TorchJD is not installed (it is the comparison)" | tee -a "$out/tests.log"
fi
jd=()
[ "$have_torchjd" = 1 ] || jd=(--no-torchjd)
"$py" benchmarks/bench_step.py --device cuda --models mlp,conv,wide-mlp,resnet18 --out "$out" --name step \
  "${jd[@]}" "${quick[@]}" || status=1
exit $status
