"""A whole training step: molearn's default (``auto``) and every engine strategy vs EW and TorchJD autogram.

One step = forward, the method's update written into ``.grad`` (per-objective statistics, ``combine``,
write), ``optimizer.step()`` and ``zero_grad``. For each model (a trunk with K linear heads, K MSE losses)
and each K, every variant is timed round-robin on one fixed batch (medians), and its peak memory above
what is held between steps is measured in a separate call. The floor of the exact-Gramian methods is
measured too: the forward and the K per-objective gradients of the trunk (``grads/loop``,
``grads/batched``); the overhead of a step is its time over the faster floor, minus 1.

Models: ``mlp`` and ``conv`` (CPU-sized defaults), ``wide-mlp`` (1024→4096×3, batch 256: issue 13's GPU
trunk) and ``resnet18`` (ResNet-18 with BatchNorm on 3×64×64, batch 64); ``--reduced`` shrinks the last
two for a CPU run. Run ``python benchmarks/bench_step.py --help``; ``--device cuda`` runs everything on
the GPU (the CUDA-graph capture of ``combine`` is ``bench_solvers.py``'s business).
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
from molearn.engine import LayerwiseGramian, jacobian_batched, jacobian_loop
from molearn.methods import MGDA, Inputs, Method, Needs, Output, registry

MODELS = ("mlp", "conv", "wide-mlp", "resnet18")
OVERHEAD_TARGET = 0.10
TORCHJD_TIME_TARGET = 0.8
TORCHJD_MEMORY_TARGET = 1.0
LOSS_ONLY_TARGET = 1.05
TARGET_METHODS = ("MGDA", "UPGrad", "NashMTL", "CAGrad")
LOSS_ONLY = ("EW", "RLW", "UW")
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


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convolutions with BatchNorm, in-place ReLU, projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.down: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.down = nn.Sequential(conv, nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


def resnet18(base: int = 64) -> tuple[nn.Module, int]:
    """ResNet-18 (He et al. 2016; torchvision's layout: 7×7 stem, max-pool, 4 stages of 2 basic blocks)
    without its classifier; returns the trunk and its feature width."""
    widths = [base, 2 * base, 4 * base, 8 * base]
    mods: list[nn.Module] = [
        nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(base),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    c = base
    for i, w in enumerate(widths):
        mods += [BasicBlock(c, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
        c = w
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*mods), c


def make_problem(name: str, k: int, args: argparse.Namespace) -> tuple[MultiHead, Tensor, Tensor, str]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    quick, reduced = args.quick, args.reduced
    if name in ("mlp", "wide-mlp"):
        if name == "mlp":
            d_in, hidden, layers, batch = (8, 16, 2, 8) if quick else (64, 256, 3, 128)
        else:
            d_in, hidden, layers, batch = (
                (16, 64, 3, 4) if quick else (256, 1024, 3, 64) if reduced else (1024, 4096, 3, 256)
            )
        model = mlp(k, d_in, hidden, layers)
        x = torch.randn(batch, d_in, generator=gen)
        desc = f"MLP {d_in}→{hidden}×{layers} (ReLU), batch {batch}"
    elif name == "conv":
        channels, layers, side, batch = (4, 2, 8, 4) if quick else (32, 3, 32, 32)
        model = convnet(k, channels, layers)
        x = torch.randn(batch, 3, side, side, generator=gen)
        desc = f"conv {layers}×{channels} ch. (3×3, BatchNorm, ReLU; stride 1,2,2), {side}×{side} inputs"
        desc += f", batch {batch}"
    else:
        base, side, batch = (4, 16, 2) if quick else (16, 32, 16) if reduced else (64, 64, 64)
        trunk, width = resnet18(base)
        model = MultiHead(trunk, width, k)
        x = torch.randn(batch, 3, side, side, generator=gen)
        n = sum(p.numel() for p in trunk.parameters())
        desc = f"ResNet-18 (base width {base}, BatchNorm, {n / 1e6:.2f}M parameters), 3×{side}×{side}"
        desc += f", batch {batch}"
    y = torch.randn(x.shape[0], k, generator=gen)
    return model.to(args.device), x.to(args.device), y.to(args.device), desc


# ---------------------------------------------------------------------------------------------- steps
def _k_grads(mode: str, model: MultiHead, x: Tensor, y: Tensor) -> Callable[[], Any]:
    """Forward and the K per-objective gradients of the trunk, nothing else (the floor)."""
    shared = list(model.trunk.parameters())

    def fn() -> Any:
        losses, _ = model.losses(x, y)
        if mode == "loop":
            return jacobian_loop(list(losses.unbind()), shared, retain_graph=False, flat=True)
        return jacobian_batched(losses, shared, retain_graph=False)

    return fn


def _ew_step(model: MultiHead, x: Tensor, y: Tensor, opt: torch.optim.Optimizer) -> Callable[[], Any]:
    def fn() -> None:
        losses, _ = model.losses(x, y)
        losses.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return fn


def _molearn_step(
    model: MultiHead, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, method: Any, mode: Any
) -> tuple[Callable[[], Any], molearn.Balancer]:
    bal = molearn.Balancer(
        method, shared=model.trunk, tasks=model.heads.parameters(), mode=mode, check_finite=False
    )
    features = mode == "representation"

    def fn() -> None:
        losses, z = model.losses(x, y)
        bal.backward(losses, features=z if features else None)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return fn, bal


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


def _method(name: str) -> Method | None:
    for cls in registry().values():
        if cls.__name__ == name:
            return cls()
    return None


STRATEGIES: dict[str, Callable[[int], Any]] = {
    "loop": lambda k: "loop",
    "batched": lambda k: "batched",
    "gramian": lambda k: LayerwiseGramian(1),
    "gramian-batched": lambda k: LayerwiseGramian(k),
    "representation": lambda k: "representation",
}


def bench_problem(
    name: str, k: int, args: argparse.Namespace, mem: PeakMemory
) -> tuple[list[dict[str, Any]], str, dict[str, str]]:
    model, x, y, desc = make_problem(name, k, args)
    variants: dict[str, Callable[[], Any]] = {}
    meta: dict[str, dict[str, str]] = {}
    balancers: list[molearn.Balancer] = []

    def add(key: str, fn: Callable[[], Any], **m: str) -> None:
        variants[key] = fn
        meta[key] = m

    def add_molearn(
        key: str, method: Method, mode: Any, label: str, method_name: str, kind: str = "step"
    ) -> None:
        fn, bal = _molearn_step(model, x, y, _sgd(model), method, mode)
        if (
            bal._recorder is not None
        ):  # forward hooks: on a copy of its own, so that no two variants share them
            bal.close()
            m = copy.deepcopy(model)
            fn, bal = _molearn_step(m, x, y, _sgd(m), method, mode)
        balancers.append(bal)
        add(key, fn, kind=kind, lib="molearn", mode=label, method=method_name)

    add("EW", _ew_step(model, x, y, _sgd(model)), kind="ew", lib="torch", method="EW")
    for mode in ("loop", "batched"):
        add(f"grads/{mode}", _k_grads(mode, model, x, y), kind="grads", lib="molearn", mode=mode)
    auto: dict[str, molearn.Balancer] = {}
    # the default mode, with the target methods and the loss-only ones
    for mname in (*TARGET_METHODS, *LOSS_ONLY):
        method = _method(mname)
        if method is None:
            NOTES.add(f"molearn has no {mname}")
            continue
        kind = "loss-only" if mname in LOSS_ONLY else "step"
        add_molearn(f"{mname}/auto", method, "auto", "auto", mname, kind)
        auto[mname] = balancers[-1]
    add_molearn("unit/auto", _UnitWeights(), "auto", "auto", "unit")
    # every strategy with the engine-only method and with MGDA
    for label, make in STRATEGIES.items():
        if label != "representation":
            add_molearn(f"unit/{label}", _UnitWeights(), make(k), label, "unit")
        add_molearn(f"MGDA/{label}", MGDA(), make(k), label, "MGDA")
    if not args.no_torchjd:
        for wname in ("MGDA", "UPGrad", "CAGrad"):
            try:
                import torchjd.aggregation as tja

                kwargs = {"c": _method("CAGrad").c} if wname == "CAGrad" else {}  # type: ignore[union-attr]
                weighting = getattr(tja, f"{wname}Weighting")(**kwargs)
            except (ImportError, AttributeError) as exc:
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
        NOTES.add("TorchJD 0.18 has no Nash-MTL weighting for autogram: Nash-MTL is compared with EW only")
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
    chosen = {m: _describe(b.strategy_for(k), k) for m, b in auto.items()}
    for bal in balancers:
        bal.close()
    rows = []
    for key in variants:
        row: dict[str, Any] = {"model": name, "K": k, "variant": key, **meta[key]}
        row["time_s"] = median(times[key])
        row["reps"] = len(times[key])
        row["peak_bytes"] = peaks[key]
        row["times_s"] = times[key]
        rows.append(row)
    ew = next(r for r in rows if r["variant"] == "EW")
    floor = [min(a, b) for a, b in zip(times["grads/loop"], times["grads/batched"], strict=True)]
    for r in rows:
        r["time_vs_ew"] = paired_ratio(times[r["variant"]], times["EW"])
        r["peak_vs_ew"] = r["peak_bytes"] / ew["peak_bytes"] if ew["peak_bytes"] > 0 else float("nan")
        if r["kind"] == "step":
            r["overhead_vs_grads"] = paired_ratio(times[r["variant"]], floor) - 1.0
        if r["lib"] == "molearn" and r.get("mode") == "auto" and f"TorchJD {r['method']}" in times:
            tj = next(x for x in rows if x["variant"] == f"TorchJD {r['method']}")
            r["time_vs_torchjd"] = paired_ratio(times[r["variant"]], times[tj["variant"]])
            r["peak_vs_torchjd"] = (
                r["peak_bytes"] / tj["peak_bytes"] if tj["peak_bytes"] > 0 else float("nan")
            )
    for r in rows:
        extra = ""
        if "overhead_vs_grads" in r:
            extra += f"  overhead {100 * r['overhead_vs_grads']:6.1f}%"
        if "time_vs_torchjd" in r:
            extra += f"  ×TorchJD {r['time_vs_torchjd']:5.2f} (peak {r['peak_vs_torchjd']:5.2f})"
        print(
            f"{name:>8} K={k:<3} {r['variant']:<22} {fmt_time(r['time_s']):>10}  ×EW {r['time_vs_ew']:6.2f}"
            f"  peak {r['peak_bytes'] / 1e6:8.2f} MB  ×EW {r['peak_vs_ew']:5.2f}" + extra,
            flush=True,
        )
    return rows, desc, chosen


def _describe(strategy: Any, k: int) -> str:
    """What a strategy did in its last step (after the timing): for the layer-wise Gramian, the objectives
    per pass and the layers in activation form."""
    if isinstance(strategy, LayerwiseGramian):
        per = strategy.last_per_pass
        passes = (
            "one batched pass" if per >= k else "one pass per objective" if per == 1 else f"{per} per pass"
        )
        act = strategy.last_activation
        counts = {n: act.count(n) for n in dict.fromkeys(act)}
        form = ", ".join(f"{n}×{c}" for n, c in counts.items()) if act else "none"
        return f"gramian: {passes}; activation form: {form}"
    return str(getattr(strategy, "name", type(strategy).__name__))


# ---------------------------------------------------------------------------------------------- report
def _mb(x: float) -> str:
    return "–" if math.isnan(x) else f"{x / 1e6:.2f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def report(
    rows: list[dict[str, Any]],
    descs: dict[str, str],
    chosen: dict[tuple[str, int], dict[str, str]],
    info: dict[str, Any],
    cmd: str,
    mem: PeakMemory,
    calib: float,
) -> str:
    cuda = info["device"].startswith("cuda")
    parts = [
        "# Whole training step: molearn's default mode and engine strategies vs EW and TorchJD autogram",
        "",
        f"Command: `{cmd}`",
        "",
        machine_block(info),
        "",
        "Models (K linear heads on the trunk's features, K mean-squared-error losses on random targets, "
        "SGD): " + "; ".join(f"**{k}**: {v}" for k, v in descs.items()) + ".",
        "",
        "Variants, all on the same fixed batch, timed round-robin (median over the repetitions); each ends "
        "with `optimizer.zero_grad(set_to_none=True)`:",
        "",
        "- `EW`: forward, `losses.sum().backward()`, `optimizer.step()`.",
        "- `grads/loop`, `grads/batched`: forward and the K per-objective gradients of the trunk only "
        "(`jacobian_loop`: K backward passes; `jacobian_batched`: one batched pass). The faster of the two, "
        "repetition by repetition, is the **floor** of the overhead.",
        "- `<method>/auto`: forward, `Balancer(<method>, shared=trunk, tasks=heads).backward(losses)` in the "
        "default mode (what `auto` chose is listed below), `optimizer.step()`. `EW`, `RLW`, `UW` are "
        "loss-only methods.",
        "- `unit/<strategy>`: the same with a Gramian method that returns unit weights without solving "
        "anything (defined in this script): the engine's own cost. `MGDA/<strategy>`: with MGDA. "
        "Strategies: `loop`, `batched` (K×P Jacobian), `gramian` (layer-wise Gramian, one objective per "
        "pass), `gramian-batched` (layer-wise Gramian, all K objectives in one batched pass), "
        "`representation` (MGDA-UB, a different method: w.r.t. the features).",
        "- `TorchJD <w>`: forward, `Engine(trunk, batch_dim=None).compute_gramian(losses)`, "
        "`losses.backward(<w>Weighting()(gramian))`, `optimizer.step()` (on a copy of the model: the engine "
        "hooks its modules). TorchJD's heads get w_i∇L_i, molearn's gradient methods give them ∇L_i.",
        "",
        "Times are medians on the clock named above (`process`: CPU time of the process, one torch thread: "
        "waiting for a core is not counted). Ratios (`× EW`, `overhead`, `× TorchJD`) are medians over the "
        "repetitions of the ratio of the two variants' times in the same round-robin repetition. "
        "`overhead` = step time / floor − 1: what the step costs above the forward and the K per-objective "
        "gradients (it can be negative: the layer-wise Gramian never computes the K weight gradients of "
        "its activation-form layers).",
        "",
        "Peak memory: "
        + (
            "`torch.cuda.max_memory_allocated() − memory_allocated()` before the step."
            if cuda
            else (
                f"{mem.kind}; the process's peak RSS during one step above its RSS before it, measured in a "
                "separate call with glibc told to `mmap` every allocation above 64 KiB and to return freed "
                "memory at once (see `_common.PeakMemory`). Calibration on tensors of known size: "
                f"measured/true = {calib:.3f}. Peaks of a few MB vary by some ±30% between variants that "
                "allocate the same tensors (heap pages)."
            )
        ),
        "",
    ]
    if not cuda:
        parts += [
            "The CPUs are shared with other jobs running at the same time: absolute times are noisy, the "
            "ratios are measured in one interleaved run; with few repetitions an overhead within about "
            "±10% of 0 is not resolved.",
            "",
        ]
    parts += ["## What `auto` chose", ""]
    table = []
    for (m, k), d in chosen.items():
        by_choice: dict[str, list[str]] = {}
        for meth, desc in d.items():
            by_choice.setdefault(desc, []).append(meth)
        table += [[m, k, ", ".join(meths), desc] for desc, meths in by_choice.items()]
    parts += [markdown_table(["model", "K", "methods", "strategy"], table), ""]
    headers = ["K", "variant", "time", "× EW", "overhead", "× TorchJD", "peak MB", "peak × EW", "reps"]
    for model in descs:
        parts += [f"## {model}", ""]
        table = []
        for r in rows:
            if r["model"] != model:
                continue
            table.append(
                [
                    r["K"],
                    r["variant"],
                    fmt_time(r["time_s"]),
                    f"{r['time_vs_ew']:.2f}",
                    _pct(r.get("overhead_vs_grads")),
                    f"{r['time_vs_torchjd']:.2f}" if "time_vs_torchjd" in r else "–",
                    _mb(r["peak_bytes"]),
                    "–" if math.isnan(r["peak_vs_ew"]) else f"{r['peak_vs_ew']:.2f}",
                    r["reps"],
                ]
            )
        parts += [markdown_table(headers, table), ""]
    parts += ["## Targets (default mode)", ""]
    targets = []
    for r in rows:
        if r.get("mode") != "auto":
            continue
        if "time_vs_torchjd" in r:
            ok = r["time_vs_torchjd"] <= TORCHJD_TIME_TARGET
            targets.append(
                [
                    f"time ≤ {TORCHJD_TIME_TARGET}× TorchJD",
                    r["model"],
                    r["K"],
                    r["method"],
                    f"{r['time_vs_torchjd']:.2f}×",
                    "met" if ok else "not met",
                ]
            )
            pk = r["peak_vs_torchjd"]
            ok = pk <= TORCHJD_MEMORY_TARGET
            targets.append(
                [
                    f"peak ≤ {TORCHJD_MEMORY_TARGET}× TorchJD",
                    r["model"],
                    r["K"],
                    r["method"],
                    f"{pk:.2f}×",
                    "not measured" if math.isnan(pk) else "met" if ok else "not met",
                ]
            )
        if r["kind"] == "step" and r["method"] in ("unit", "MGDA", "UPGrad"):
            ov = r["overhead_vs_grads"]
            targets.append(
                [
                    f"overhead ≤ {100 * OVERHEAD_TARGET:.0f}% above the K gradients",
                    r["model"],
                    r["K"],
                    r["method"],
                    _pct(ov),
                    "met" if ov <= OVERHEAD_TARGET else "not met",
                ]
            )
        if r["kind"] == "loss-only":
            ok = r["time_vs_ew"] <= LOSS_ONLY_TARGET
            targets.append(
                [
                    f"loss-only ≤ {LOSS_ONLY_TARGET}× EW",
                    r["model"],
                    r["K"],
                    r["method"],
                    f"{r['time_vs_ew']:.2f}×",
                    "met" if ok else "not met",
                ]
            )
    parts += [markdown_table(["target", "model", "K", "method", "value", "status"], targets), ""]
    if NOTES:
        parts += ["Notes: " + "; ".join(sorted(NOTES)) + ".", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--models",
        nargs="+",
        default=["mlp", "conv"],
        help=f"comma- or space-separated, from {', '.join(MODELS)}",
    )
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 10, 40])
    ap.add_argument("--reduced", action="store_true", help="CPU-sized wide-mlp and resnet18")
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
    ap.add_argument("--name", default="step", help="output files <out>/<name>.{md,csv,json}")
    ap.add_argument(
        "--quick", action="store_true", help="tiniest setting (tiny models, K=2, 1 rep): smoke test"
    )
    args = ap.parse_args(argv)
    models = [m for part in args.models for m in part.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
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
    chosen: dict[tuple[str, int], dict[str, str]] = {}
    for name in models:
        for k in args.ks:
            r, descs[name], chosen[(name, k)] = bench_problem(name, k, args, mem)
            rows += r
            synchronize(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"{args.name}.csv", rows)
    payload = {"machine": info, "command": cmd, "memory_method": mem.kind, "calibration": calib, "rows": rows}
    payload["auto"] = [{"model": m, "K": k, **d} for (m, k), d in chosen.items()]
    write_json(args.out / f"{args.name}.json", payload)
    (args.out / f"{args.name}.md").write_text(report(rows, descs, chosen, info, cmd, mem, calib))
    print(f"wrote {args.out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
