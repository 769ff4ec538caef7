"""Every method's ``combine`` is sync-free and graph-free, proven without a GPU where possible.

* meta device: ``combine`` on ``torch.device("meta")`` inputs under a dispatch mode that rejects every
  operation that would read a device value on the host (``.item()``, ``bool(t)``, data-dependent shapes
  such as ``nonzero``), LAPACK routines that check their error code on the host on a GPU (``eigh``,
  LU-based solves, SVD, ...) and host tensors mixed into device computations (host-to-device copies);
* ``torch.compile(fullgraph=True)`` of a few methods (no graph break: no host read, no data-dependent
  Python control flow);
* a static scan of the solver and method sources for host reads;
* no autograd graph, whatever the inputs;
* on CUDA only: ``set_sync_debug_mode("error")`` and CUDA-graph capture, replayed equal to eager.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from molearn.methods import Inputs, Method, Output, get, registry
from molearn.solvers.linalg import sync_free_paths

NAMES = sorted(registry())
pytestmark = pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")

# methods whose constructor needs arguments that depend on K
REQUIRED: dict[str, Any] = {"fixed": lambda k: {"weights": [1.0 + i for i in range(k)]}}

# aten ops that read device memory on the host, have data-dependent output shapes, or (LAPACK routines
# that check their info code on the host, or run MAGMA's hybrid CPU/GPU code) synchronise a GPU
FORBIDDEN = {
    "_local_scalar_dense",
    "nonzero",
    "nonzero_static",
    "masked_select",
    "unique",
    "_unique2",
    "linalg_eigh",
    "_linalg_eigh",
    "linalg_eigvalsh",
    "linalg_eig",
    "_linalg_svd",
    "linalg_svd",
    "linalg_solve",
    "linalg_solve_ex",
    "_linalg_solve_ex",
    "linalg_lu_factor_ex",
    "linalg_lu",
    "linalg_lu_solve",
    "linalg_inv_ex",
    "linalg_pinv",
    "linalg_lstsq",
    "linalg_qr",
    "linalg_ldl_factor_ex",
    "_linalg_check_errors",
}


class HostReadDetector(TorchDispatchMode):
    """Records forbidden ops and ops that involve a non-0-d tensor on another device than ``device``."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.violations: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = func.__name__.split(".")[0]
        if name in FORBIDDEN:
            self.violations.append(f"forbidden op {func}")
        for t in _tensors((args, kwargs)):
            if t.device != self.device and t.dim() > 0:
                self.violations.append(f"{func} got a {t.device} tensor of shape {tuple(t.shape)}")
        out = func(*args, **kwargs)
        for t in _tensors(out):
            if t.device != self.device:
                self.violations.append(f"{func} made a {t.device} tensor")
        return out


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def build(name: str, k: int) -> Method:
    kwargs = REQUIRED[name](k) if name in REQUIRED else {}
    return get(name, **kwargs)


def make_inputs(method: Method, k: int, device: torch.device, dtype: torch.dtype, seed: int) -> Inputs:
    """Random inputs on ``device`` (meta: shapes only) for every batch the method asks for."""
    gen = torch.Generator().manual_seed(seed)
    selected = method.select(k) if k > 1 else None
    rows = k if selected is None else int(selected.shape[0])
    needs = method.needs

    def one() -> Inputs:
        jac = torch.randn(rows, 7, generator=gen, dtype=dtype)
        losses = torch.rand(k, generator=gen, dtype=dtype) + 0.5
        return Inputs(
            losses=losses.to(device),
            gramian=(jac @ jac.T).to(device) if needs.gradients else None,
            jacobian=jac.to(device) if needs.jacobian else None,
            selected=None if selected is None else selected.to(device),
        )

    inputs = one()
    inputs.extra = [one() for _ in range(needs.batches - 1)]
    return inputs


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 3, 9])
def test_combine_reads_nothing_on_the_host(name: str, k: int) -> None:
    """K = 3 and 9 take the small- and large-K solver paths (enumeration / pivoting / interior point)."""
    device = torch.device("meta")
    if name in ("epo", "pmgda") and k > 8:
        pytest.skip("EPO and PMGDA enumerate LP vertices: K <= 8 by design")
    method = build(name, k)
    for step in range(3):  # stateful methods: first call (state created) and later calls
        inputs = make_inputs(method, k, device, torch.float32, step)
        with HostReadDetector(device) as mode:
            out = method.combine(inputs)
            if method.needs.after_step:
                method.after_step(inputs.losses, inputs.losses * 0.9)
        assert not mode.violations, f"{name} (K={k}, call {step}): {sorted(set(mode.violations))[:5]}"
        _check_output(out, k)


def _check_output(out: Output, k: int) -> None:
    assert (out.weights is None) != (out.direction is None)
    if out.weights is not None:
        assert out.weights.shape == (k,)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("upgrad", {}),
        ("dualproj", {}),
        ("mgda", {}),
        ("cagrad", {"c": 0.5}),
        ("cagrad", {"c": 2.0}),
        ("fairgrad", {}),
        ("nashmtl", {}),
        ("imtlg", {}),
        ("alignedmtl", {}),
        ("config", {}),
    ],
)
@pytest.mark.parametrize("k", [3, 10])
def test_combine_compiles_to_one_graph(name: str, kwargs: dict[str, Any], k: int) -> None:
    """``torch.compile(fullgraph=True)`` traces ``combine`` without a graph break (the eager backend: no
    code generation, only the tracing) and gives the eager weights. The sync-free GPU code paths are
    forced on the CPU."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(k)
    jac = torch.randn(k, 2 * k + 1, generator=gen, dtype=torch.float64)
    jac = jac - 0.5 * jac.mean(0)
    gram = jac @ jac.T
    losses = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
    with sync_free_paths():
        eager = get(name, **kwargs).combine(Inputs(losses=losses, gramian=gram)).weights
        method = get(name, **kwargs)
        compiled = torch.compile(
            lambda g, ls: method.combine(Inputs(losses=ls, gramian=g)).weights,
            fullgraph=True,
            backend="eager",
        )
        got = compiled(gram, losses)
    assert eager is not None and got is not None
    torch.testing.assert_close(got, eager, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_combine_builds_no_autograd_graph(name: str) -> None:
    """TorchJD's suite asserts this for every aggregator: inputs that require grad give outputs that do
    not."""
    k = 3
    method = build(name, k)
    for step in range(2):
        inputs = make_inputs(method, k, torch.device("cpu"), torch.float64, step)
        for part in [inputs, *inputs.extra]:
            for field in ("losses", "gramian", "jacobian"):
                t = getattr(part, field)
                if t is not None:
                    setattr(part, field, t.clone().requires_grad_(True))
        out = method.combine(inputs)
        produced = _tensors([out.weights, out.direction, out.extra_weights or [], out.info])
        assert produced
        for t in produced:
            assert not t.requires_grad and t.grad_fn is None, f"{name}: an output requires grad"
        for t in _tensors(method.state_dict()):
            assert not t.requires_grad, f"{name}: a state tensor requires grad"


# ---- static scan of the sources

SRC = Path(__file__).resolve().parents[3] / "src" / "molearn"
FILES = sorted((SRC / "solvers").glob("*.py")) + sorted((SRC / "methods").glob("*.py"))
HOST_READ = re.compile(
    r"\.item\(\)|\.tolist\(\)|\.cpu\(\)|\.numpy\(\)|\bnonzero\(|masked_select|\.any\(\)\s*:"
)
# LAPACK routines with a host-side error check (or MAGMA paths) on a GPU: only behind use_lapack()
LAPACK = re.compile(
    r"torch\.linalg\.(eigh|eigvalsh|svd|solve|solve_ex|inv|inv_ex|pinv|lstsq|lu|lu_factor|qr)\("
)
# a host-created tensor per call: torch.tensor(...) / as_tensor(...) inside a function body
HOST_TENSOR = re.compile(r"torch\.(tensor|as_tensor)\(")


def _sync_exempt(line: str) -> bool:
    return "# sync:" in line


def _runtime_lines(path: Path) -> list[tuple[int, str]]:
    """Source lines inside functions other than constructors, state (de)serialisation and validation."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    # constructors, checkpointing and the construction-time argument checks they call
    skip = {
        "__init__",
        "load_state_dict",
        "state_dict",
        "__repr__",
        "check_pref",
        "check_ideal",
        "_vector",
        "_loaded",
    }
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in skip:
            body_start = node.body[0].lineno
            if isinstance(node.body[0], ast.Expr) and isinstance(
                getattr(node.body[0], "value", None), ast.Constant
            ):
                body_start = node.body[0].end_lineno + 1 if node.body[0].end_lineno else body_start
            for i in range(body_start, (node.end_lineno or body_start) + 1):
                out.append((i, lines[i - 1]))
    return out


def _scalar_casts(line: str) -> bool:
    """``bool(`` / ``float(`` / ``int(`` applied to something that is not obviously a Python number."""
    for m in re.finditer(r"(?<![.\w])(bool|float|int)\(([^()]*(\([^()]*\))?[^()]*)\)", line):
        arg = m.group(2).strip()
        python_number = re.fullmatch(
            r"self\.\w+|[\d.e+-]+|\"[^\"]*\"|'[^']*'|k|n|\w*_?k\w*|len\(.*\)|.*\.shape\[.*\]|inputs\.num_objectives|"
            r"state(\.get)?\[?\(?.*|d\[.*\]|.*\bif\b.*|\w+ \* \w+|self\.\w+ \* \w+",
            arg,
        )
        if not python_number:
            return True
    return False


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_sources_have_no_host_reads(path: Path) -> None:
    found = []
    for lineno, line in _runtime_lines(path):
        code = line.split("#")[0] if "# sync:" not in line else ""
        if not code.strip() or _sync_exempt(line):
            continue
        if HOST_READ.search(code) or HOST_TENSOR.search(code) or _scalar_casts(code):
            found.append(f"{path.name}:{lineno}: {line.strip()}")
        if LAPACK.search(code) and path.name != "linalg.py":
            found.append(f"{path.name}:{lineno}: {line.strip()} (LAPACK with a host check)")
    assert not found, (
        "host reads in runtime code (mark a documented opt-in check with '# sync:'):\n"
        + "\n".join(sorted(set(found)))
    )
