"""``experiments/merging`` at toy size: evaluation counts, hypervolumes inside the reference box, fronts that
are non-dominated subsets of the evaluated points, and the written files."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from experiments import common
from molearn.pareto import non_dominated_mask

merging = common.load("merging")

QUICK = dict(n_train=600, n_eval=64, n_fw=32, base_steps=10, ft_steps=8, batch_size=64, n_prefs=3,
             fw_steps=2, dense=4, seeds=(0, 1))


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    try:
        return merging.run(merging.Config(**QUICK))
    except FileNotFoundError as exc:  # pragma: no cover - Fashion-MNIST not installed
        pytest.skip(f"Fashion-MNIST not available: {exc}")


def test_evaluation_counts(result) -> None:  # type: ignore[no-untyped-def]
    for s in result.seeds:
        rows = {r["method"]: r for r in s.rows}
        assert rows["dense"]["n_evals"] == 16  # 4 x 4
        # MAP: 12 fit points ((K+1)(K+2) for K = 2) plus at most n_prefs re-evaluated front points
        assert rows["map"]["n_fit"] == 12
        assert 12 < rows["map"]["n_evals"] <= 12 + QUICK["n_prefs"]
        budget = rows["map"]["n_evals"]
        assert rows["sobol"]["n_evals"] == budget
        assert rows["grid"]["n_evals"] == math.isqrt(budget) ** 2 <= budget
        assert rows["ta"]["n_evals"] == rows["ties"]["n_evals"] == budget
        assert rows["fw"]["fw_forward"] == QUICK["fw_steps"] + 1
        assert rows["fw"]["fw_backward"] == QUICK["fw_steps"]
        # one point per evaluation in points.csv's rows
        for m in ("dense", "map", "grid", "sobol", "ta", "ties"):
            assert sum(p["method"] == m for p in s.points) == rows[m]["n_evals"]


def test_hypervolume_and_fronts(result) -> None:  # type: ignore[no-untyped-def]
    box = merging.REF[0] * merging.REF[1]
    for s in result.seeds:
        for r in s.rows:
            assert 0.0 <= r["hv"] <= box
        dense = next(r for r in s.rows if r["method"] == "dense")
        assert dense["hv"] > 0 and dense["hv_ratio"] == pytest.approx(1.0)
        for m in ("dense", "grid", "map"):
            pts = [p for p in s.points if p["method"] == m]
            F = torch.tensor([[p["loss_left"], p["loss_right"]] for p in pts], dtype=torch.float64)
            mask = torch.tensor([p["front"] for p in pts])
            assert mask.any()
            assert torch.equal(mask, non_dominated_mask(F))  # the front is the evaluated points' own
            # every evaluated point is weakly dominated by some front point
            front = F[mask]
            assert all(bool(((front <= f).all(1)).any()) for f in F)
            for p in pts:
                assert 0.0 <= p["err_left"] <= 1.0 and 0.0 <= p["err_right"] <= 1.0
        # the grid's coefficients are in the box [0, 1]^2 and include the corners
        cs = {(p["c1"], p["c2"]) for p in s.points if p["method"] == "dense"}
        assert {(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)} <= cs
    # paired contrasts exist for every comparison, with finite means
    assert {(c["a"], c["b"], c["metric"]) for c in result.contrasts} >= {("map", "grid", "hv"),
                                                                           ("fw", "ta0.3", "sum_loss")}
    assert all(math.isfinite(c["diff"]) for c in result.contrasts)


def test_cli_quick_writes_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    try:
        status = merging.main(["--quick", "--no-plot", "--out", str(tmp_path)])
    except FileNotFoundError as exc:  # pragma: no cover
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    assert status == 0
    text = (tmp_path / "results.md").read_text()
    for m in ("dense", "map", "grid", "sobol", "ta", "ties", "fw"):
        assert f"| {m} |" in text
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 9  # 2 seeds x 9 methods
    assert merging.main(["--quick", "--dense", "1", "--out", str(tmp_path)]) == 2
