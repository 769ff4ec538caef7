"""Per-method cost of the K×K step (``Method.combine``) against TorchJD 0.18 at equal method.

For each method of ``molearn.methods.registry()`` that has a TorchJD counterpart and each K, the two
libraries are called round-robin on the same pool of random Jacobians (K×P; P = 1000 on the CPU, 10⁶
on CUDA, the issue's GPU setting) and their float32 Gramians (as the engine gives them); the table
reports the median time of each, their ratio, and how far apart the two solutions are. On CUDA the
calls are timed between ``torch.cuda.synchronize()`` and each method is also checked for host
synchronisations (``torch.cuda.set_sync_debug_mode("error")``) and captured in a CUDA graph whose
replays are compared with eager calls. Run ``python benchmarks/bench_solvers.py --help``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from _common import (
    RESULTS_DIR,
    command_line,
    default_clock,
    fmt_time,
    interleaved_times,
    load_all_methods,
    machine_block,
    machine_info,
    markdown_table,
    median,
    paired_ratio,
    write_csv,
    write_json,
)
from molearn.methods import Inputs, registry

TARGET_KS = (3, 10, 40)
TARGET_SPEEDUP = 1.0  # every method at least as fast as TorchJD ...
FAST_TARGET = {
    "CAGrad": 10.0,
    "NashMTL": 10.0,
    "FairGrad": 10.0,
}  # ... and 10× where TorchJD calls cvxpy/scipy
SAME_TOL = 1e-2  # relative difference of the directions below which the solutions count as the same
NORM_TOL = 1e-3  # or, against a reference, relative difference of the direction's norm (MGDA's objective)


@dataclass
class Pair:
    """A molearn method and its TorchJD counterpart, with equal hyper-parameters."""

    name: str  # molearn class name
    kwargs: dict[str, Any]
    torchjd: Callable[[int], Any]  # K -> TorchJD Weighting (called on the Gramian) or Aggregator
    tj_input: str = "gramian"  # "gramian": Weighting(G) -> weights; "jacobian": Aggregator(J) -> direction
    random_order: bool = False  # the result depends on a random order of the tasks (compare only at K=2)
    note: str = ""
    alt_kwargs: list[dict[str, Any]] = field(default_factory=list)  # tried if ``kwargs`` is refused
    # a high-accuracy TorchJD configuration of the same method: "same solution" is judged against it
    reference: Callable[[int], Any] | None = None


def _pairs() -> list[Pair]:
    import torchjd.aggregation as tja

    return [
        Pair(
            "MGDA",
            {},
            lambda k: tja.MGDAWeighting(),
            note="TorchJD: Frank-Wolfe, eps 1e-3, ≤ 100 iterations (timed); "
            "reference: eps 1e-12, ≤ 1e5 iterations",
            reference=lambda k: tja.MGDAWeighting(epsilon=1e-12, max_iters=100_000),
        ),
        Pair("CAGrad", {"c": 0.5}, lambda k: tja.CAGradWeighting(c=0.5), note="c = 0.5; TorchJD: cvxpy"),
        Pair(
            "NashMTL",
            {},
            lambda k: tja.NashMTL(n_tasks=k, max_norm=0.0),
            tj_input="jacobian",
            note="TorchJD aggregator (Jacobian in, cvxpy/ECOS CCCP), norm clipping off (max_norm=0)",
            alt_kwargs=[{"max_norm": 0.0}],
        ),
        Pair("FairGrad", {"alpha": 2.0}, lambda k: tja.FairGradWeighting(alpha=2.0), note="α = 2"),
        Pair("UPGrad", {}, lambda k: tja.UPGradWeighting(), note="TorchJD: quadprog on the CPU"),
        Pair("DualProj", {}, lambda k: tja.DualProjWeighting()),
        Pair("IMTLG", {}, lambda k: tja.IMTLGWeighting()),
        Pair("AlignedMTL", {}, lambda k: tja.AlignedMTLWeighting()),
        Pair("PCGrad", {}, lambda k: tja.PCGradWeighting(), random_order=True),
        Pair("GradVac", {}, lambda k: tja.GradVacWeighting(), random_order=True),
        Pair("ConFIG", {}, lambda k: tja.ConFIG(), tj_input="jacobian"),
        Pair(
            "ExcessMTL",
            {},
            lambda k: tja.ExcessMTL(),
            tj_input="jacobian",
            note="stateful; TorchJD starts from 1/K and updates on the first call, molearn follows the "
            "official code (see its docstring), so one call from a fresh state differs by design",
        ),
    ]


def random_jacobians(k: int, p: int, n: int, seed: int, device: str = "cpu") -> list[Tensor]:
    """``n`` random K×P Jacobians, rows g_i = s_i (u + 2 A_i B + 0.5 z_i).

    ``u`` (a direction all tasks share), ``A`` (K×4), ``B`` (4×P, scaled by 1/2) and ``z_i`` are standard
    normal and ``s_i = exp(N(0, 0.5²))``: the rows have different norms, 25-40% of the pairs conflict
    (negative cosine) and MGDA's min-norm point is neither a vertex nor zero.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        u = torch.randn(1, p, generator=gen)
        a = torch.randn(k, 4, generator=gen)
        b = torch.randn(4, p, generator=gen) / 2.0
        z = torch.randn(k, p, generator=gen)
        s = torch.exp(0.5 * torch.randn(k, 1, generator=gen))
        out.append((s * (u + 2.0 * a @ b + 0.5 * z)).float().to(device))
    return out


def conflict_fraction(jac: Tensor) -> float:
    g = jac.double() @ jac.double().T
    k = g.shape[0]
    return float(((g < 0).sum()) / max(k * k - k, 1))


def _build(cls: type, pair: Pair) -> tuple[Any, dict[str, Any]]:
    for kw in [pair.kwargs, *pair.alt_kwargs, {}]:
        try:
            return cls(**kw), kw
        except TypeError:
            continue
    return cls(), {}


def _direction_molearn(
    method: Any, jac: torch.Tensor, gram: torch.Tensor, losses: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    needs = method.needs
    out = method.combine(
        Inputs(losses=losses, gramian=gram, jacobian=jac if needs.jacobian else None),
    )
    if out.direction is not None:
        return out.direction.to(torch.float64), None
    w = out.weights.to(torch.float64)
    return w @ jac.to(torch.float64), w


def _direction_torchjd(
    tj: Any, pair: Pair, jac: torch.Tensor, gram: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if pair.tj_input == "jacobian":
        return tj(jac).to(torch.float64), None
    w = tj(gram).to(torch.float64)
    return w @ jac.to(torch.float64), w


def compare(pair: Pair, cls: type, jacs: list[Tensor], losses: Tensor) -> dict[str, float]:
    """Fresh instances of both, one call each per Jacobian; worst case over the pool.

    ``dir_rel_diff`` compares molearn with the timed TorchJD configuration; ``ref_dir_diff`` (and
    ``torchjd_ref_diff``, TorchJD's own error) with the high-accuracy reference where the pair has one.
    """
    d_rel = u_rel = w_rel = ref = tj_ref = ref_norm = tj_ref_norm = 0.0
    ratios = []
    for jac in jacs:
        gram = jac @ jac.T
        jac = jac.cpu()  # the comparisons in float64 on the CPU (TorchJD's references are CPU solvers)
        gram = gram.cpu()
        losses = losses.cpu()
        m, _ = _build(cls, pair)
        tj = pair.torchjd(jac.shape[0])
        dm, wm = _direction_molearn(m, jac, gram, losses)
        dt, wt = _direction_torchjd(tj, pair, jac, gram)
        nt = dt.norm().clamp_min(1e-300)
        nm = dm.norm().clamp_min(1e-300)
        d_rel = max(d_rel, float((dm - dt).norm() / nt))
        u_rel = max(u_rel, float((dm / nm - dt / nt).norm()))
        ratios.append(float(nm / nt))
        if wm is not None and wt is not None:
            w_rel = max(w_rel, float((wm - wt).abs().max() / wt.abs().max().clamp_min(1e-300)))
        else:
            w_rel = float("nan")
        if pair.reference is not None:
            dr, _ = _direction_torchjd(pair.reference(jac.shape[0]), pair, jac.double(), gram.double())
            nr = dr.norm().clamp_min(1e-300)
            ref = max(ref, float((dm - dr).norm() / nr))
            tj_ref = max(tj_ref, float((dt - dr).norm() / nr))
            ref_norm = max(ref_norm, abs(float(nm / nr) - 1.0))
            tj_ref_norm = max(tj_ref_norm, abs(float(nt / nr) - 1.0))
    out = {
        "dir_rel_diff": d_rel,
        "unit_dir_diff": u_rel,
        "norm_ratio_min": min(ratios),
        "norm_ratio_max": max(ratios),
        "weights_rel_diff": w_rel,
        "conflict_fraction": sum(conflict_fraction(j) for j in jacs) / len(jacs),
    }
    if pair.reference is not None:
        out["ref_dir_diff"] = ref
        out["torchjd_ref_diff"] = tj_ref
        out["ref_norm_diff"] = ref_norm
        out["torchjd_ref_norm_diff"] = tj_ref_norm
    return out


def _callers(
    method: Any, tj: Any, pair: Pair, jacs: list[Tensor], grams: list[Tensor], losses: Tensor
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The two timed calls; each cycles through the pool of Jacobians/Gramians."""
    needs_jac = bool(method.needs.jacobian)
    counter = {"m": 0, "t": 0}
    pool = len(jacs)

    def call_m() -> Any:
        i = counter["m"] % pool
        counter["m"] += 1
        out = method.combine(Inputs(losses=losses, gramian=grams[i], jacobian=jacs[i] if needs_jac else None))
        if needs_jac and out.weights is not None:
            return out.weights @ jacs[i]  # a TorchJD aggregator returns the direction: same work
        return out

    def call_t() -> Any:
        i = counter["t"] % pool
        counter["t"] += 1
        return tj(jacs[i] if pair.tj_input == "jacobian" else grams[i])

    return call_m, call_t


def sync_check(method: Any, jacs: list[Tensor], grams: list[Tensor], losses: Tensor) -> str:
    """CUDA: whether ``combine`` synchronises with the host (``set_sync_debug_mode("error")``)."""
    needs_jac = bool(method.needs.jacobian)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(len(grams)):
            method.combine(Inputs(losses=losses, gramian=grams[i], jacobian=jacs[i] if needs_jac else None))
    except RuntimeError as exc:
        return f"syncs ({str(exc).splitlines()[0][:60]})"
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return "none"


def graph_check(cls: type, pair: Pair, jacs: list[Tensor], grams: list[Tensor], losses: Tensor) -> str:
    """CUDA: capture ``combine`` in a CUDA graph after 3 warm-up calls and compare 3 replays (inputs copied
    into the static buffers) with an identical instance called eagerly (RNG reseeded alike)."""
    try:
        eager, _ = _build(cls, pair)
        graphed, _ = _build(cls, pair)
        needs_jac = bool(graphed.needs.jacobian)

        def inputs(i: int) -> Inputs:
            return Inputs(losses=losses, gramian=grams[i], jacobian=jacs[i] if needs_jac else None)

        def result(out: Any) -> Tensor:
            return (out.weights if out.weights is not None else out.direction).double().flatten()

        static = Inputs(
            losses=losses.clone(),
            gramian=grams[0].clone(),
            jacobian=jacs[0].clone() if needs_jac else None,
        )

        def load(i: int) -> None:
            assert static.gramian is not None
            static.gramian.copy_(grams[i])
            if static.jacobian is not None:
                static.jacobian.copy_(jacs[i])

        n = len(grams)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for t in range(3):
                load(t % n)
                torch.cuda.manual_seed(t)
                graphed.combine(static)
                torch.cuda.manual_seed(t)
                eager.combine(inputs(t % n))
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        load(3 % n)
        with torch.cuda.graph(graph):
            captured = graphed.combine(static)
        worst = 0.0
        for t in range(3, 6):
            load(t % n)
            torch.cuda.manual_seed(t)
            graph.replay()
            torch.cuda.manual_seed(t)
            expected = result(eager.combine(inputs(t % n)))
            torch.cuda.synchronize()
            got = result(captured)
            worst = max(worst, float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-30)))
        return "replays = eager" if worst <= 1e-5 else f"replays differ ({worst:.1e})"
    except Exception as exc:  # a method that cannot be captured is reported, not fatal
        return f"capture fails ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"


def same_label(c: dict[str, float], random_order: bool, k: int) -> str:
    if random_order and k > 2:
        return "n/a (random order)"
    if "ref_dir_diff" in c:
        if c["ref_dir_diff"] <= SAME_TOL:
            return "yes (vs reference)"
        if c["ref_norm_diff"] <= NORM_TOL:
            return f"yes (‖d‖ within {NORM_TOL:g} of reference)"
        return "no (vs reference)"
    if c["dir_rel_diff"] <= SAME_TOL:
        return "yes"
    spread = c["norm_ratio_max"] - c["norm_ratio_min"]
    if c["unit_dir_diff"] <= SAME_TOL and spread <= SAME_TOL * c["norm_ratio_max"]:
        return f"direction yes, norm ×{c['norm_ratio_max']:.3g}"
    return "no"


def run(
    ks: list[int],
    p: int,
    pool: int,
    budget_s: float,
    max_reps: int,
    min_reps: int,
    only: list[str] | None,
    clock: str = "wall",
    device: str = "cpu",
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    try:
        pairs = _pairs()
    except ImportError as exc:  # pragma: no cover - torchjd is a bench/test dependency
        raise SystemExit(f"TorchJD is needed for this benchmark: {exc}") from exc
    import_errors = load_all_methods()
    reg = {cls.__name__: cls for cls in registry().values()}
    rows: list[dict[str, Any]] = []
    missing = []
    for pair in pairs:
        if only and pair.name not in only:
            continue
        cls = reg.get(pair.name)
        if cls is None:
            missing.append(pair.name)
            continue
        for k in ks:
            jacs = random_jacobians(k, p, pool, seed=1000 + k, device=device)
            grams = [j @ j.T for j in jacs]
            gen = torch.Generator().manual_seed(k)
            losses = (torch.rand(k, generator=gen) + 0.5).float().to(device)
            row: dict[str, Any] = {"method": pair.name, "K": k, "P": p, "note": pair.note}
            try:
                method, used_kw = _build(cls, pair)
                row["molearn_kwargs"] = used_kw
                row["molearn_input"] = "jacobian" if method.needs.jacobian else "gramian"
                tj = pair.torchjd(k)
                row.update(compare(pair, cls, jacs, losses))
                row["same_solution"] = same_label(row, pair.random_order, k)
                call_m, call_t = _callers(method, tj, pair, jacs, grams, losses)
                walls: dict[str, list[float]] = {}
                if device.startswith("cuda"):
                    row["host_syncs"] = sync_check(_build(cls, pair)[0], jacs, grams, losses)
                    row["cuda_graph"] = graph_check(cls, pair, jacs, grams, losses)
                times = interleaved_times(
                    {"molearn": call_m, "torchjd": call_t},
                    device=device,
                    warmup=2,
                    min_reps=min_reps,
                    max_reps=max_reps,
                    budget_s=budget_s,
                    clock=clock,
                    wall_times=walls,
                )
                row["reps"] = len(times["molearn"])
                row["molearn_s"] = median(times["molearn"])
                row["torchjd_s"] = median(times["torchjd"])
                # medians of the per-repetition ratios (both calls of a ratio are in the same repetition)
                row["speedup"] = paired_ratio(times["torchjd"], times["molearn"])
                row["speedup_wall"] = paired_ratio(walls["torchjd"], walls["molearn"])
            except Exception as exc:  # a method that fails is reported, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}"[:200]
            rows.append(row)
            print(_row_line(row), flush=True)
    unmatched = sorted(set(reg) - {p.name for p in pairs})
    unmatched += [f"{m} (import failed: {e})" for m, e in import_errors.items()]
    return rows, missing, unmatched


def _row_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['method']:>10} K={r['K']:<3} ERROR {r['error']}"
    return (
        f"{r['method']:>10} K={r['K']:<3} molearn {fmt_time(r['molearn_s']):>10}"
        f"  torchjd {fmt_time(r['torchjd_s']):>10}"
        f"  speed-up {r['speedup']:7.1f}  dir diff {r['dir_rel_diff']:.2e}  same: {r['same_solution']}"
    )


def target_status(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Every method ≥ 1× TorchJD at K = 3, 10, 40 and ≥ 10× for CAGrad, Nash-MTL and FairGrad."""
    out = []
    for r in rows:
        if r["K"] not in TARGET_KS:
            continue
        need = FAST_TARGET.get(r["method"], TARGET_SPEEDUP)
        if "error" in r:
            out.append([r["method"], r["K"], f"≥ {need:g}×", "–", "not met (error)"])
            continue
        fast = r["speedup"] >= need
        out.append(
            [r["method"], r["K"], f"≥ {need:g}×", f"{r['speedup']:.2f}×", "met" if fast else "not met"]
        )
    return out


def _ref_cell(r: dict[str, Any]) -> str:
    if "ref_dir_diff" not in r:
        return "–"
    return (
        f"{r['ref_dir_diff']:.1e} (TorchJD {r['torchjd_ref_diff']:.1e}); ‖d‖: {r['ref_norm_diff']:.1e} "
        f"(TorchJD {r['torchjd_ref_norm_diff']:.1e})"
    )


def _cuda_section(rows: list[dict[str, Any]]) -> list[str]:
    """CUDA runs: host synchronisations and CUDA-graph capture of each method's ``combine``."""
    cuda = [r for r in rows if "cuda_graph" in r]
    if not cuda:
        return []
    table = [[r["method"], r["K"], r.get("host_syncs", "–"), r["cuda_graph"]] for r in cuda]
    return [
        "## CUDA: host synchronisations and CUDA-graph capture of `combine`",
        "",
        '`host syncs`: the pool\'s calls under `torch.cuda.set_sync_debug_mode("error")`; `CUDA graph`: '
        "captured after 3 warm-up calls, 3 replays (new inputs copied into the static buffers) against an "
        "identical instance called eagerly.",
        "",
        markdown_table(["method", "K", "host syncs", "CUDA graph"], table),
        "",
    ]


def report(
    rows: list[dict[str, Any]], missing: list[str], unmatched: list[str], info: dict[str, Any], cmd: str
) -> str:
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["method"], r["K"], "–", "–", "–", "–", "–", "–", "–", "error: " + r["error"]])
            continue
        table.append(
            [
                r["method"],
                r["K"],
                fmt_time(r["molearn_s"]),
                fmt_time(r["torchjd_s"]),
                f"{r['speedup']:.1f}×",
                f"{r['speedup_wall']:.1f}×",
                f"{r['dir_rel_diff']:.1e}",
                _ref_cell(r),
                f"{r['weights_rel_diff']:.1e}" if not math.isnan(r["weights_rel_diff"]) else "–",
                r["same_solution"],
            ]
        )
    parts = [
        "# K×K step: molearn `Method.combine` vs TorchJD 0.18 (same method, same inputs)",
        "",
        f"Command: `{cmd}`",
        "",
        machine_block(info),
        "",
        "Each row: a pool of random Jacobians J (K×P, rows g_i = s_i(u + 2A_iB + 0.5z_i) with u, z_i, "
        "A (K×4), 2B (4×P) standard normal and s_i = exp(N(0, 0.25)): 25-40% of the pairs of gradients "
        "conflict) and their float32 Gramians J Jᵀ; both libraries are called round-robin on "
        "the pool (molearn: `combine(Inputs(losses, gramian[, jacobian]))`, plus Jᵀw for Jacobian methods; "
        "TorchJD: `Weighting(gramian)`, or `Aggregator(J)` where TorchJD only has an aggregator), medians "
        "over the repetitions after 2 warm-up calls. Times are on the clock named in the machine block "
        "(`process`: CPU time of the process, which does not count waiting for a core; one torch thread); "
        "speed-up = median over the repetitions of TorchJD time / molearn time (the two calls of one "
        "repetition back to back) on that clock, `(wall)` the same on wall-clock time, "
        "both measured in the same run. The 2 CPUs are shared with other jobs running at the same time, so "
        "absolute times are noisy; the ratios are measured in one interleaved run.",
        "",
        "Solution difference (worst over the pool, fresh instances): `dir diff` = ‖d_molearn − d_torchjd‖ / "
        "‖d_torchjd‖ with d = Jᵀw (float64); `w diff` = max|Δw| / max|w_torchjd| where both give weights. "
        "`ref diff`: the same against a high-accuracy TorchJD configuration of the method (MGDA: "
        "Frank-Wolfe to eps 1e-12, in float64), with the timed TorchJD configuration's own error in "
        "brackets, then the same for the norm of the direction (MGDA's objective is ‖d‖²; as ‖d − d*‖² ≤ "
        "‖d‖² − ‖d*‖², a small norm difference bounds the error); where a reference exists, `same` is "
        f"judged on it: direction within {SAME_TOL:g} or norm within {NORM_TOL:g}. "
        f"`same` = `yes` when the difference ≤ {SAME_TOL:g}; `direction yes, norm ×r` when only the unit "
        "directions agree (a documented scale convention); random-order methods are compared at K = 2 only.",
        "",
        markdown_table(
            [
                "method",
                "K",
                "molearn",
                "TorchJD",
                "speed-up",
                "(wall)",
                "dir diff",
                "ref diff",
                "w diff",
                "same",
            ],
            table,
        ),
        "",
        *_cuda_section(rows),
        "## Targets (issue 13): every method at least as fast as TorchJD at K = 3, 10, 40; ≥ 10× for "
        "CAGrad, Nash-MTL and FairGrad",
        "",
        markdown_table(["method", "K", "target", "speed-up", "status"], target_status(rows)),
        "",
        "Methods with a TorchJD counterpart not available in `molearn.methods.registry()` at run time: "
        + (", ".join(missing) if missing else "none")
        + ".",
        "",
        "molearn methods without a TorchJD counterpart (not compared): "
        + (", ".join(unmatched) or "none")
        + ".",
        "",
        "Notes per method: "
        + "; ".join(sorted({f"{r['method']}: {r['note']}" for r in rows if r.get("note")}))
        + ".",
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 10, 40])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--p", type=int, default=None, help="columns P of the random Jacobians (default 1000; 10⁶ on CUDA)"
    )
    ap.add_argument("--pool", type=int, default=4, help="distinct Jacobians cycled (no warm start)")
    ap.add_argument("--budget", type=float, default=1.5, help="seconds per (method, K) cell, both libraries")
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--max-reps", type=int, default=200)
    ap.add_argument(
        "--clock",
        choices=["auto", "wall", "process"],
        default="auto",
        help="process: CPU time of this process (auto on the CPU with 1 thread); wall: perf_counter",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: least noise)")
    ap.add_argument("--methods", nargs="*", default=None, help="only these molearn class names")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--quick", action="store_true", help="tiniest setting (K=2, P=50, 2 reps): smoke test")
    args = ap.parse_args(argv)
    if args.p is None:
        args.p = 1_000_000 if args.device == "cuda" else 1000
    if args.quick:
        args.ks, args.p, args.pool, args.budget, args.min_reps, args.max_reps = [2], 50, 1, 0.0, 2, 2
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    torch.set_num_threads(args.threads)
    if args.clock == "auto":
        args.clock = default_clock(args.device, args.threads)
    info = {**machine_info(args.device), "clock": args.clock}
    cmd = command_line() if argv is None else "python benchmarks/bench_solvers.py " + " ".join(argv)
    rows, missing, unmatched = run(
        args.ks,
        args.p,
        args.pool,
        args.budget,
        args.max_reps,
        args.min_reps,
        args.methods,
        args.clock,
        args.device,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "solvers" if args.device == "cpu" else "solvers_cuda"
    write_csv(args.out / f"{stem}.csv", rows)
    write_json(args.out / f"{stem}.json", {"machine": info, "command": cmd, "rows": rows, "missing": missing})
    (args.out / f"{stem}.md").write_text(report(rows, missing, unmatched, info, cmd))
    print(f"wrote {args.out / (stem + '.md')}; not available: {', '.join(missing) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
