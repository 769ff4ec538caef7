"""MIMO's per-step subroutine against MGDA-type solvers on the same Gramians (the paper's "up to ~20×").

MIMO (reconstructed, ``molearn.multimodal.MIMO``) turns the losses into weights with one softmax over the M
uni-modal losses; MGDA (exact QP and the official Frank-Wolfe), CAGrad, Nash-MTL and FairGrad solve a
problem on the K×K Gramian of the per-objective gradients. Every method's ``combine`` is called
round-robin on the same pool of inputs: Gramians of ``[L_fused, L_1..L_M]`` of a late-fusion MLP on the
two-Gaussian toy (M = 2, real per-objective gradients) and random rank-deficient Gramians for M = 4, 8.
The table also gives the cost of forming the Gramian itself (K backward passes on the toy model), which
MIMO does not need either. Run ``python benchmarks/bench_mimo.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from _common import (
    RESULTS_DIR,
    command_line,
    default_clock,
    fmt_time,
    interleaved_times,
    machine_block,
    machine_info,
    markdown_table,
    median,
    paired_ratio,
    write_csv,
)
from molearn.methods import Inputs, Method, get
from molearn.multimodal import MIMO, LateFusion, objectives, two_gaussian_modalities

SOLVERS: dict[str, Callable[[], Method]] = {
    "MIMO": lambda: MIMO(),
    "MGDA (exact QP)": lambda: get("mgda"),
    "MGDA (Frank-Wolfe)": lambda: get("mgda", solver="frank_wolfe"),
    "CAGrad": lambda: get("cagrad"),
    "Nash-MTL": lambda: get("nashmtl"),
    "FairGrad": lambda: get("fairgrad"),
}


def toy_pool(n: int, seed: int = 0) -> tuple[list[Inputs], Callable[[], Any], Callable[[], Any]]:
    """Inputs (losses, Gramian) of ``n`` toy batches, plus closures timing one backward of the summed loss
    and the K backward passes that form the Gramian."""
    torch.manual_seed(seed)
    enc = {m: nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU()) for m in ("a", "b")}
    model = LateFusion(enc, {"a": 32, "b": 32}, 4)
    shared = model.shared_parameters()
    pool = []
    batches = []
    for i in range(n):
        x, y = two_gaussian_modalities(128, seed=seed + i, names=("a", "b"))
        batches.append((x, y))
        losses, _ = objectives(model, x, y)
        rows = []
        for k in range(losses.shape[0]):
            g = torch.autograd.grad(losses[k], shared, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (gi if gi is not None else torch.zeros_like(p)).flatten()
                        for gi, p in zip(g, shared, strict=True)
                    ]
                )
            )
        jac = torch.stack(rows)
        pool.append(Inputs(losses=losses.detach(), gramian=jac @ jac.T))
    x, y = batches[0]

    def one_backward() -> None:
        losses, _ = objectives(model, x, y)
        torch.autograd.grad(losses.sum(), shared, allow_unused=True)

    def gramian() -> None:
        losses, _ = objectives(model, x, y)
        rows = []
        for k in range(losses.shape[0]):
            g = torch.autograd.grad(losses[k], shared, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (gi if gi is not None else torch.zeros_like(p)).flatten()
                        for gi, p in zip(g, shared, strict=True)
                    ]
                )
            )
        jac = torch.stack(rows)
        _ = jac @ jac.T

    return pool, one_backward, gramian


def random_pool(k: int, n: int, p: int = 500, seed: int = 0) -> list[Inputs]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        base = torch.randn(k, p, generator=g)
        jac = base + 0.5 * torch.randn(1, p, generator=g)  # correlated rows, as for shared encoders
        out.append(Inputs(losses=torch.rand(k, generator=g) + 0.1, gramian=jac @ jac.T))
    return out


def run(quick: bool) -> tuple[list[dict[str, Any]], str]:
    torch.set_num_threads(1)
    clock = default_clock("cpu", 1)
    n_pool = 4 if quick else 16
    budget = 0.3 if quick else 3.0
    rows: list[dict[str, Any]] = []
    toy, one_bwd, gram = toy_pool(n_pool)
    pools = {"toy late fusion (M=2)": toy}
    for m in (4,) if quick else (4, 8):
        pools[f"random Gramians (M={m})"] = random_pool(m + 1, n_pool, seed=m)
    for pool_name, pool in pools.items():
        methods = {name: make() for name, make in SOLVERS.items()}
        counter = {name: 0 for name in methods}

        def call(
            name: str,
            methods: dict[str, Method] = methods,
            pool: list[Inputs] = pool,
            counter: dict[str, int] = counter,
        ) -> None:
            i = counter[name] % len(pool)
            counter[name] += 1
            methods[name].combine(pool[i])

        fns = {name: (lambda name=name: call(name)) for name in methods}
        times = interleaved_times(fns, budget_s=budget, max_reps=2000, min_reps=20, clock=clock)
        for name in methods:
            rows.append(
                {
                    "problem": pool_name,
                    "K": int(pool[0].losses.shape[0]),
                    "method": name,
                    "median_s": median(times[name]),
                    "ratio_vs_mimo": paired_ratio(times[name], times["MIMO"]),
                    "reps": len(times[name]),
                }
            )
    gt = interleaved_times(
        {"1 backward (sum)": one_bwd, "Gramian (K backward)": gram},
        budget_s=budget,
        min_reps=10,
        max_reps=500,
        clock=clock,
    )
    extra = {
        "one_backward_s": median(gt["1 backward (sum)"]),
        "gramian_s": median(gt["Gramian (K backward)"]),
        "gramian_over_backward": paired_ratio(gt["Gramian (K backward)"], gt["1 backward (sum)"]),
    }
    table = markdown_table(
        ["problem", "K", "method", "median time / call", "× MIMO (paired median)"],
        [
            [r["problem"], r["K"], r["method"], fmt_time(r["median_s"]), f"{r['ratio_vs_mimo']:.1f}×"]
            for r in rows
        ],
    )
    info = machine_info("cpu")
    info["clock"] = clock
    md = "\n".join(
        [
            "# MIMO's weight subroutine vs MGDA-type solvers",
            "",
            "Time of `Method.combine` (losses + Gramian → weights) on the same inputs, called round-robin; "
            "MIMO (molearn's reconstruction: a softmax over the uni-modal losses) needs no Gramian. "
            "The paper (arXiv 2511.06686) reports up to ~20× less subroutine time than "
            "balanced-MML/MOO baselines.",
            "",
            table,
            "",
            "Forming the Gramian on the toy model (what the MGDA-type methods need and MIMO does not): "
            f"{fmt_time(extra['gramian_s'])} vs one backward of the summed loss "
            f"{fmt_time(extra['one_backward_s'])} "
            f"({extra['gramian_over_backward']:.1f}×).",
            "",
            f"Command: `{command_line()}`",
            "",
            machine_block(info),
            "",
        ]
    )
    rows.append(
        {
            "problem": "toy late fusion (M=2)",
            "K": 3,
            "method": "(Gramian, K backward)",
            "median_s": extra["gramian_s"],
            "ratio_vs_mimo": float("nan"),
            "reps": len(gt["1 backward (sum)"]),
        }
    )
    return rows, md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few seconds, no files written")
    args = p.parse_args(argv)
    rows, md = run(args.quick)
    print(md)
    if not args.quick:
        write_csv(RESULTS_DIR / "mimo.csv", rows)
        (RESULTS_DIR / "mimo.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
