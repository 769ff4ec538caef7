"""The comparison report: aggregation over seeds, cost ratios to EW, sorting, runs.csv, report.md, plots."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from molearn.compare import RunRecord
from molearn.compare import _report as rp

T2 = 4.302653  # 0.975 quantile of Student's t, 2 degrees of freedom


def _records() -> list[RunRecord]:
    """EW and MGDA over seeds 0, 1, 2 with numbers chosen so the aggregates are easy by hand."""
    recs = []
    for i, seed in enumerate((0, 1, 2)):
        recs.append(
            RunRecord(
                method="EW",
                seed=seed,
                metrics={"acc_left": 0.80 + 0.01 * i, "acc_right": 0.70},
                delta_m=[1.0, 2.0, 3.0][i],
                time_per_step=[1.0, 3.0, 2.0][i],
                peak_memory=100.0 * 2**20,
                weights=[(0, [0.5, 0.5]), (10, [0.5, 0.5])],
                steps=10,
            )
        )
        recs.append(
            RunRecord(
                method="MGDA",
                seed=seed,
                metrics={"acc_left": 0.90, "acc_right": [0.6, 0.7, 0.8][i]},
                delta_m=[-2.0, -1.0, 0.0][i],
                time_per_step=[2.0, 3.0, 8.0][i],
                peak_memory=[150.0, 200.0, 250.0][i] * 2**20,  # ew_peak_memory NaN: falls back to EW's record
                ew_time_per_step=[1.0, 3.0, 2.0][i],
                weights=[(0, [0.5, 0.5]), (10, [0.2 + 0.1 * i, 0.8 - 0.1 * i])],
                steps=10,
            )
        )
    return recs


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _same_record(a: RunRecord, b: RunRecord) -> bool:
    fa, fb = dataclasses.asdict(a), dataclasses.asdict(b)
    if fa.keys() != fb.keys() or a.metrics.keys() != b.metrics.keys():
        return False
    for k, va in fa.items():
        vb = fb[k]
        if k == "metrics":
            if not all(_same(va[m], vb[m]) for m in va):
                return False
        elif k == "weights":
            if [(s, list(w)) for s, w in va] != [(s, list(w)) for s, w in vb]:
                return False
        elif isinstance(va, float):
            if not _same(va, vb):
                return False
        elif va != vb:
            return False
    return True


# ------------------------------------------------------------------------------------------ aggregation
def test_summary_by_hand() -> None:
    sums = {s.method: s for s in rp.summarise(_records())}
    ew, mgda = sums["EW"], sums["MGDA"]
    assert ew.seeds == [0, 1, 2] and mgda.seeds == [0, 1, 2]
    # Δm of MGDA: -2, -1, 0 -> mean -1, sd 1, half-width t_2 / sqrt(3)
    assert mgda.delta_m == pytest.approx((-1.0, T2 / math.sqrt(3), 3))
    # acc_right of MGDA: 0.6, 0.7, 0.8 -> mean 0.7, sd 0.1
    assert mgda.metrics["acc_right"] == pytest.approx((0.7, T2 * 0.1 / math.sqrt(3), 3))
    # acc_left of MGDA constant: zero half-width
    assert mgda.metrics["acc_left"] == pytest.approx((0.9, 0.0, 3))
    # paired time ratios 2/1, 3/3, 8/2 = 2, 1, 4 -> geometric mean 2; logs ln2·(1, 0, 2): mean ln 2, sd ln 2,
    # interval exp(ln 2 ± t·ln2/√3) on the log scale
    gm, low, high, n = mgda.time_ratio
    half = T2 * math.log(2) / math.sqrt(3)
    assert (gm, low, high, n) == pytest.approx((2.0, 2 * math.exp(-half), 2 * math.exp(half), 3))
    assert 0 < low < gm < high
    # memory: no ew_peak_memory in the MGDA records -> EW record of the same seed (100 MiB): 1.5, 2, 2.5
    logs = [math.log(v) for v in (1.5, 2.0, 2.5)]
    mu = sum(logs) / 3
    h = T2 * math.sqrt(sum((v - mu) ** 2 for v in logs) / 2) / math.sqrt(3)
    assert mgda.memory_ratio == pytest.approx((math.exp(mu), math.exp(mu - h), math.exp(mu + h), 3))
    # EW against itself: exactly 1 with no spread
    assert ew.time_ratio == pytest.approx((1.0, 1.0, 1.0, 3))
    assert ew.memory_ratio == pytest.approx((1.0, 1.0, 1.0, 3))
    # absolute time per step of MGDA: 2, 3, 8 -> mean 13/3
    assert mgda.time_per_step[0] == pytest.approx(13 / 3)
    # weights: mean over seeds per logged step, at step 10 (0.2, 0.3, 0.4) -> 0.3
    assert [s for s, _ in mgda.weights] == [0, 10]
    assert mgda.weights[1][1] == pytest.approx([0.3, 0.7])


def test_one_seed_has_no_interval_and_nonfinite_values_are_left_out() -> None:
    recs = [
        RunRecord("A", 0, {"m": 1.0}, delta_m=2.0, time_per_step=1.0, ew_time_per_step=0.5),
        RunRecord("B", 0, {"m": 1.0}, delta_m=3.0),
        RunRecord("B", 1, {"m": math.nan}, delta_m=math.nan, error="non-finite loss at step 7"),
    ]
    sums = {s.method: s for s in rp.summarise(recs)}
    assert sums["A"].delta_m[0] == 2.0 and math.isnan(sums["A"].delta_m[1]) and sums["A"].delta_m[2] == 1
    assert sums["A"].time_ratio[0] == pytest.approx(2.0)
    assert sums["B"].delta_m[:1] == (3.0,) and sums["B"].delta_m[2] == 1  # the NaN seed is left out
    assert sums["B"].seeds == [0, 1]
    assert sums["B"].errors == ["seed 1: non-finite loss at step 7"]


def test_sorted_by_delta_m_with_nan_last() -> None:
    recs = [
        RunRecord("zeta", 0, {"m": 1.0}, delta_m=5.0),
        RunRecord("nan", 0, {"m": 1.0}),
        RunRecord("alpha", 0, {"m": 1.0}, delta_m=-1.0),
        RunRecord("beta", 0, {"m": 1.0}, delta_m=5.0),
    ]
    assert [s.method for s in rp.summarise(recs)] == ["alpha", "beta", "zeta", "nan"]


def test_missing_ew_is_na_not_an_error(tmp_path: Path) -> None:
    recs = [RunRecord("MGDA", s, {"m": 0.5}, delta_m=1.0, time_per_step=2.0, peak_memory=1.0) for s in (0, 1)]
    (s,) = rp.summarise(recs)
    assert math.isnan(s.time_ratio[0]) and s.time_ratio[3] == 0
    assert math.isnan(s.memory_ratio[0])
    md = rp.format_markdown(recs, command="molearn compare", versions={"torch": "2"})
    row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert row.count("n/a") == 2  # time and memory ratio cells
    assert "Time ratio to EW n/a (no EW time measured): MGDA (seed 0), MGDA (seed 1)." in md
    rp.write_runs_csv(recs, tmp_path / "runs.csv")
    back = rp.read_runs_csv(tmp_path / "runs.csv")
    assert all(_same_record(a, b) for a, b in zip(recs, back))
    assert "nan" in (tmp_path / "runs.csv").read_text().splitlines()[1]


# ------------------------------------------------------------------------------------------ bad input
def test_bad_records_are_named() -> None:
    with pytest.raises(ValueError, match="no run records"):
        rp.summarise([])
    with pytest.raises(ValueError, match="two records for method 'A', seed 0"):
        rp.summarise([RunRecord("A", 0, {"m": 1.0}), RunRecord("A", 0, {"m": 2.0})])
    with pytest.raises(ValueError, match="record 'B' seed 1 has metrics"):
        rp.summarise([RunRecord("A", 0, {"m": 1.0}), RunRecord("B", 1, {"n": 1.0})])
    with pytest.raises(ValueError, match="weight vectors of different lengths"):
        rp.summarise([RunRecord("A", 0, {"m": 1.0}, weights=[(0, [1.0]), (1, [0.5, 0.5])])])
    with pytest.raises(TypeError, match="expected RunRecord objects, got dict"):
        rp.summarise([{"method": "A"}])  # type: ignore[list-item]


def test_write_report_rejects_unknown_plot_metrics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plot_metrics"):
        rp.write_report(_records(), tmp_path, command="x", versions={}, plot_metrics=("acc_left", "nope"))


# ------------------------------------------------------------------------------------------ outputs
def test_runs_csv_round_trip(tmp_path: Path) -> None:
    recs = _records()
    recs[1] = dataclasses.replace(recs[1], error='diverged, "quoted", at step 3')
    path = tmp_path / "runs.csv"
    rp.write_runs_csv(recs, path)
    back = rp.read_runs_csv(path)
    assert len(back) == len(recs)
    for a, b in zip(recs, back):
        assert _same_record(a, b), (a, b)
    header = path.read_text().splitlines()[0].split(",")
    assert {"method", "seed", "delta_m", "time_ratio", "memory_ratio", "metric:acc_left", "w_final_1"} <= set(
        header
    )
    assert len(path.read_text().splitlines()) == 1 + len(recs)


def test_report_markdown_content(tmp_path: Path) -> None:
    cmd = ["molearn", "compare", "--methods", "EW,MGDA", "--out", "my dir"]
    versions = {"python": "3.11.2", "torch": "2.3.0+cpu", "molearn": "0.1.0"}
    paths = rp.write_report(
        _records(), tmp_path, command=cmd, versions=versions, notes="short schedule (3 epochs)", plot=False
    )
    assert set(paths) == {"report.md", "runs.csv"}
    md = paths["report.md"].read_text()
    assert "molearn compare --methods EW,MGDA --out 'my dir'" in md  # exact, shell-quoted
    for pkg, ver in versions.items():
        assert f"| {pkg} | {ver} |" in md
    assert "short schedule (3 epochs)" in md
    assert "lower is better" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert rows[0].startswith("| 1 | MGDA | 3 | -1 ± 2.5 |")  # sorted: MGDA (Δm -1) before EW (Δm 2)
    assert rows[1].startswith("| 2 | EW | 3 | 2 ± 2.5 |")
    assert "| 2× [0.36, 11] ⚠ |" in rows[0]  # time ratios 2, 1, 4: geometric mean 2, interval wider than 2
    assert "| 4330 ± 8000 |" in rows[0]  # time per step in ms: 2000, 3000, 8000 (3 significant digits)
    assert "| 1.96× [1, 3.7] ⚠ |" in rows[0]  # memory ratios 1.5, 2, 2.5
    assert "| 1× [1, 1] |" in rows[1]
    assert "⚠ Cost intervals wider than their value (noisy timing or memory): MGDA." in md
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert "acc_left" in header and "acc_right" in header and "time/step ÷ EW" in header


def test_plots_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    recs = _records()
    paths = rp.write_report(
        recs, tmp_path, command="molearn compare", versions={}, task_names=["left", "right"]
    )
    for name in ("tasks.png", "weights.png", "cost.png"):
        assert paths[name].exists() and paths[name].stat().st_size > 1000
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in paths["report.md"].read_text()
    # no weights anywhere -> no weights.png; one metric -> no task plot; cost plot still written
    bare = [RunRecord("A", 0, {"m": 1.0}, delta_m=1.0), RunRecord("B", 0, {"m": 2.0}, delta_m=math.nan)]
    out = rp.write_report(bare, tmp_path / "bare", command="c", versions={})
    assert set(out) == {"report.md", "runs.csv", "cost.png"}


def test_default_versions() -> None:
    v = rp.collect_versions()
    assert {"python", "torch", "molearn"} <= set(v)


# ------------------------------------------------------------------------------------------ new checks
@pytest.mark.parametrize("seed", range(20))
def test_ratio_intervals_are_never_negative(seed: int) -> None:
    import random

    rng = random.Random(seed)
    n = rng.randint(2, 5)
    values = [rng.lognormvariate(0.0, rng.uniform(0.01, 3.0)) for _ in range(n)]  # wild spread too
    gm, low, high, k = rp.ratio_ci(values)
    assert k == n and 0 < low <= gm <= high
    assert gm == pytest.approx(math.exp(sum(math.log(v) for v in values) / n))


def test_ratio_ci_edge_cases() -> None:
    assert rp.ratio_ci([])[3] == 0 and math.isnan(rp.ratio_ci([])[0])
    gm, low, high, n = rp.ratio_ci([2.0, math.nan, 0.0, -1.0])  # only positive finite values count
    assert (gm, n) == (2.0, 1) and math.isnan(low) and math.isnan(high)
    assert not rp.is_wide(rp.ratio_ci([1.0, 1.1, 0.9])) and rp.is_wide(rp.ratio_ci([0.1, 10.0]))


def test_selection_columns_and_round_trip(tmp_path: Path) -> None:
    recs = [
        RunRecord(
            "EW",
            s,
            {"a": 0.5},
            delta_m=1.0,
            epoch=3,
            epochs=5,
            last_metrics={"a": 0.4},
            last_delta_m=2.0,
            time_per_step=1.0,
        )
        for s in (0, 1)
    ]
    md = rp.format_markdown(recs, command="c", versions={})
    assert "| rank | method | seeds | Δm% ↓ | Δm% last | epoch | a |" in md
    assert md.count("| 1 | EW | 2 | 1 ± 0 | 2 ± 0 | 3 | 0.5 ± 0 |") == 1
    rp.write_runs_csv(recs, tmp_path / "runs.csv")
    back = rp.read_runs_csv(tmp_path / "runs.csv")
    assert all(_same_record(a, b) for a, b in zip(recs, back))


def test_many_metrics_get_their_own_table() -> None:
    metrics = {f"acc_{i}": 0.5 + i / 100 for i in range(14)}
    recs = [RunRecord("EW", 0, metrics, delta_m=0.0), RunRecord("MoCo", 0, metrics, delta_m=1.0)]
    md = rp.format_markdown(recs, command="c", versions={})
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert "acc_0" not in header
    assert "## Per-metric test results" in md and "| acc_13 | 0.63 | 0.63 |" in md
    # methods without weights (a direction, e.g. MoCo) are named
    assert "absent from the weights plot): EW, MoCo." in md


def test_plots_name_the_metrics_and_show_the_single_task_point(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sums = rp.summarise(_records())
    fig = rp.plot_tasks(sums, "acc_left", "acc_right", tmp_path / "t.png",
                        baselines={"acc_left": 0.85, "acc_right": 0.72},
                        labels={"acc_left": "left accuracy (higher is better)"})  # fmt: skip
    ax = fig.axes[0]
    assert ax.get_xlabel() == "left accuracy (higher is better)" and ax.get_ylabel() == "acc_right"
    assert "single-task" in [t.get_text() for t in ax.get_legend().get_texts()]
    cost = rp.plot_cost(sums, tmp_path / "c.png")
    assert cost.axes[0].get_xscale() == "log"
    labels = [t.get_text() for t in cost.axes[0].texts]
    assert "MGDA ⚠" in labels and "EW" in labels


def test_labels_do_not_overlap() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    pts = [(1.0 + 0.01 * i, 2.0 + 0.01 * (i % 3)) for i in range(8)]  # a tight cluster
    names = ["EW", "MGDA", "PCGrad", "CAGrad", "NashMTL", "FAMO", "MoCo", "MoDo"]
    ax.plot(*zip(*pts), "o")
    ax.set_xlim(0, 3)
    ax.set_ylim(0, 4)
    anns = rp.place_labels(ax, pts, names)
    renderer = rp._renderer(fig)
    boxes = [a.get_window_extent(renderer) for a in anns]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert rp._overlap(a, b) == 0.0
