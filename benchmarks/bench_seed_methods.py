"""Per-step cost of the seed papers' methods (MoCo, MoDo, SDMGrad, FairGrad, SAMO, ...) vs equal weighting.

One step = one ``Balancer(method, ...).step(loss_fn, draw, optimizer)`` with SGD: the method draws as
many batches as it needs from a pre-built list (cycled by a callable, so data loading costs nothing),
computes its update, and the optimiser steps. For each model (the MLP trunk and the small conv trunk
with BatchNorm of ``bench_step.py``, K linear heads) and each K, every variant is timed round-robin
(medians, ratios to EW paired per repetition); then its peak memory above what is held between steps is
measured, the forward and backward passes through the trunk are counted with hooks, and the bytes of
tensors in ``method.state_dict()`` are summed. Run ``python benchmarks/bench_seed_methods.py --help``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    machine_block,
    machine_info,
    markdown_table,
    median,
    paired_ratio,
    synchronize,
    write_csv,
    write_json,
)
from bench_step import MultiHead, convnet, mlp
from molearn.methods import MGDA, SAMO, FairGrad, LogLosses, Method, MoCo, MoDo, SDMGrad, SDMGradOS

Batch = tuple[Tensor, Tensor]
NUM_BATCHES = 6  # pre-built batches per size (a multiple of 1, 2 and 3 batches per step)


# ---------------------------------------------------------------------------------------------- variants
def _os_expected(k: int, n: int) -> float:
    """E|S| for SDMGradOS: each objective drawn with p = min(n/K, 1), redrawn while none is (so
    E|S| = Kp / (1 - (1-p)^K))."""
    p = min(n / k, 1.0)
    return k * p / (1.0 - (1.0 - p) ** k)


@dataclass
class Variant:
    """One row of the cost table: how to build the method, and the passes through the trunk it should
    make per step (forward, backward) as a function of K."""

    key: str
    make: Callable[[int, str], Method] | None  # (K, device) -> method; None: the plain-torch EW step
    forward: Callable[[int], float]
    backward: Callable[[int], float]
    cost: str  # the cost table's entry, as text
    half: bool = False  # draw half-size batches (MoDo "two", as its official code)
    sample_n: int = 0  # objective sampling (SDMGradOS): n, the expected number of objectives per step


def _one(k: int) -> float:
    return 1.0


def variants(k: int) -> list[Variant]:
    def os_variant(n: int, label: str) -> Variant:
        return Variant(
            f"SDMGradOS (n={label})",
            lambda k, dev, n=n: SDMGradOS(n=n, generator=torch.Generator().manual_seed(0)),
            _one,
            lambda k, n=n: _os_expected(k, n),
            f"1 F / ≈{label} B (E|S|)",
            sample_n=n,
        )

    out = [
        Variant("EW", None, _one, _one, "1 F / 1 B"),
        Variant("MGDA", lambda k, dev: MGDA(), _one, float, "1 F / K B"),
        Variant("FairGrad (newton)", lambda k, dev: FairGrad(), _one, float, "1 F / K B"),
        Variant("FairGrad (sgd)", lambda k, dev: FairGrad(solver="sgd"), _one, float, "1 F / K B"),
        Variant(
            "LogLosses(mgda)", lambda k, dev: LogLosses("mgda", sum_to_one=True), _one, float, "1 F / K B"
        ),
        Variant("MoCo (libmtl)", lambda k, dev: MoCo(), _one, float, "1 F / K B"),
        Variant("MoDo (three)", lambda k, dev: MoDo(), lambda k: 3.0, lambda k: 3.0 * k, "3 F / 3K B"),
        Variant(
            "MoDo (two, half batches)",
            lambda k, dev: MoDo(variant="two"),
            lambda k: 2.0,
            lambda k: 2.0 * k,
            "2 F / 2K B (half batches)",
            half=True,
        ),
        Variant(
            "SDMGrad (batches=3)",
            lambda k, dev: SDMGrad(batches=3),
            lambda k: 3.0,
            lambda k: 3.0 * k,
            "3 F / 3K B",
        ),
        Variant("SDMGrad (batches=1)", lambda k, dev: SDMGrad(batches=1), _one, float, "1 F / K B"),
        os_variant(4, "4"),
    ]
    if k >= 8:
        out.append(os_variant(k // 2, "K/2"))
    out.append(
        Variant(
            "SAMO (FairGrad α=2)",
            lambda k, dev: SAMO(generator=torch.Generator(device=dev).manual_seed(0)),
            lambda k: 3.0 * k + 1,
            lambda k: k + 1.0,
            "3K+1 F / K+1 B",
        )
    )
    return out


# ---------------------------------------------------------------------------------------------- problem
def make_problem(
    name: str, k: int, quick: bool, device: str
) -> tuple[MultiHead, list[Batch], list[Batch], str, int]:
    """The model, ``NUM_BATCHES`` full-size and as many half-size batches, a description, and the number
    of shared (trunk) parameters P."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        d_in, hidden, layers, batch = (8, 16, 2, 8) if quick else (64, 256, 3, 128)
        model = mlp(k, d_in, hidden, layers)
        shape: tuple[int, ...] = (d_in,)
        desc = f"MLP {d_in}→{hidden}×{layers} (ReLU), batch {batch}"
    else:
        channels, layers, side, batch = (4, 2, 8, 4) if quick else (32, 3, 32, 32)
        model = convnet(k, channels, layers)
        shape = (3, side, side)
        desc = f"conv {layers}×{channels} ch. (3×3, BatchNorm, ReLU; stride 1,2,2), {side}×{side} inputs"
        desc += f", batch {batch}"

    def batches(size: int) -> list[Batch]:
        out = []
        for _ in range(NUM_BATCHES):
            x = torch.randn(size, *shape, generator=gen)
            y = torch.randn(size, k, generator=gen)
            out.append((x.to(device), y.to(device)))
        return out

    p = sum(q.numel() for q in model.trunk.parameters())
    desc += f" (half batches {batch // 2}); trunk P = {p:,}"
    return model.to(device), batches(batch), batches(batch // 2), desc, p


def _cycler(batches: list[Batch]) -> Callable[[], Batch]:
    it = itertools.cycle(batches)
    return lambda: next(it)


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-4)


def _ew_step(model: MultiHead, draw: Callable[[], Batch], opt: torch.optim.Optimizer) -> Callable[[], None]:
    # zero_grad first, as Balancer.step does: both hold the previous step's .grad between steps
    def fn() -> None:
        opt.zero_grad(set_to_none=True)
        x, y = draw()
        losses, _ = model.losses(x, y)
        losses.sum().backward()
        opt.step()

    return fn


def _balancer_step(
    model: MultiHead, method: Method, draw: Callable[[], Batch], opt: torch.optim.Optimizer
) -> Callable[[], None]:
    # mode="loop": one backward pass per objective, so that the hook on the trunk's output counts the K
    # passes of the cost table (auto batches them into one pass on a dense trunk)
    bal = molearn.Balancer(
        method, shared=model.trunk.parameters(), tasks=model.heads.parameters(), module=model, mode="loop"
    )

    def loss_fn(batch: Batch) -> Tensor:
        return model.losses(*batch)[0]

    def fn() -> None:
        bal.step(loss_fn, draw, opt)

    return fn


# ---------------------------------------------------------------------------------------------- counting
class PassCounter:
    """Counts forward passes of the trunk (a forward hook) and backward passes through it (a hook on
    the trunk's output tensor, called once each time autograd computes the gradient w.r.t. it)."""

    def __init__(self, trunk: nn.Module) -> None:
        self.trunk = trunk
        self.forward = 0
        self.backward = 0
        self._handle: Any = None

    def _on_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.forward += 1
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(self._on_backward)

    def _on_backward(self, grad: Tensor) -> None:
        self.backward += 1

    def __enter__(self) -> PassCounter:
        self._handle = self.trunk.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a (nested) state dict."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


# ---------------------------------------------------------------------------------------------- bench
def bench_problem(
    name: str, k: int, args: argparse.Namespace, mem: PeakMemory
) -> tuple[list[dict[str, Any]], str, int]:
    model, full, half, desc, p = make_problem(name, k, args.quick, args.device)
    steps: dict[str, Callable[[], None]] = {}
    methods: dict[str, Method | None] = {}
    chosen = [v for v in variants(k) if v.key == "EW" or not args.variants or v.key in args.variants]
    for v in chosen:
        draw = _cycler(half if v.half else full)
        opt = _sgd(model)
        if v.make is None:
            steps[v.key] = _ew_step(model, draw, opt)
            methods[v.key] = None
        else:
            method = v.make(k, args.device)
            steps[v.key] = _balancer_step(model, method, draw, opt)
            methods[v.key] = method
    # one warm-up call each (creates the methods' state), then the timing, round-robin
    for fn in steps.values():
        fn()
    times = interleaved_times(
        steps,
        device=args.device,
        warmup=1,
        min_reps=args.min_reps,
        max_reps=args.max_reps,
        budget_s=args.budget,
        clock=args.clock,
    )
    rows = []
    for v in chosen:
        fn = steps[v.key]
        peak = mem.measure(fn)
        n_count = args.count_steps_random if v.sample_n else args.count_steps
        with PassCounter(model.trunk) as counter:
            for _ in range(n_count):
                fn()
        synchronize(args.device)
        method = methods[v.key]
        state = 0 if method is None else tensor_bytes(method.state_dict())
        fwd, bwd = counter.forward / n_count, counter.backward / n_count
        exp_f, exp_b = v.forward(k), v.backward(k)
        if v.sample_n:
            # |S| ~ Binomial(K, p) conditioned on |S| > 0: allow 4 standard errors of the mean
            pr = min(v.sample_n / k, 1.0)
            tol = 4.0 * math.sqrt(k * pr * (1 - pr) / n_count) + 1e-9
            ok = fwd == exp_f and abs(bwd - exp_b) <= tol
        else:
            ok = fwd == exp_f and bwd == exp_b
        row: dict[str, Any] = {
            "model": name,
            "K": k,
            "variant": v.key,
            "time_s": median(times[v.key]),
            "time_vs_ew": paired_ratio(times[v.key], times["EW"]),
            "reps": len(times[v.key]),
            "peak_bytes": peak,
            "forward_passes": fwd,
            "backward_passes": bwd,
            "expected_forward": exp_f,
            "expected_backward": exp_b,
            "cost_table": v.cost,
            "passes_match": "yes" if ok else "no",
            "count_steps": n_count,
            "state_bytes": state,
            "state_per_trunk": state / (p * next(model.trunk.parameters()).element_size()),
            "trunk_params": p,
            "times_s": times[v.key],
        }
        rows.append(row)
    ew_peak = rows[0]["peak_bytes"]
    for r in rows:
        r["peak_vs_ew"] = r["peak_bytes"] / ew_peak if ew_peak > 0 else float("nan")
        print(
            f"{name:>4} K={k:<3} {r['variant']:<26} {fmt_time(r['time_s']):>10}  ×EW {r['time_vs_ew']:6.2f}"
            f"  peak {r['peak_bytes'] / 1e6:8.2f} MB ×EW {r['peak_vs_ew']:5.2f}"
            f"  F {r['forward_passes']:5.1f} B {r['backward_passes']:5.1f} ({r['passes_match']})"
            f"  state {r['state_bytes']:,} B",
            flush=True,
        )
    return rows, desc, p


# ---------------------------------------------------------------------------------------------- report
def _passes(x: float) -> str:
    return f"{x:.0f}" if x == int(x) else f"{x:.2f}"


def report(
    rows: list[dict[str, Any]],
    descs: dict[str, str],
    info: dict[str, Any],
    cmd: str,
    mem: PeakMemory,
    calib: float,
    wall_s: float,
) -> str:
    cpu = not info["device"].startswith("cuda")
    parts = [
        "# Per-step cost of the seed papers' methods through `Balancer.step` vs equal weighting",
        "",
        f"Command: `{cmd}` (wall time {wall_s:.0f} s)",
        "",
        machine_block(info),
        "",
        "Models (the trunks of `bench_step.py`; K heads = the rows of one `Linear(width, K)`, K "
        "mean-squared-error losses on random targets, SGD lr 1e-4): "
        + "; ".join(f"**{k}**: {v}" for k, v in descs.items())
        + ".",
        "",
        "Each variant is one full training step. `EW`: `optimizer.zero_grad(set_to_none=True)`, forward, "
        "`losses.sum().backward()`, `optimizer.step()` (plain torch). The others: "
        "`Balancer(method, shared=trunk, tasks=heads, module=model).step(loss_fn, draw, optimizer)` with "
        "the Balancer's defaults (mode `auto` = `loop`: one backward pass per objective), which zeroes "
        "the gradients, draws as many batches as the method needs, writes the update and steps the "
        "optimiser. `draw` cycles through 6 pre-built batches (data loading costs nothing); MoDo `two` "
        "draws half-size batches, as in its official code. Methods with their molearn defaults: "
        '`FairGrad()` (α = 2, damped Newton) / `FairGrad(solver="sgd")` (the Meta-World solver); '
        '`LogLosses("mgda", sum_to_one=True)` (official log-MGDA); `MoCo()` (`libmtl` variant, '
        'K×P tracking matrix); `MoDo()` (3 batches) / `MoDo(variant="two")`; `SDMGrad(batches=3)` '
        "(LibMTL) / `SDMGrad(batches=1)` (NYUv2 code), 20 inner SGD steps; `SDMGradOS(n)` (objective "
        "sampling, p = min(n/K, 1)); `SAMO()` (FairGrad α = 2, ρ 0.001, β 0.5).",
        "",
        "Times are medians over repetitions timed round-robin after warm-up on the clock named above "
        "(`process`: CPU time of the process with one torch thread; waiting for a core is not counted). "
        "`× EW` is the median over the repetitions of the ratio to EW's time in the same repetition.",
        "",
        f"Peak memory ({mem.kind}): the peak during one step above the memory held before it "
        "(parameters, batches, the previous step's `.grad`, the method's state), one separate call. "
        + (
            "On the CPU: the process's peak RSS (`VmHWM`) minus its RSS before the step, with glibc told "
            "to `mmap` every allocation above 64 KiB and to return freed memory at once (see "
            f"`bench_step.py`); calibration measured/true = {calib:.3f}. Peaks of a few MB (the MLP) "
            "vary by some ±30% between variants that allocate the same tensors."
            if cpu
            else ""
        ),
        "",
        "Passes per step, counted over separate steps after the timing: **F** = forward passes of the "
        "trunk (a forward hook), **B** = backward passes through the trunk (a hook on the trunk's output "
        "tensor, called each time autograd computes its gradient; a backward into the heads only does "
        "not count). `cost table` is what the methods' docstrings state; `match` compares it with the "
        "count (SDMGradOS: |S| is random, the mean over its counted steps is compared with "
        "E|S| = Kp/(1−(1−p)^K) within 4 standard errors). **state** = bytes of the tensors in "
        "`method.state_dict()` after the steps (RNG states included: 5,056 B for a CPU generator); "
        "`÷ P` = in units of the trunk's parameter vector (MoCo's Y is K×P).",
        "",
    ]
    headers = ["K", "variant", "time", "× EW", "peak MB", "peak × EW", "F", "B", "cost table", "match"]
    headers += ["state B", "÷ P", "reps"]
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
                    "–" if math.isnan(r["peak_bytes"]) else f"{r['peak_bytes'] / 1e6:.2f}",
                    "–" if math.isnan(r["peak_vs_ew"]) else f"{r['peak_vs_ew']:.2f}",
                    _passes(r["forward_passes"]),
                    _passes(r["backward_passes"]),
                    r["cost_table"],
                    r["passes_match"],
                    f"{r['state_bytes']:,}",
                    f"{r['state_per_trunk']:.2g}",
                    r["reps"],
                ]
            )
        parts += [markdown_table(headers, table), ""]
    bad = [f"{r['model']} K={r['K']} {r['variant']}" for r in rows if r["passes_match"] != "yes"]
    parts += [
        "Passes vs cost table: "
        + ("all counts match." if not bad else "mismatch for " + ", ".join(bad) + "."),
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    import time

    start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--variants", nargs="+", default=None, help="keys of the variants to run (EW always)")
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--max-reps", type=int, default=30)
    ap.add_argument(
        "--budget", type=float, default=40.0, help="seconds of timing per (model, K), all variants"
    )
    ap.add_argument("--count-steps", type=int, default=2, help="steps over which passes are counted")
    ap.add_argument(
        "--count-steps-random", type=int, default=20, help="the same for objective sampling (SDMGradOS)"
    )
    ap.add_argument(
        "--clock",
        choices=["auto", "wall", "process"],
        default="auto",
        help="process: CPU time of this process (auto on the CPU with 1 thread); wall: perf_counter",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on the CPU")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--quick", action="store_true", help="tiniest setting (tiny MLP, K=4, 1 rep): smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.ks, args.min_reps, args.max_reps, args.budget = ["mlp"], [4], 1, 1, 0.0
        args.count_steps, args.count_steps_random = 1, 4
    torch.set_num_threads(args.threads)
    if args.clock == "auto":
        args.clock = default_clock(args.device, args.threads)
    info = {**machine_info(args.device), "clock": args.clock}
    cmd = command_line() if argv is None else "python benchmarks/bench_seed_methods.py " + " ".join(argv)
    mem = PeakMemory(args.device)
    calib = mem.calibrate(8 if args.quick else 64) if mem.available else float("nan")
    rows: list[dict[str, Any]] = []
    descs: dict[str, str] = {}
    for name in args.models:
        for k in args.ks:
            r, descs[name], _ = bench_problem(name, k, args, mem)
            rows += r
    wall = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "seed_methods.csv", [{k: v for k, v in r.items() if k != "times_s"} for r in rows])
    payload = {
        "machine": info,
        "command": cmd,
        "wall_s": wall,
        "memory_method": mem.kind,
        "calibration": calib,
        "rows": rows,
    }
    write_json(args.out / "seed_methods.json", payload)
    (args.out / "seed_methods.md").write_text(report(rows, descs, info, cmd, mem, calib, wall))
    print(f"wrote {args.out / 'seed_methods.md'} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
