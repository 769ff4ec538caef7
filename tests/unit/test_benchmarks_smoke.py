"""Smoke test of the benchmark scripts: each ``main`` runs on its tiniest setting and writes its tables.

No timing is asserted; only that the scripts run and that their outputs have the expected rows.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

pytest.importorskip("torchjd")


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bench_solvers_quick(tmp_path: Path) -> None:
    mod = _load("bench_solvers")
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = _csv(tmp_path / "solvers.csv")
    data = json.loads((tmp_path / "solvers.json").read_text())
    # MGDA exists from the start: it must have been compared at K = 2 and give TorchJD's solution.
    mgda = [r for r in rows if r["method"] == "MGDA"]
    assert len(mgda) == 1 and mgda[0]["K"] == "2"
    assert "error" not in mgda[0] or not mgda[0]["error"]
    assert float(mgda[0]["molearn_s"]) > 0 and float(mgda[0]["torchjd_s"]) > 0
    assert mgda[0]["same_solution"].startswith("yes")
    # every paired method is either measured (one row per K) or listed as not available
    names = {r["method"] for r in rows}
    assert names.isdisjoint(data["missing"])
    assert all(r["K"] == "2" for r in rows)
    md = (tmp_path / "solvers.md").read_text()
    assert "| MGDA | 2 |" in md and "Command:" in md and "torch:" in md


def test_bench_step_quick(tmp_path: Path) -> None:
    mod = _load("bench_step")
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = _csv(tmp_path / "step.csv")
    variants = {(r["model"], r["variant"]) for r in rows}
    for model in ("mlp", "conv"):
        assert (model, "EW") in variants
        for mode in ("loop", "batched"):  # the floor: forward and the K per-objective gradients
            assert (model, f"grads/{mode}") in variants
        for mode in ("auto", "loop", "batched", "gramian", "gramian-batched", "representation"):
            assert (model, f"MGDA/{mode}") in variants
        assert (model, "TorchJD MGDA") in variants
    assert all(r["K"] == "2" for r in rows)
    assert all(float(r["time_s"]) > 0 for r in rows)
    steps = [r for r in rows if r["variant"].startswith("MGDA/")]
    assert all(r["overhead_vs_grads"] != "" for r in steps)
    md = (tmp_path / "step.md").read_text()
    assert "## Targets" in md and "## mlp" in md and "## conv" in md


def test_bench_seed_methods_quick(tmp_path: Path) -> None:
    mod = _load("bench_seed_methods")
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = _csv(tmp_path / "seed_methods.csv")
    expected = {
        "EW",
        "MGDA",
        "FairGrad (newton)",
        "FairGrad (sgd)",
        "LogLosses(mgda)",
        "MoCo (libmtl)",
        "MoDo (three)",
        "MoDo (two, half batches)",
        "SDMGrad (batches=3)",
        "SDMGrad (batches=1)",
        "SDMGradOS (n=4)",
        "SAMO (FairGrad α=2)",
    }
    assert {r["variant"] for r in rows} == expected and len(rows) == len(expected)
    assert all(r["model"] == "mlp" and r["K"] == "4" for r in rows)
    for column in ("time_s", "time_vs_ew", "peak_bytes", "forward_passes", "backward_passes", "state_bytes"):
        assert all(column in r for r in rows)
    assert all(float(r["time_s"]) > 0 for r in rows)
    # the counted passes follow the cost table (K = 4; SDMGradOS with n = 4 selects every objective)
    by = {r["variant"]: r for r in rows}
    assert all(r["passes_match"] == "yes" for r in rows)
    assert (float(by["EW"]["forward_passes"]), float(by["EW"]["backward_passes"])) == (1.0, 1.0)
    assert (float(by["MoDo (three)"]["forward_passes"]), float(by["MoDo (three)"]["backward_passes"])) == (
        3.0,
        12.0,
    )
    samo = by["SAMO (FairGrad α=2)"]
    assert (float(samo["forward_passes"]), float(samo["backward_passes"])) == (13.0, 5.0)
    # MoCo keeps a K×P tracking matrix (float32), λ (K, float64) and its step count (a float64 scalar)
    p = int(by["MoCo (libmtl)"]["trunk_params"])
    assert int(by["MoCo (libmtl)"]["state_bytes"]) == 4 * p * 4 + 4 * 8 + 8
    md = (tmp_path / "seed_methods.md").read_text()
    assert "Command:" in md and "## mlp" in md and "| 4 | MoCo (libmtl) |" in md
    assert (tmp_path / "seed_methods.json").exists()


def test_bench_loss_only_quick(tmp_path: Path) -> None:
    mod = _load("bench_loss_only")
    assert mod.main(["--quick", "--models", "mlp,conv", "--out", str(tmp_path)]) == 0
    rows = _csv(tmp_path / "loss_only.csv")
    variants = {"EW (plain)", *(f"{m}/auto" for m in mod.METHODS)}
    for model in ("mlp", "conv"):
        assert {r["variant"] for r in rows if r["model"] == model and r["K"] == "2"} == variants
    assert all(float(r["time_s"]) > 0 and float(r["vs_ew"]) > 0 for r in rows)
    assert "| mlp | 2 | ew/auto |" in (tmp_path / "loss_only.md").read_text()


def test_bench_dist_quick(tmp_path: Path) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is needed")
    mod = _load("bench_dist")
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    every = _csv(tmp_path / "dist.csv")
    rows = {r["variant"]: r for r in every if r["family"] != "collectives alone"}
    assert set(rows) == {mod.REFERENCE, *mod.VARIANTS}
    assert sum(r["family"] == "collectives alone" for r in every) == 4
    assert all(r["world"] == "2" and r["K"] == "2" for r in rows.values())
    p = int(rows[mod.REFERENCE]["P"])
    # DDP's hooks run for the reference and for loss-only writes with the finite check off, never else
    assert int(rows[mod.REFERENCE]["ddp_bytes"]) == 4 * p
    assert int(rows["EW (check off)"]["ddp_bytes"]) == 4 * p and int(rows["EW"]["ddp_bytes"]) == 0
    assert int(rows["MGDA"]["ddp_bytes"]) == 0
    # on gloo: the losses, the trunk layer's row count (int64), the all-reduced K×P Jacobian
    assert int(rows["MGDA"]["given_bytes"]) == 4 * 2 + 8 + 4 * 2 * p
    # the per-layer scheme: the losses, the row count, the K×34 Jacobian of the parameters in gradient form,
    # the gathered rows of the one activation-form layer (8 rows: 8 inputs and 2×16 output-gradients), the
    # averaged write of its 144 parameters (and 2 reached-flags)
    assert int(rows["MGDA (per-layer)"]["given_bytes"]) == 4 * 2 + 8 + 4 * 2 * 34 + 4 * 8 * (
        8 + 2 * 16
    ) + 4 * (144 + 2)
    assert all(float(r["time_s"]) > 0 and float(r["vs_ddp_time"]) > 0 for r in every)
    assert "| 8 | 2 | 2 | MGDA | Gramian |" in (tmp_path / "dist.md").read_text()
