"""Published results: the table's rows are well formed and agree with themselves, and the report prints
them beside the measured numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from molearn.compare import PUBLISHED, STL, RunRecord, published, published_benchmarks
from molearn.compare import _report as rp
from molearn.methods import registry
from molearn.metrics import delta_m

T2 = 4.302653  # 0.975 quantile of Student's t, 2 degrees of freedom
BUILTIN = {
    "multi_fashion", "multi_mnist", "multi_fashion_mnist", "qm9", "nyuv2", "cityscapes", "celeba",
    "office31", "office_home",
}  # fmt: skip
QM9 = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "U0_atom", "U_atom", "H_atom", "G_atom", "cv")
NYU = {
    "miou": True, "pix_acc": True, "abs_err": False, "rel_err": False, "mean_angle": False,
    "median_angle": False, "within_11_25": True, "within_22_5": True, "within_30": True,
}  # fmt: skip
#: metric direction per benchmark, written out by hand from the papers' tables (True: higher is better)
HIGHER = {
    "qm9": dict.fromkeys([f"mae_{t}" for t in QM9], False),
    "nyuv2": NYU,
    "cityscapes": {"miou": True, "pix_acc": True, "abs_err": False, "rel_err": False},
    "office31": dict.fromkeys(["acc_amazon", "acc_dslr", "acc_webcam"], True),
    "office_home": dict.fromkeys(["acc_art", "acc_clipart", "acc_product", "acc_real_world"], True),
    "multi_fashion": {"acc_left": True, "acc_right": True},
}


# ------------------------------------------------------------------------------------------ the table
def test_every_row_is_well_formed() -> None:
    methods = set(registry())
    seen = set()
    assert len(PUBLISHED) > 300
    for p in PUBLISHED:
        assert p.benchmark in BUILTIN, p
        assert p.method in methods or p.method == STL, p
        assert p.source.strip() and ":" in p.source and p.table.strip() and p.protocol.strip(), p
        assert p.metric.strip() and math.isfinite(p.value), p
        assert p.spread is None or (math.isfinite(p.spread) and p.spread >= 0), p
        assert p.unit in ("", "%"), p
        assert p.method != STL or p.metric != "delta_m", p  # single-task rows are the reference of Δm
        key = (p.benchmark, p.method, p.metric)
        assert key not in seen, f"duplicate row {key}"
        seen.add(key)
    assert set(published_benchmarks()) == BUILTIN
    assert published("tiny") == [] and published("QM9") == []


def test_values_read_by_hand() -> None:
    def one(bench: str, method: str, metric: str = "delta_m") -> float:
        (row,) = [p for p in published(bench) if p.method == method and p.metric == metric]
        return row.value

    # Nash-MTL Table 1 (QM9) and FAMO Table 2
    assert one("qm9", "nashmtl") == 62.0 and one("qm9", "ew") == 177.6 and one("qm9", "famo") == 58.5
    assert one("qm9", "loglosses") == 77.8 and one("qm9", "imtlg") == 77.2
    assert one("qm9", STL, "mae_homo") == 60.57  # Nash-MTL Table 6, meV
    # NYUv2 / Cityscapes (Nash-MTL Tables 2-3, FAMO Tables 1 and 3), SDMGrad / FairGrad as quoted
    assert one("nyuv2", "ew") == 5.59 and one("nyuv2", "famo") == -4.10 and one("nyuv2", "sdmgrad") == -4.84
    assert one("nyuv2", "fairgrad") == -4.66 and one("cityscapes", "nashmtl") == 6.82
    assert one("nyuv2", STL, "miou") == 38.30
    # CelebA: FAMO Table 3's Δm column
    assert one("celeba", "famo") == 1.21 and one("celeba", "mgda") == 14.85
    # DB-MTL prints Δp = -Δm: +1.05 on Office-31 is Δm -1.05
    assert one("office31", "dbmtl") == -1.05 and one("office_home", "ew") == 0.92
    # Phan et al. Table 1: single-task accuracy on Multi-Fashion, about 0.87
    assert one("multi_fashion", STL, "acc_left") == 87.10 and one("multi_mnist", "mgda", "acc_right") == 94.49
    row = next(p for p in published("office31") if p.method == "dbmtl" and p.metric == "delta_m")
    assert row.spread == 0.20 and "sign flipped" in row.note and row.table == "Table 4"


def test_every_method_row_is_complete() -> None:
    for bench, directions in HIGHER.items():
        per: dict[str, set[str]] = {}
        for p in published(bench):
            if p.metric != "delta_m":
                per.setdefault(p.method, set()).add(p.metric)
        assert STL in per
        for method, metrics in per.items():
            assert metrics == set(directions), (bench, method)


@pytest.mark.parametrize("bench", [b for b in HIGHER if b != "multi_fashion"])
def test_delta_m_follows_from_the_printed_metrics(bench: str) -> None:
    """Δm% recomputed from each method's printed metrics against the printed single-task row agrees with
    the printed Δm% (up to rounding and the mean over seeds), except rows the table flags as inconsistent
    in the source; this catches transcription errors."""
    rows = published(bench)
    per: dict[str, dict[str, float]] = {}
    for p in rows:
        if p.metric != "delta_m":
            per.setdefault(p.method, {})[p.metric] = p.value
    checked = 0
    for p in rows:
        if p.metric != "delta_m" or p.method not in per:
            continue
        got = delta_m(per[p.method], per[STL], HIGHER[bench])
        if "inconsistent" in p.note:
            assert abs(got - p.value) > 0.1, p  # the flag is real
            continue
        assert got == pytest.approx(p.value, abs=0.25), p
        checked += 1
    assert checked >= 10


# ------------------------------------------------------------------------------------------ the report
def _multi_records() -> list[RunRecord]:
    recs = []
    for i, seed in enumerate((0, 1, 2)):
        recs.append(RunRecord("EW", seed, {"acc_left": 0.85, "acc_right": 0.84}, delta_m=[1.0, 2.0, 3.0][i]))
        recs.append(
            RunRecord("MGDA", seed, {"acc_left": [0.86, 0.87, 0.88][i], "acc_right": 0.83}, delta_m=0.5)
        )
    return recs


def _section(md: str) -> str:
    start = md.index("## Published results")
    return md[start : md.index("\n## ", start + 1)]


def test_report_prints_published_beside_measured(tmp_path: Path) -> None:
    paths = rp.write_report(
        _multi_records(), tmp_path, command="molearn compare", versions={}, plot=False,
        benchmark="multi_fashion", schedule="default", schedule_detail="3 epochs",
        baselines={"acc_left": 0.871, "acc_right": 0.862},
    )  # fmt: skip
    sec = _section(paths["report.md"].read_text())
    assert "**default** schedule (this run: 3 epochs): **not the published protocol**" in sec
    # Δm table: measured methods without a published Δm show "—", published methods not run are listed
    assert "| EW | — | — | 2 ± 2.5 |" in sec  # Δm 1, 2, 3: mean 2, half-width t_2 / √3
    assert "| MGDA | — | — | 0.5 ± 0 |" in sec
    for name in ("NashMTL", "CAGrad", "PCGrad", "FairGrad", "IMTLG"):
        assert f"| {name} | — | — | not run |" in sec
    # per-metric: published as printed (%), measured fraction × 100, single-task beside the baselines
    assert "| STL | acc_left | 87.1 ± 0.09 % | 87.1 % | Phan et al., ICCV 2025, Table 1 |" in sec
    assert "| STL | acc_right | 86.2 ± 0.06 % | 86.2 % | Phan et al., ICCV 2025, Table 1 |" in sec
    # MGDA acc_left 0.86, 0.87, 0.88: mean 87 %, half-width 100 · t_2 · 0.01 / √3 = 2.48
    assert "| MGDA | acc_left | 86.76 ± 0.09 % | 87 ± 2.5 % | Phan et al., ICCV 2025, Table 1 |" in sec
    assert "| NashMTL | acc_left | 86.91 ± 0.09 % | not run | Phan et al., ICCV 2025, Table 1 |" in sec
    assert "| EW | acc_left" not in sec  # no published EW accuracies in that source
    assert (
        "Beyond Losses Reweighting" in sec
        and "ResNet-18 backbone" in sec
        and "not the Pareto-MTL LeNet" in sec
    )
    assert "IMTLG (Phan et al., ICCV 2025, Table 1): the paper's 'IMTL'" in sec
    assert 100 * T2 * 0.01 / math.sqrt(3) == pytest.approx(2.48, abs=0.01)


def test_report_delta_m_sources_and_schedules() -> None:
    recs = [
        RunRecord(m, s, {"mae_mu": v, "mae_alpha": 0.3}, delta_m=d)
        for s in (0, 1)
        for m, v, d in (("EW", 0.1, 180.0), ("NashMTL", 0.11, 60.0), ("MyMethod", 0.2, 90.0))
    ]
    md = rp.format_markdown(recs, command="c", versions={}, published_rows=published("qm9"), schedule="full")
    sec = _section(md)
    assert "**full** schedule, the benchmark's published protocol" in sec
    assert "not the published protocol" not in sec
    assert "| NashMTL | 62 ± 1.4 | Navon et al., ICML 2022, Table 1 | 60 ± 0 |" in sec
    assert "| EW | 177.6 ± 3.4 | Navon et al., ICML 2022, Table 1 | 180 ± 0 |" in sec
    assert "| MyMethod | — | — | 90 ± 0 |" in sec
    assert "| FAMO | 58.5 ± 3.26 | Liu et al., NeurIPS 2023, Table 2 (± from Table 6) | not run |" in sec
    assert "| DBMTL | 58.1 ± 3.89 | Lin et al., arXiv 2308.12029 v3 (2025), Table 3 | not run |" in sec
    # a metric the run does not have, and one it has (no baselines given: n/a)
    assert "| STL | mae_homo | 60.57 | not measured | Navon et al., ICML 2022, Table 6 |" in sec
    assert "| STL | mae_mu | 0.067 | n/a | Navon et al., ICML 2022, Table 6 |" in sec
    assert "| NashMTL | mae_mu | 0.102 | 0.11 ± 0 | Navon et al., ICML 2022, Table 6 |" in sec
    changed = rp.format_markdown(recs, command="c", versions={}, published_rows=published("qm9"),
                                 schedule="full (changed: epochs)")  # fmt: skip
    assert "the published one with changes: **not the published protocol**" in _section(changed)
    unknown = rp.format_markdown(recs, command="c", versions={}, published_rows=published("qm9"))
    assert "schedule is not recorded" in _section(unknown)


def test_no_section_without_published_rows(tmp_path: Path) -> None:
    recs = _multi_records()
    assert "Published results" not in rp.format_markdown(recs, command="c", versions={})
    paths = rp.write_report(recs, tmp_path, command="c", versions={}, plot=False, benchmark="tiny")
    assert "Published results" not in paths["report.md"].read_text()
