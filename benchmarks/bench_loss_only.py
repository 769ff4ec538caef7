"""Loss-only methods through ``Balancer`` against plain equal weighting, nothing else in the process.

Issue 13's target: a loss-only method (EW, RLW, UW, ...) costs at most 1.05× a plain
``losses.sum().backward()`` step. ``bench_step.py`` measures these rows among some twenty heavy variants with
few repetitions at K = 40, where a 25 ms step sits between 500 ms ones; this script times only the light
variants, interleaved, with many repetitions, on the models of ``bench_step.py`` (each variant on its own copy
of the model). Run ``python benchmarks/bench_loss_only.py --help``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step as bs
from _common import (
    RESULTS_DIR,
    command_line,
    interleaved_times,
    machine_block,
    machine_info,
    markdown_table,
    median,
    paired_ratio,
    write_csv,
)
from molearn.methods import get

# FAMO is left out: its update needs the post-step losses of `Balancer.step` (one more forward)
METHODS = ("ew", "rlw", "uw", "dwa")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,conv,resnet18", help="comma-separated, from bench_step.py")
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 40])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reduced", action="store_true", help="CPU-sized wide-mlp and resnet18")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--quick", action="store_true", help="tiny models, K = 2, 3 repetitions")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    clock = "process" if args.device == "cpu" else "wall"
    ks = [2] if args.quick else args.ks
    reps = 3 if args.quick else args.reps
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        for k in ks:
            model, x, y, _ = bs.make_problem(name, k, args)
            fns = {"EW (plain)": bs._ew_step(model, x, y, bs._sgd(model))}
            for method in METHODS:
                m = copy.deepcopy(model)
                fns[f"{method}/auto"] = bs._molearn_step(m, x, y, bs._sgd(m), get(method), "auto")[0]
            times = interleaved_times(
                fns, device=args.device, min_reps=reps, max_reps=reps, budget_s=0.0, clock=clock
            )
            for key, ts in times.items():
                ratio = paired_ratio(ts, times["EW (plain)"])
                rows.append({"model": name, "K": k, "variant": key, "time_s": median(ts), "vs_ew": ratio})
                line = f"{name:>8} K={k:<3} {key:<12} {median(ts) * 1e3:8.2f} ms  ×EW {ratio:5.3f}"
                print(line, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "loss_only.csv", rows)
    table = markdown_table(
        ["model", "K", "variant", "time", "× plain EW", "target ≤ 1.05×"],
        [
            [r["model"], r["K"], r["variant"], f"{r['time_s'] * 1e3:.2f} ms", f"{r['vs_ew']:.3f}",
             "–" if r["variant"] == "EW (plain)" else ("met" if r["vs_ew"] <= 1.05 else "not met")]
            for r in rows
        ],
    )
    text = (
        "# Loss-only methods through `Balancer` vs a plain EW step\n\n"
        f"Command: `{command_line()}`\n\n{machine_block(machine_info(args.device))}\n\n"
        f"{reps} interleaved repetitions (order rotated each time) on the `{clock}` clock, one torch thread; "
        "`× plain EW`: median over the repetitions of the paired ratio. A step is forward, the update into "
        "`.grad`, `optimizer.step()`, `zero_grad`. Models as in `bench_step.py`"
        f"{' (reduced sizes)' if args.reduced else ''}.\n\n{table}\n"
    )
    (args.out / "loss_only.md").write_text(text)
    print(f"wrote {args.out / 'loss_only.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
