"""Communication and step time of molearn's data parallelism against plain DDP with equal weighting
(issue 16).

For W = 2 and 4 processes (gloo on the CPU; ``--device cuda`` uses NCCL, one GPU per rank) and K = 3, 10, 40,
each variant trains its own copy of one model (an MLP trunk with K linear heads) wrapped in
``DistributedDataParallel``, every rank on its own batch:

* ``DDP EW``: the reference, ``sum(losses).backward()`` through the DDP model (DDP's own bucketed all-reduce);
* molearn through ``Balancer(method, shared=trunk, module=ddp)`` (``balancer.backward(losses)``):
  EW and UW with the finite check on (default) and off (``check_finite=False``: the write is one backward
  through the DDP model, averaged by DDP's hooks), MGDA, UPGrad and PCGrad (Gramian methods, ``mode="auto"``:
  the layer-wise Gramian, each layer in the form the byte rule of docs/distributed.md picks) and GradDrop
  (reads the Jacobian: one all-reduce of the K×P Jacobian);
* the two schemes of the Gramian methods side by side: ``MGDA (gradient scheme)`` (``mode="loop"``: every
  parameter's gradient rows through the Jacobian scheme) and ``MGDA (per-layer)``
  (``activation_form="always"``: every Linear layer gathers its inputs and output-gradients), at ``--batch``
  4 and 32 samples per rank.

Bytes per step and rank, three ways:

* **given**: the bytes handed to collectives: ``balancer.collective.log`` (molearn's) plus what DDP's comm
  hook was given (counted by a hook on a separate copy of each variant, so that the timed models keep DDP's
  built-in all-reduce). DDP's hooks run only when a ``backward`` accumulates into ``.grad`` through the DDP
  model: in ``DDP EW`` and in the loss-only variants with the finite check off; molearn's per-objective passes
  and staged writes use ``torch.autograd.grad`` and do not fire them. The reference gives DDP ``4·P`` bytes.
* **sent (measured)**: on the CPU, the bytes sent through the loopback interface (``/proc/net/dev``, ``lo``)
  during a few steps of the variant alone, divided by the steps and W, minus the same count around no step
  (the barriers). This is what gloo really moved, TCP/IP headers included.
* **sent (ring model)**: what a ring implementation sends per rank: ``2n(W-1)/W`` for an all-reduce of ``n``
  bytes, ``n(W-1)/W`` for a reduce-scatter of ``n`` bytes, ``n(W-1)`` for an all-gather of ``n``-byte pieces
  (NCCL's algorithms on one ring; gloo's ``reduce_scatter`` is an all-reduce, see the results' notes).

Time: all variants of one (batch, W, K) run interleaved in one process group (one
``torch.multiprocessing.spawn`` per W), the order rotated at each repetition, after warm-up steps; each step
starts after a barrier; a repetition's step time is the slowest rank's wall time (and, on the CPU, the sum of
the ranks' process CPU times, which does not count waiting for a core); reported are the median over
repetitions and the median of the paired ratio to ``DDP EW``. One torch thread per rank. Run ``python
benchmarks/bench_dist.py --help``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS_DIR,
    command_line,
    fmt,
    machine_block,
    machine_info,
    markdown_table,
    median,
    paired_ratio,
    write_csv,
)

REFERENCE = "DDP EW"
#: variant -> (method name for molearn.methods.get, Balancer keyword arguments); the reference has no method
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "EW": ("ew", {}),
    "EW (check off)": ("ew", {"check_finite": False}),
    "UW": ("uw", {}),
    "UW (check off)": ("uw", {"check_finite": False}),
    "MGDA": ("mgda", {}),
    "UPGrad": ("upgrad", {}),
    "PCGrad": ("pcgrad", {}),
    "GradDrop": ("graddrop", {}),
    "MGDA (gradient scheme)": ("mgda", {"mode": "loop"}),
    "MGDA (per-layer)": ("mgda", {"mode": "per-layer"}),  # LayerwiseGramian(activation_form="always")
}
#: the two schemes compared in the results' per-layer table
SCHEMES = ("MGDA (gradient scheme)", "MGDA (per-layer)")
#: how each method crosses the ranks (docs/distributed.md) and the issue's target for it
FAMILY = {
    "ew": "loss-only",
    "uw": "loss-only",
    "mgda": "Gramian",
    "upgrad": "Gramian",
    "pcgrad": "Gramian",  # molearn's PCGrad computes its weights from the Gramian
    "graddrop": "Jacobian",
}
LOSS_ONLY_TARGET = 1.1  # "close to 1×"
SLACK = 1.01  # "≤ K×" within 1%: the losses' all-reduce (4K bytes) and padding do not count against it


class Net(nn.Module):
    """An MLP trunk (``depth`` ReLU layers of ``width``) and K linear heads (one output each)."""

    def __init__(self, k: int, d_in: int, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(k))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.trunk(x)
        return [h(z).squeeze(-1) for h in self.heads]


def _lo_sent() -> int:
    """Bytes sent through the loopback interface so far (Linux; -1 elsewhere)."""
    try:
        with open("/proc/net/dev") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == "lo":
                    return int(rest.split()[8])
    except OSError:
        pass
    return -1


def ring_bytes(op: str, n: int, world: int) -> float:
    """Bytes one rank sends for a collective given ``n`` bytes, with ring algorithms."""
    if op == "all_reduce":
        return 2 * n * (world - 1) / world
    if op == "reduce_scatter":
        return n * (world - 1) / world
    if op == "all_gather":
        return n * (world - 1)
    return float(n)  # broadcast (first step only): at most the tensor


class _Counter:
    """A DDP comm hook that counts the bytes of the buckets it all-reduces (then does DDP's default)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def count(self, bucket: Any) -> torch.futures.Future[torch.Tensor]:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        buf = bucket.buffer()
        self.calls.append(buf.numel() * buf.element_size())
        return allreduce_hook(None, bucket)  # type: ignore[arg-type]

    @property
    def hook(self) -> Callable[[Any, Any], torch.futures.Future[torch.Tensor]]:
        # no annotations: DDP checks that an annotated bucket is a dist.GradBucket (a string here)
        return lambda state, bucket: self.count(bucket)


def make_step(
    variant: str, k: int, args: argparse.Namespace, rank: int, device: torch.device, counter: _Counter | None
) -> tuple[Callable[[], None], Any, int]:
    """One training step of ``variant`` on a fresh copy of the model: ``(step, balancer or None, P)``."""
    import molearn
    from molearn.methods import get

    torch.manual_seed(0)  # the same initial model for every variant (DDP broadcasts rank 0's anyway)
    net = Net(k, args.d_in, args.width, args.depth).to(device)
    ddp = nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None
    )
    if counter is not None:
        ddp.register_comm_hook(None, counter.hook)
    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own slice of the global batch
    x = torch.randn(args.cell_batch, args.d_in, generator=g).to(device)
    y = torch.randn(args.cell_batch, k, generator=g).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    p = sum(q.numel() for q in net.parameters())

    def losses() -> list[torch.Tensor]:
        return [((o - y[:, i]) ** 2).mean() for i, o in enumerate(ddp(x))]

    if variant == REFERENCE:

        def plain() -> None:
            opt.zero_grad(set_to_none=True)
            torch.stack(losses()).sum().backward()
            opt.step()

        return plain, None, p
    name, kwargs = VARIANTS[variant]
    if kwargs.get("mode") == "per-layer":  # a fresh strategy per Balancer
        from molearn.engine import LayerwiseGramian

        kwargs = {**kwargs, "mode": LayerwiseGramian(activation_form="always")}
    bal = molearn.Balancer(get(name), shared=net.trunk, module=ddp, **kwargs)

    def balanced() -> None:
        opt.zero_grad(set_to_none=True)
        bal.backward(losses())
        opt.step()

    return balanced, bal, p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(
    fns: list[Callable[[], None]], reps: int, world: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each repetition calls every function once (after a barrier), in an order rotated by one at each
    repetition: ``(wall, cpu)``, each ``(len(fns), reps)``: the slowest rank's wall time and the sum of the
    ranks' process CPU times (the same on every rank)."""
    import torch.distributed as dist

    wall = torch.zeros(len(fns), reps, dtype=torch.float64)
    proc = torch.zeros_like(wall)
    order = list(range(len(fns)))
    for r in range(reps):
        shift = r % len(fns)
        for i in order[shift:] + order[:shift]:
            dist.barrier()
            w0, c0 = time.perf_counter(), time.process_time()
            fns[i]()
            _sync(device)
            wall[i, r], proc[i, r] = time.perf_counter() - w0, time.process_time() - c0
    both = torch.stack([wall, proc]).to(device)  # NCCL gathers GPU tensors
    gathered = [torch.zeros_like(both) for _ in range(world)]
    dist.all_gather(gathered, both)
    every = torch.stack(gathered).cpu()  # (world, 2, len(fns), reps)
    return every[:, 0].amax(0), every[:, 1].sum(0)


def collectives_alone(
    k: int, p: int, args: argparse.Namespace, world: int, device: torch.device
) -> list[dict[str, Any]]:
    """The collectives of the schemes alone, on float32 buffers of the cell's sizes, interleaved: DDP's
    all-reduce of P, the losses' all-reduce (K numbers), molearn's reduce-scatter of K×P' plus all-gather
    of P'/W (Gramian methods) and an all-reduce of K×P (Jacobian methods, or the Gramian methods'
    alternative)."""
    import torch.distributed as dist

    cols = -(-p // world)
    grad = torch.randn(p, device=device)
    jac = torch.randn(k * p, device=device)
    send, part = torch.randn(world * k * cols, device=device), torch.empty(k * cols, device=device)
    piece, full = torch.randn(cols, device=device), torch.empty(cols * world, device=device)
    scatter = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)
    gather = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)

    def sharded() -> None:
        scatter(part, send)
        gather(full, piece)

    losses = torch.randn(k, device=device)
    fns = {
        f"all_reduce P ({REFERENCE}'s)": lambda: dist.all_reduce(grad),
        "all_reduce K (the losses)": lambda: dist.all_reduce(losses),
        "reduce_scatter K·P' + all_gather P'/W (Gramian)": sharded,
        "all_reduce K·P (Jacobian)": lambda: dist.all_reduce(jac),
    }
    for fn in fns.values():  # warm-up
        fn()
    wall, cpu = _interleaved(list(fns.values()), args.reps, world, device)
    rows = []
    for i, name in enumerate(fns):
        rows.append(
            {
                "world": world,
                "K": k,
                "variant": name,
                "family": "collectives alone",
                "P": p,
                "time_s": median(wall[i].tolist()),
                "vs_ddp_time": paired_ratio(wall[i].tolist(), wall[0].tolist()),
                "cpu_s": median(cpu[i].tolist()),
            }
        )
    return rows


def run_cell(
    k: int, variants: list[str], args: argparse.Namespace, rank: int, world: int, device: torch.device
) -> list[dict[str, Any]]:
    """Bytes and interleaved times of every variant at one K (every rank calls it; rank 0's rows count)."""
    import torch.distributed as dist

    cpu = device.type == "cpu"
    rows: dict[str, dict[str, Any]] = {}
    # --- bytes given: a copy of each variant whose DDP counts its buckets; the last of 3 steps
    for v in variants:
        counter = _Counter()
        step, bal, p = make_step(v, k, args, rank, device, counter)
        for _ in range(3):
            counter.calls.clear()
            step()
        _sync(device)
        log = list(bal.collective.log.calls) if bal is not None else []
        calls = log + [("all_reduce", n) for n in counter.calls]
        strategy = bal.strategy_for(k) if bal is not None else None
        rows[v] = {
            "batch": args.cell_batch,
            "world": world,
            "K": k,
            "variant": v,
            "family": "DDP" if v == REFERENCE else FAMILY[VARIANTS[v][0]],
            "P": p,
            "molearn_bytes": sum(n for _, n in log),
            "ddp_bytes": sum(counter.calls),
            "given_bytes": sum(n for _, n in calls),
            "ring_bytes": sum(ring_bytes(op, n, world) for op, n in calls),
            "collectives": " ".join(f"{op}:{n}" for op, n in calls),
            # the layers in the activation form in the last step (per-layer scheme), "–" for other schemes
            "activation": "+".join(getattr(strategy, "last_activation", None) or ["–"]),
        }
        del step, bal
    # --- the timed copies (DDP's built-in all-reduce, no hook); warm-up, then the loopback bytes
    steps = {v: make_step(v, k, args, rank, device, None)[0] for v in variants}
    for _ in range(args.warmup):
        for v in variants:
            steps[v]()
    _sync(device)

    def sent(fn: Callable[[], None] | None) -> int:
        dist.barrier()
        before = _lo_sent()
        for _ in range(args.count_steps):
            if fn is not None:
                fn()
        _sync(device)
        dist.barrier()
        return _lo_sent() - before

    if cpu and _lo_sent() >= 0:
        # the fewest bytes over a few rounds: other processes' loopback traffic can only add to a count
        idle = min(sent(None) for _ in range(args.count_rounds))
        least = dict.fromkeys(variants, float("inf"))
        for _ in range(args.count_rounds):
            for v in variants:
                least[v] = min(least[v], sent(steps[v]))
        for v in variants:
            rows[v]["sent_bytes"] = (least[v] - idle) / args.count_steps / world
    # --- interleaved timing
    group_wall, group_cpu = _interleaved(list(steps.values()), args.reps, world, device)
    ref = variants.index(REFERENCE)
    ref_given = rows[REFERENCE]["given_bytes"]
    ref_ring = rows[REFERENCE]["ring_bytes"]
    ref_sent = rows[REFERENCE].get("sent_bytes")
    out = []
    for i, v in enumerate(variants):
        row = rows[v]
        row["vs_ddp_given"] = row["given_bytes"] / ref_given
        row["vs_ddp_ring"] = row["ring_bytes"] / ref_ring
        if ref_sent:
            row["vs_ddp_sent"] = row["sent_bytes"] / ref_sent
        row["time_s"] = median(group_wall[i].tolist())
        row["vs_ddp_time"] = paired_ratio(group_wall[i].tolist(), group_wall[ref].tolist())
        if cpu:
            row["cpu_s"] = median(group_cpu[i].tolist())
            row["vs_ddp_cpu"] = paired_ratio(group_cpu[i].tolist(), group_cpu[ref].tolist())
        bound = None if v == REFERENCE else (LOSS_ONLY_TARGET if row["family"] == "loss-only" else k * SLACK)
        row["target"] = "–" if bound is None else ("≤ 1.1×" if row["family"] == "loss-only" else f"≤ {k}×")
        for key, col in (
            ("vs_ddp_given", "met_given"),
            ("vs_ddp_sent", "met_sent"),
            ("vs_ddp_ring", "met_ring"),
        ):
            ok = None if bound is None or key not in row else row[key] <= bound
            row[col] = "–" if ok is None else ("met" if ok else "not met")
        out.append(row)
    if args.cell_batch != args.batch[0]:  # the collectives alone do not depend on the batch
        return out
    return out + collectives_alone(k, rows[REFERENCE]["P"], args, world, device)


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, outdir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's renamed collectives
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.distributed")
    cuda = args.device.startswith("cuda")
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=args.timeout),
    )
    variants = [REFERENCE, *args.variants]
    rows: list[dict[str, Any]] = []
    try:
        for batch, k in [(b, k) for b in args.batch for k in args.ks]:
            t0 = time.perf_counter()
            args.cell_batch = batch
            cell = run_cell(k, variants, args, rank, world, device)
            rows += cell
            if rank == 0:
                for r in cell:
                    if r["family"] == "collectives alone":
                        line = f"{r['variant']:<48}"
                    else:
                        sent = fmt(r.get("vs_ddp_sent", float("nan")))
                        line = f"{r['variant']:<22} given ×{r['vs_ddp_given']:6.2f}  sent ×{sent:>6}  "
                        line += f"ring ×{r['vs_ddp_ring']:6.2f}"
                    line += f"  {r['time_s'] * 1e3:8.2f} ms  ×{r['vs_ddp_time']:5.2f}"
                    print(f"B={batch:<3} W={world} K={k:<3} {line}", flush=True)
                print(f"  (B={batch}, W={world}, K={k}: {time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        if rank == 0:
            torch.save(rows, Path(outdir) / f"rows{world}.pt")
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _headline(rows: list[dict[str, Any]], cpu: bool) -> tuple[str, str]:
    """Two compact tables (variant × (batch, W, K)): the bytes ratio and the step-time ratio to DDP EW."""
    cells = sorted({(r["batch"], r["world"], r["K"]) for r in rows})
    names = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["batch"], r["world"], r["K"], r["variant"]): r for r in rows}
    headers = ["variant", *(f"B={b} W={w} K={k}" for b, w, k in cells)]
    bytes_rows, time_rows = [], []
    for n in names:
        b, t = [n], [n]
        for bs, w, k in cells:
            r = by.get((bs, w, k, n))
            if r is None:
                b.append("–")
                t.append("–")
                continue
            main = r.get("vs_ddp_sent", r["vs_ddp_given"]) if cpu else r["vs_ddp_given"]
            b.append(f"{main:.2f} ({r['vs_ddp_ring']:.2f})")
            t.append(f"{r['vs_ddp_time']:.2f}" + (f" ({r['vs_ddp_cpu']:.2f})" if cpu else ""))
        bytes_rows.append(b)
        time_rows.append(t)
    return markdown_table(headers, bytes_rows), markdown_table(headers, time_rows)


def _schemes(rows: list[dict[str, Any]], cpu: bool) -> str:
    """The per-layer scheme against the gradient scheme (MGDA, same cell): bytes and step time, and what
    ``mode="auto"`` (the ``MGDA`` row) chose per layer."""
    by = {(r["batch"], r["world"], r["K"], r["variant"]): r for r in rows}
    grad, layer = SCHEMES
    table = []
    for b, w, k in sorted({(r["batch"], r["world"], r["K"]) for r in rows}):
        g, a, auto = by.get((b, w, k, grad)), by.get((b, w, k, layer)), by.get((b, w, k, "MGDA"))
        if g is None or a is None:
            continue
        sent = "–"
        if cpu and g.get("sent_bytes") and a.get("sent_bytes") is not None:
            sent = f"{a['sent_bytes'] / g['sent_bytes']:.2f}"
        line = [b, w, k, f"{a['given_bytes'] / g['given_bytes']:.2f}", sent]
        line += [f"{a['ring_bytes'] / g['ring_bytes']:.2f}", f"{a['time_s'] / g['time_s']:.2f}"]
        line.append("–" if auto is None else f"{auto['activation']} ({auto['time_s'] / g['time_s']:.2f})")
        table.append(line)
    headers = ["samples per rank", "W", "K", "bytes given", "sent (lo)", "ring", "step time"]
    headers.append("`auto`: activation-form layers (step time)")
    return markdown_table(headers, table)


NOTES = """\
- **Given bytes** (per rank, float32; T parameter tensors, P' = P rounded up to a multiple of W): loss-only
  4K + 4(P + T) with the finite check on (molearn's staged write, averaged by molearn) or 4K + DDP's 4P with
  it off, i.e. 1×; Gramian methods in the gradient scheme on gloo 4K + 8L + 4K·P (the Jacobian all-reduced;
  8L: the L hooked layers' row counts), i.e. (K + ε)×, and on NCCL 4K + 8L + 4K·P' + 4K² + 4P'/W
  (reduce-scatter, Gramian, all-gather of the update), i.e. (K + 1)/2× under the ring model; with the
  per-layer scheme (what `mode="auto"` picked here) the gathered rows replace the layers' gradient rows
  (next note); the Jacobian method 4K + 4K·P, i.e. (K + ε)×.
- **gloo's `reduce_scatter` is an all-reduce**: per rank it sends 2n(W-1)/W bytes for n bytes given, as much
  as an all-reduce of the whole buffer (the `sent` columns, measured on the loopback interface), where a ring
  reduce-scatter (NCCL) sends half that. So on gloo the Gramian scheme (reduce-scatter K×P', all-gather
  P'/W) would send (K + 1/2)× DDP's all-reduce, *more* than all-reducing the whole K×P Jacobian (K×, the
  GradDrop rows), and miss the ≤ K× target; under the ring model it sends (K + 1)/2× and meets it. molearn
  therefore all-reduces the Jacobian on gloo and reduce-scatters it on NCCL only (`collective.sharded`).
  "Collectives alone" times both schemes' collectives on buffers of each cell's sizes.
- **The per-layer scheme** (`MGDA (per-layer)`: both Linear layers of the trunk gather their inputs and
  output-gradients) against the gradient scheme (`MGDA (gradient scheme)`: the K×P Jacobian, all-reduced on
  gloo): it sends W·N_r·(d_in + K·d_out) numbers per layer plus the all-reduce of its write, against 2K·p
  (docs/distributed.md), so it wins at small per-rank batches and loses as W·N_r approaches 2·d_in.
  `MGDA`, `UPGrad` and `PCGrad` run `mode="auto"`, which picks the form per layer by that byte rule (the
  column "`auto`" of the per-layer table names the layers it gathered).
- The step-time ratios of the Gramian and Jacobian methods include the K per-objective backward passes and
  the solver, which a DDP EW step does not do: they are not a communication cost alone.
- The sent bytes count every packet on `lo` during the steps (other processes' loopback traffic too, and
  TCP/IP headers: a small message such as the losses' all-reduce costs some 100 bytes of headers)."""


def _hooks_note(rows: list[dict[str, Any]]) -> str:
    """Where DDP's own all-reduce ran (its comm hook was called), from the measured rows."""
    ran = sorted({r["variant"] for r in rows if r["ddp_bytes"] > 0})
    quiet = sorted({r["variant"] for r in rows if r["ddp_bytes"] == 0})
    both = sorted({r["variant"] for r in rows if r["ddp_bytes"] > 0 and r["molearn_bytes"] > 4 * r["P"]})
    return (
        "- **When DDP's own all-reduce ran** (its hooks fire when a `backward` accumulates into `.grad` "
        "through the DDP model; molearn's per-objective passes and staged writes use `torch.autograd.grad`, "
        f"which does not fire them): in {', '.join(ran) or 'none'}; not in {', '.join(quiet) or 'none'}. "
        f"Averaged twice (DDP's all-reduce and molearn's of P or more): {', '.join(both) or 'none'}."
    )


def _markdown(rows: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any], notes: str) -> str:
    cpu = not args.device.startswith("cuda")

    def mb(x: float) -> str:
        return f"{x / 1e6:.3g} MB" if x >= 1e5 else f"{x / 1e3:.3g} kB"

    steps = [r for r in rows if r["family"] != "collectives alone"]
    alone = [r for r in rows if r["family"] == "collectives alone"]
    headers = [
        "B",
        "W",
        "K",
        "variant",
        "family",
        "given",
        "× DDP",
        "sent (lo)",
        "× DDP",
        "ring × DDP",
        "target",
    ]
    headers += ["met (given / sent / ring)", "step", "× DDP EW (wall)"] + (["× DDP EW (CPU)"] if cpu else [])
    table = []
    for r in steps:
        sent = r.get("sent_bytes")
        line = [r["batch"], r["world"], r["K"], r["variant"], r["family"], mb(r["given_bytes"])]
        line += [f"{r['vs_ddp_given']:.3f}", "–" if sent is None else mb(sent)]
        line += [fmt(r.get("vs_ddp_sent", float("nan")), 4), f"{r['vs_ddp_ring']:.3f}", r["target"]]
        line += ["–" if r["target"] == "–" else f"{r['met_given']} / {r['met_sent']} / {r['met_ring']}"]
        line += [f"{r['time_s'] * 1e3:.2f} ms", f"{r['vs_ddp_time']:.2f}"]
        if cpu:
            line.append(f"{r['vs_ddp_cpu']:.2f}")
        table.append(line)
    comm = markdown_table(
        ["W", "K", "collectives", "time (slowest rank)", "× DDP's all-reduce"],
        [
            [r["world"], r["K"], r["variant"], f"{r['time_s'] * 1e3:.2f} ms", f"{r['vs_ddp_time']:.2f}"]
            for r in alone
        ],
    )
    head_bytes, head_time = _headline(steps, cpu)
    sizes = ", ".join(f"K = {k}: P = {n:,}" for k, n in sorted({(r["K"], r["P"]) for r in steps}))
    measured = "sent on the loopback interface (gloo)" if cpu else "given to collectives"
    return (
        "# Distributed (DDP) communication and step time against plain DDP with equal weighting\n\n"
        f"Command: `{command_line()}`\n\n{machine_block(info)}\n\n"
        f"Model: MLP trunk {args.d_in} → {args.width} × {args.depth} (ReLU), K linear heads {args.width} → 1,"
        f" MSE losses, SGD, {' and '.join(map(str, args.batch))} samples per rank (B; {sizes} float32 "
        "parameters). Backend: "
        f"{'NCCL' if not cpu else 'gloo'}; one torch thread per rank; {args.warmup} warm-up steps a variant, "
        f"then {args.reps} interleaved repetitions (order rotated each time), each step after a barrier.\n\n"
        "Columns: **given**: bytes per step and rank handed to collectives (`balancer.collective.log` plus "
        "DDP's own all-reduce when its hooks run, counted by a comm hook on a copy of each variant); "
        "**sent (lo)**: bytes per step and rank that crossed the loopback interface (what gloo really moved, "
        f"headers included; the least of {args.count_rounds} counts over {args.count_steps} steps of the "
        "variant alone); **ring × DDP**: the same ratio "
        "for ring algorithms (all-reduce 2n(W-1)/W, reduce-scatter n(W-1)/W, all-gather n(W-1) per rank: "
        "NCCL's); **step**: median of the slowest rank's wall time; **× DDP EW**: median over repetitions of "
        "the paired ratio to `DDP EW` (wall: the slowest rank; CPU: the ranks' process CPU times summed, "
        'which does not count waiting for a core). Targets (issue 16): loss-only ≤ 1.1× ("close to 1×"), '
        "Gramian (and, as a worst case, Jacobian) methods ≤ K× DDP's gradient all-reduce, within 1% (the "
        "losses' 4K bytes).\n\n"
        f"## Headline\n\nBytes per step and rank, × DDP EW's, {measured} (ring model in brackets):\n\n"
        f"{head_bytes}\n\nStep time × DDP EW, wall clock of the slowest rank"
        f"{' (summed CPU time in brackets)' if cpu else ''}:\n\n{head_time}\n\n"
        f"## Notes\n\n{_hooks_note(steps)}\n{NOTES}\n{notes}\n\n"
        f"## The per-layer scheme against the gradient scheme\n\nMGDA in both schemes on the same cell, "
        "per-layer / gradient (below 1: the per-layer scheme moves fewer bytes or steps faster); the last "
        'column: the layers `mode="auto"` (the `MGDA` row) put in the activation form, and its step time '
        f"over the gradient scheme's:\n\n{_schemes(steps, cpu)}\n\n"
        f"## All rows\n\n{markdown_table(headers, table)}\n\n"
        f"## Collectives alone\n\nThe schemes' collectives on float32 buffers of each cell's sizes, "
        f"interleaved, {args.reps} repetitions, median of the slowest rank's wall time:\n\n{comm}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4], help="numbers of processes")
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 10, 40])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--count-steps", type=int, default=3, help="steps per variant for the loopback bytes")
    ap.add_argument("--count-rounds", type=int, default=3, help="loopback counts per variant (the least)")
    ap.add_argument("--d-in", type=int, default=64)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[4, 32], help="samples per rank")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    ap.add_argument("--timeout", type=float, default=300.0, help="the process group's timeout (s)")
    ap.add_argument("--notes", default="", help="a line added to the results' notes")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 ranks, K = 2, 2 repetitions")
    args = ap.parse_args(argv)
    if args.quick:
        args.worlds, args.ks, args.reps, args.warmup, args.count_steps, args.count_rounds = (
            [2],
            [2],
            2,
            1,
            1,
            1,
        )
        args.d_in, args.width, args.depth, args.batch = 8, 16, 1, [8]
    import torch.multiprocessing as mp

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.worlds:
            mp.spawn(_worker, args=(world, _free_port(), args, tmp), nprocs=world, join=True)
            rows += torch.load(Path(tmp) / f"rows{world}.pt", weights_only=False)
    minutes = (time.perf_counter() - start) / 60
    info = machine_info(args.device)
    info["torch_threads"] = 1  # per rank
    notes = [f"- Run time {minutes:.1f} min."] + ([f"- {args.notes}"] if args.notes else [])
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "dist.csv", rows)
    (args.out / "dist.md").write_text(_markdown(rows, args, info, "\n".join(notes)))
    print(f"wrote {args.out / 'dist.md'} ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
