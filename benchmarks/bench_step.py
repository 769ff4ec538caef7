"""A whole training step with a Gramian method (MGDA) vs equal weighting, per engine mode, and vs TorchJD.

One step = forward, the method's update written into ``.grad`` (per-objective gradients, Gramian,
``combine``, write), ``optimizer.step()`` and ``zero_grad``. For each model (an MLP trunk and a small
conv trunk with BatchNorm, K linear heads) and each K, every variant is timed round-robin on one fixed
batch (medians), and its peak memory above what is held between steps is measured once more afterwards.
Run ``python benchmarks/bench_step.py --help``; ``--device cuda`` also tries to capture each Gramian
method's ``combine`` in a CUDA graph.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import molearn
from _common import (
    RESULTS_DIR,
    PeakMemory,
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
    synchronize,
    write_csv,
    write_json,
)
from molearn.engine import gramian_blockwise, jacobian_batched, jacobian_loop
from molearn.methods import MGDA, Inputs, Method, Needs, Output, registry

MODES = ("loop", "batched", "gramian", "representation")
OVERHEAD_TARGET = 0.10
MEMORY_TARGET = 2.0
NOTES: set[str] = set()


class _UnitWeights(Method):
    """A Gramian method that returns unit weights: isolates the engine's cost from any solver's.

    (The leading underscore keeps it out of ``molearn.methods.registry()``.)
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def combine(self, inputs: Inputs) -> Output:
        assert inputs.gramian is not None
        return Output(weights=torch.ones_like(inputs.losses))


# ---------------------------------------------------------------------------------------------- models
class MultiHead(nn.Module):
    """A trunk giving shared features z and K linear heads; ``losses`` are K mean-squared errors.

    The K heads are the K rows of one ``Linear(width, K)`` (the same maths as K separate ``Linear(width,
    1)``): with separate modules every per-objective backward also runs the K-1 other heads' backward on
    zero cotangents, a K² cost that belongs to the model, not to the engine being measured.
    """

    def __init__(self, trunk: nn.Module, width: int, k: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.Linear(width, k)

    def losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        z = self.trunk(x)
        return ((self.heads(z) - y) ** 2).mean(0), z


def mlp(k: int, d_in: int, hidden: int, layers: int) -> MultiHead:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    return MultiHead(nn.Sequential(*mods), hidden, k)


def convnet(k: int, channels: int, layers: int) -> MultiHead:
    mods: list[nn.Module] = []
    c = 3
    for i in range(layers):
        mods += [nn.Conv2d(c, channels, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(channels)]
        mods += [nn.ReLU()]
        c = channels
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return MultiHead(nn.Sequential(*mods), channels, k)


def make_problem(name: str, k: int, quick: bool, device: str) -> tuple[MultiHead, Tensor, Tensor, str]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        d_in, hidden, layers, batch = (8, 16, 2, 8) if quick else (64, 256, 3, 128)
        model = mlp(k, d_in, hidden, layers)
        x = torch.randn(batch, d_in, generator=gen)
        desc = f"MLP {d_in}→{hidden}×{layers} (ReLU), batch {batch}"
    else:
        channels, layers, side, batch = (4, 2, 8, 4) if quick else (32, 3, 32, 32)
        model = convnet(k, channels, layers)
        x = torch.randn(batch, 3, side, side, generator=gen)
        desc = f"conv {layers}×{channels} ch. (3×3, BatchNorm, ReLU; stride 1,2,2), {side}×{side} inputs"
        desc += f", batch {batch}"
    y = torch.randn(x.shape[0], k, generator=gen)
    return model.to(device), x.to(device), y.to(device), desc


# ---------------------------------------------------------------------------------------------- steps
def _k_grads(mode: str, model: MultiHead, x: Tensor, y: Tensor) -> Callable[[], Any]:
    """Forward and the K per-objective gradients in ``mode``, nothing else (the baseline)."""
    shared = list(model.trunk.parameters())

    def fn() -> Any:
        losses, z = model.losses(x, y)
        if mode == "loop":
            return jacobian_loop(list(losses.unbind()), shared, retain_graph=False, flat=True)
        if mode == "batched":
            return jacobian_batched(losses, shared, retain_graph=False)
        if mode == "gramian":
            return gramian_blockwise(losses, shared, retain_graph=False)
        return jacobian_batched(losses, [z], retain_graph=False)

    return fn


def _ew_step(model: MultiHead, x: Tensor, y: Tensor, opt: torch.optim.Optimizer) -> Callable[[], Any]:
    def fn() -> None:
        losses, _ = model.losses(x, y)
        losses.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return fn


def _molearn_step(
    model: MultiHead, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, method: Any, mode: str
) -> Callable[[], Any]:
    bal = molearn.Balancer(
        method, shared=model.trunk.parameters(), tasks=model.heads.parameters(), mode=mode, check_finite=False
    )

    def fn() -> None:
        losses, z = model.losses(x, y)
        bal.backward(losses, features=z if mode == "representation" else None)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return fn


def _torchjd_step(
    model: MultiHead, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, weighting: Any
) -> Callable[[], Any]:
    from torchjd.autogram import Engine

    # batch_dim=None: the K losses have no batch dimension (and BatchNorm forbids batch_dim=0).
    engine = Engine(model.trunk, batch_dim=None)

    def fn() -> None:
        losses, _ = model.losses(x, y)
        gramian = engine.compute_gramian(losses)
        losses.backward(weighting(gramian))
        opt.step()
        opt.zero_grad(set_to_none=True)

    return fn


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-4)


def _upgrad_cls() -> type | None:
    for cls in registry().values():
        if cls.__name__ == "UPGrad":
            return cls
    return None


def bench_problem(
    name: str, k: int, args: argparse.Namespace, mem: PeakMemory
) -> tuple[list[dict[str, Any]], str]:
    model, x, y, desc = make_problem(name, k, args.quick, args.device)
    variants: dict[str, Callable[[], Any]] = {}
    meta: dict[str, dict[str, str]] = {}

    def add(key: str, fn: Callable[[], Any], **m: str) -> None:
        variants[key] = fn
        meta[key] = m

    add("EW", _ew_step(model, x, y, _sgd(model)), kind="ew", lib="torch", method="EW")
    for mode in MODES:
        add(f"grads/{mode}", _k_grads(mode, model, x, y), kind="grads", lib="molearn", mode=mode)
        if mode != "representation":
            add(
                f"unit/{mode}",
                _molearn_step(model, x, y, _sgd(model), _UnitWeights(), mode),
                kind="step",
                lib="molearn",
                mode=mode,
                method="unit",
            )
        add(
            f"MGDA/{mode}",
            _molearn_step(model, x, y, _sgd(model), MGDA(), mode),
            kind="step",
            lib="molearn",
            mode=mode,
            method="MGDA",
        )
    upgrad = _upgrad_cls()
    if upgrad is not None:
        add(
            "UPGrad/gramian",
            _molearn_step(model, x, y, _sgd(model), upgrad(), "gramian"),
            kind="step",
            lib="molearn",
            mode="gramian",
            method="UPGrad",
        )
    if not args.no_torchjd:
        for wname in ("MGDA", "UPGrad"):
            try:
                import torchjd.aggregation as tja

                weighting = getattr(tja, f"{wname}Weighting")()
            except ImportError as exc:  # e.g. UPGrad's default projector needs qpsolvers
                NOTES.add(f"TorchJD {wname} not run: {exc}")
                continue
            tj_model = copy.deepcopy(model)  # the Engine hooks the modules for good: keep it apart
            add(
                f"TorchJD {wname}",
                _torchjd_step(tj_model, x, y, _sgd(tj_model), weighting),
                kind="step",
                lib="torchjd",
                mode="autogram",
                method=wname,
            )
    # Peak memory first (one call each, after one warm-up call): it doubles as a second warm-up.
    peaks = {}
    for key, fn in variants.items():
        fn()
        peaks[key] = mem.measure(fn)
    times = interleaved_times(
        variants,
        device=args.device,
        warmup=0,
        min_reps=args.min_reps,
        max_reps=args.max_reps,
        budget_s=args.budget,
        clock=args.clock,
    )
    rows = []
    for key in variants:
        row: dict[str, Any] = {"model": name, "K": k, "variant": key, **meta[key]}
        row["time_s"] = median(times[key])
        row["reps"] = len(times[key])
        row["peak_bytes"] = peaks[key]
        row["times_s"] = times[key]
        rows.append(row)
    by = {r["variant"]: r for r in rows}
    ew = by["EW"]
    # ratios: medians over the repetitions of the per-repetition ratios (paired, same round-robin pass)
    for r in rows:
        r["time_vs_ew"] = paired_ratio(times[r["variant"]], times["EW"])
        r["peak_vs_ew"] = r["peak_bytes"] / ew["peak_bytes"] if ew["peak_bytes"] > 0 else float("nan")
        if r["kind"] == "step" and r["lib"] == "molearn":
            r["overhead_vs_grads"] = paired_ratio(times[r["variant"]], times[f"grads/{r['mode']}"]) - 1.0
        if r["lib"] == "torchjd" and f"{r['method']}/gramian" in times:
            r["speedup_vs_torchjd"] = paired_ratio(times[r["variant"]], times[f"{r['method']}/gramian"])
    for r in rows:
        print(
            f"{name:>4} K={k:<3} {r['variant']:<22} {fmt_time(r['time_s']):>10}  ×EW {r['time_vs_ew']:6.2f}"
            f"  peak {r['peak_bytes'] / 1e6:8.2f} MB  ×EW {r['peak_vs_ew']:5.2f}"
            + (f"  overhead {100 * r['overhead_vs_grads']:6.1f}%" if "overhead_vs_grads" in r else ""),
            flush=True,
        )
    return rows, desc


# ---------------------------------------------------------------------------------------------- CUDA graphs
def cuda_graph_check(device: str, k: int = 10) -> list[dict[str, Any]]:
    """Try to capture one ``combine`` of each Gramian method in a CUDA graph and replay it on new data."""
    out = []
    for cls in sorted(registry().values(), key=lambda c: c.__name__):
        needs = cls.needs
        if not needs.gramian or needs.jacobian or needs.batches > 1 or needs.closure:
            continue
        row: dict[str, Any] = {"method": cls.__name__, "K": k}
        try:
            method = cls()
            gen = torch.Generator().manual_seed(0)
            a = torch.randn(k, 64, generator=gen)
            b = torch.randn(k, 64, generator=gen)
            g_static = (a @ a.T).to(device)
            losses = (torch.rand(k, generator=gen) + 0.5).to(device)
            inputs = Inputs(losses=losses, gramian=g_static)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    method.combine(inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = method.combine(inputs)
            reference = copy.deepcopy(method)
            g_static.copy_((b @ b.T).to(device))
            eager = reference.combine(Inputs(losses=losses, gramian=g_static.clone()))
            graph.replay()
            torch.cuda.synchronize()
            got = static_out.weights if static_out.weights is not None else static_out.direction
            want = eager.weights if eager.weights is not None else eager.direction
            ok = bool(torch.allclose(got, want, rtol=1e-4, atol=1e-6))
            row["result"] = "captured, replay = eager" if ok else "captured, replay ≠ eager"
        except Exception as exc:
            row["result"] = (
                f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"
            )
        out.append(row)
        print(f"CUDA graph {row['method']:<12} {row['result']}", flush=True)
    return out


# ---------------------------------------------------------------------------------------------- report
def _mb(x: float) -> str:
    return "–" if math.isnan(x) else f"{x / 1e6:.2f}"


def report(
    rows: list[dict[str, Any]],
    descs: dict[str, str],
    graphs: list[dict[str, Any]] | None,
    info: dict[str, Any],
    cmd: str,
    mem: PeakMemory,
    calib: float,
) -> str:
    parts = [
        "# Whole training step: molearn engine modes with MGDA vs EW, and vs TorchJD 0.18 autogram",
        "",
        f"Command: `{cmd}`",
        "",
        machine_block(info),
        "",
        "Models (K linear heads on the trunk's features, K mean-squared-error losses on random targets, "
        "SGD): " + "; ".join(f"**{k}**: {v}" for k, v in descs.items()) + ".",
        "",
        "Variants, all on the same fixed batch, timed round-robin (median over the repetitions after "
        "warm-up); each ends with `optimizer.zero_grad(set_to_none=True)`:",
        "",
        "- `EW`: forward, `losses.sum().backward()`, `optimizer.step()`.",
        "- `grads/<mode>`: forward and the K per-objective gradients of the trunk only, with the engine "
        "function of that mode (`jacobian_loop`, `jacobian_batched`, `gramian_blockwise`; for "
        "`representation`: `jacobian_batched` w.r.t. the features z). This is the baseline of the overhead.",
        "- `MGDA/<mode>`: forward, `Balancer(MGDA(), mode=<mode>).backward(losses)` (Gramian, `combine`, "
        "write of the trunk's and heads' `.grad`), `optimizer.step()`.",
        "- `unit/<mode>`: the same with a Gramian method that returns unit weights without solving anything "
        "(defined in this script): the engine's own cost, without any solver.",
        "- `UPGrad/gramian`: the same with molearn's UPGrad, where it exists.",
        "- `TorchJD <w>`: forward, `Engine(trunk, batch_dim=None).compute_gramian(losses)`, "
        "`losses.backward(<w>Weighting()(gramian))`, `optimizer.step()` (on a copy of the model: the engine "
        "hooks its modules). TorchJD's heads get w_i∇L_i, molearn's MGDA gives them ∇L_i (one more "
        "backward through the heads only).",
        "",
        "Times are medians on the clock named above (`process`: CPU time of the process, one torch thread: "
        "waiting for a core is not counted). Ratios (`× EW`, `overhead`, TorchJD speed-up) are medians over "
        "the repetitions of the ratio of the two variants' times in the same round-robin repetition. "
        "`overhead` = step time / `grads/<mode>` time − 1: what the step costs above the "
        "forward and the K per-objective gradients (Gramian, solver, write-back, optimizer step). In "
        "`representation` mode the K gradients are w.r.t. the features only and the step adds a whole "
        "backward through the trunk, so its overhead is not comparable (the target does not apply).",
        "",
        f"Peak memory: {mem.kind}; the peak during one step above the memory held before it (parameters, "
        "batch; `.grad` is freed between steps). "
        + (
            "On the CPU this is the process's peak RSS (`VmHWM`, reset through `/proc/self/clear_refs`) "
            "minus its RSS before the step, measured in a separate call after `malloc_trim`, with glibc "
            "told (`mallopt`) to `mmap` every allocation above 64 KiB and to give freed memory back at "
            "once, so that the RSS follows tensor allocations; it includes autograd's buffers (timed calls "
            "run with glibc keeping freed memory for reuse). Calibration (tensors of known size, large and "
            "small, worst case): "
            f"measured/true = {calib:.3f}."
            if not info["device"].startswith("cuda")
            else "`torch.cuda.max_memory_allocated() − memory_allocated()` before the step."
        ),
        "",
        "The CPUs are shared with other jobs running at the same time: absolute times are noisy, the "
        "ratios are measured in one interleaved run; with 3-7 repetitions an overhead within about ±10% "
        "of 0 is not resolved (negative values are noise). On the CPU, peaks of a few MB (the MLP) vary "
        "by some ±30% between variants that allocate the same tensors (glibc heap pages); the peaks of "
        "hundreds of MB (the conv net at K ≥ 10) are stable to about 1%.",
        "",
    ]
    headers = ["K", "variant", "time", "× EW", "overhead", "peak MB", "peak × EW", "reps"]
    for model in descs:
        parts += [f"## {model}", ""]
        table = []
        for r in rows:
            if r["model"] != model:
                continue
            ov = r.get("overhead_vs_grads")
            table.append(
                [
                    r["K"],
                    r["variant"],
                    fmt_time(r["time_s"]),
                    f"{r['time_vs_ew']:.2f}",
                    "–" if ov is None else f"{100 * ov:.0f}%",
                    _mb(r["peak_bytes"]),
                    "–" if math.isnan(r["peak_vs_ew"]) else f"{r['peak_vs_ew']:.2f}",
                    r["reps"],
                ]
            )
        parts += [markdown_table(headers, table), ""]
    parts += ["## TorchJD autogram vs molearn `gramian` mode at equal method", ""]
    tj_rows = []
    for r in rows:
        if r["lib"] != "torchjd":
            continue
        mine = next(
            (
                x
                for x in rows
                if x["model"] == r["model"] and x["K"] == r["K"] and x["variant"] == f"{r['method']}/gramian"
            ),
            None,
        )
        if mine is None:
            tj_rows.append(
                [r["model"], r["K"], r["method"], "–", fmt_time(r["time_s"]), "–", "–", _mb(r["peak_bytes"])]
            )
            continue
        tj_rows.append(
            [
                r["model"],
                r["K"],
                r["method"],
                fmt_time(mine["time_s"]),
                fmt_time(r["time_s"]),
                f"{r['speedup_vs_torchjd']:.2f}×",
                _mb(mine["peak_bytes"]),
                _mb(r["peak_bytes"]),
            ]
        )
    parts += [
        markdown_table(
            ["model", "K", "method", "molearn", "TorchJD", "speed-up", "molearn peak MB", "TorchJD peak MB"],
            tj_rows,
        ),
        "",
        "## Targets",
        "",
    ]
    targets = []
    for r in rows:
        if r["kind"] == "step" and r["lib"] == "molearn" and r["method"] in ("MGDA", "unit"):
            if r["mode"] == "representation":
                continue
            ok = r["overhead_vs_grads"] <= OVERHEAD_TARGET
            who = "MGDA" if r["method"] == "MGDA" else "engine only (unit weights)"
            targets.append(
                [
                    f"overhead ≤ {100 * OVERHEAD_TARGET:.0f}%: {who}, `{r['mode']}`",
                    r["model"],
                    r["K"],
                    f"{100 * r['overhead_vs_grads']:.0f}%",
                    "met" if ok else "not met",
                ]
            )
    kmax = max(r["K"] for r in rows)
    for r in rows:
        if r["variant"] == "MGDA/gramian" and r["K"] == kmax:
            ok = r["peak_vs_ew"] <= MEMORY_TARGET
            label = "met" if ok else ("not measured" if math.isnan(r["peak_vs_ew"]) else "not met")
            targets.append(
                [
                    f"`gramian` peak ≤ {MEMORY_TARGET:g}× EW at K = {kmax}",
                    r["model"],
                    kmax,
                    f"{r['peak_vs_ew']:.2f}×",
                    label,
                ]
            )
    parts += [markdown_table(["target", "model", "K", "value", "status"], targets), ""]
    if NOTES:
        parts += ["Notes: " + "; ".join(sorted(NOTES)), ""]
    if graphs is not None:
        parts += ["## CUDA-graph capture of `combine` (Gramian methods, K = 10)", ""]
        parts += [markdown_table(["method", "result"], [[g["method"], g["result"]] for g in graphs]), ""]
    else:
        parts += ["CUDA-graph capture: not tried (CPU run; use `--device cuda`).", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 10, 40])
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--max-reps", type=int, default=30)
    ap.add_argument(
        "--budget", type=float, default=6.0, help="seconds of timing per (model, K), all variants"
    )
    ap.add_argument(
        "--clock",
        choices=["auto", "wall", "process"],
        default="auto",
        help="process: CPU time of this process (auto on the CPU with 1 thread); wall: perf_counter",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on the CPU")
    ap.add_argument("--no-torchjd", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument(
        "--quick", action="store_true", help="tiniest setting (tiny models, K=2, 1 rep): smoke test"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.ks, args.min_reps, args.max_reps, args.budget = [2], 1, 1, 0.0
    torch.set_num_threads(args.threads)
    if args.clock == "auto":
        args.clock = default_clock(args.device, args.threads)
    load_all_methods()
    info = {**machine_info(args.device), "clock": args.clock}
    cmd = command_line() if argv is None else "python benchmarks/bench_step.py " + " ".join(argv)
    mem = PeakMemory(args.device)
    calib = mem.calibrate(8 if args.quick else 64) if mem.available else float("nan")
    rows: list[dict[str, Any]] = []
    descs: dict[str, str] = {}
    for name in args.models:
        for k in args.ks:
            r, descs[name] = bench_problem(name, k, args, mem)
            rows += r
            synchronize(args.device)
    graphs = cuda_graph_check(args.device) if args.device.startswith("cuda") else None
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "step.csv", rows)
    payload = {"machine": info, "command": cmd, "memory_method": mem.kind, "calibration": calib, "rows": rows}
    write_json(args.out / "step.json", {**payload, "cuda_graphs": graphs})
    (args.out / "step.md").write_text(report(rows, descs, graphs, info, cmd, mem, calib))
    print(f"wrote {args.out / 'step.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
