"""``experiments/alignment``: the report's statistics on fixed records, and (slow) a real quick run."""

from __future__ import annotations

import math

import pytest

from experiments import common

alignment = common.load("alignment")

S = alignment.Settings(objectives=("a", "b"), methods=("ew", "mgda"), seeds=(0, 1, 2),
                       merge_objectives=("a", "b"))


def _train(seed: int, recipe: str, a: float, b: float, cpu: float, mem: float) -> dict:
    return {"kind": "train", "seed": seed, "recipe": recipe, "steps": 4, "loss": {"a": a, "b": b},
            "accuracy": {"a": 0.5, "b": 1.0}, "cpu_s_per_step": cpu, "wall_s_per_step": cpu,
            "peak_mib": 1000.0, "extra_mib": mem, "final_weights": None}


def _records() -> list[dict]:
    out = []
    for s in S.seeds:
        out.append(_train(s, "ew", 0.6, 0.6 + 0.01 * s, 2.0, 100.0))
        out.append(_train(s, "mgda", 0.5, 0.7 + 0.01 * s, 4.0 + s, 150.0))
        out.append(_train(s, "linear-a", 0.4, 0.8, 2.0, 100.0))
        rows = {"dense": {"n_evals": 16, "hv": 0.2, "hv_ratio": 1.0},
                "map": {"n_evals": 16, "hv": 0.19 + 0.001 * s, "hv_ratio": (0.19 + 0.001 * s) / 0.2},
                "grid": {"n_evals": 16, "hv": 0.18, "hv_ratio": 0.9}}
        out.append({"kind": "merge", "seed": s, "recipe": "map", "rows": rows, "r2": [1.0, 1.0],
                    "points": [{"seed": s, "method": "map", "c": [0.5, 0.5], "f": [0.6, 0.6]}]})
    return out


def test_jobs_cover_every_recipe_and_seed() -> None:
    jobs = alignment.jobs(S)
    assert [j for j in jobs if j[0] == "merge"] == [("merge", s, "map") for s in S.seeds]
    assert {(s, r) for k, s, r in jobs if k == "train"} == {
        (s, r) for s in S.seeds for r in ("linear-a", "linear-b", "ew", "mgda")}


def test_summary_and_contrasts() -> None:
    rows = {r["recipe"]: r for r in alignment.summary(_records(), S)}
    assert set(rows) == {"linear-a", "ew", "mgda"}  # linear-b has no record
    assert rows["mgda"]["seeds"] == 3 and rows["mgda"]["loss_a"].startswith("0.500 ± 0.000")
    assert rows["ew"]["worst_loss"].startswith("0.610 ± ")  # max(a, b) per seed: 0.60, 0.61, 0.62
    c = {r["recipe"]: r for r in alignment.contrasts(_records(), S)}
    assert "ew" not in c
    # mgda - ew, mean over the objectives: ((0.5 + 0.7 + .01s) - (0.6 + 0.6 + .01s)) / 2 = 0 exactly per seed
    assert c["mgda"]["d_mean_loss"] == "0.000 ± 0.000"
    assert c["mgda"]["d_worst_loss"] == "0.100 ± 0.000"  # (0.7 + .01s) - (0.6 + .01s)
    t = common.t_quantile(2) * 1.0 / math.sqrt(3)  # cpu ratios 2, 2.5, 3: mean 2.5, sd 0.5
    assert c["mgda"]["cpu_ratio"] == f"2.50 ± {t * 0.5:.2f}"
    assert c["mgda"]["extra_mem_ratio"] == "1.50 ± 0.00"


def test_merge_summary_pairs_map_with_grid() -> None:
    rows = {r["method"]: r for r in alignment.merge_summary(_records())}
    assert rows["dense"]["hv_ratio"] == "1.0000 ± 0.0000"
    assert rows["map - grid (paired)"]["hv"].startswith("0.0110 ± ")
    assert alignment.merge_summary([r for r in _records() if r["kind"] == "train"]) == []


def test_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = common.Outputs(tmp_path)
    text = alignment.write(_records(), S, files, no_plot=True)
    assert "| mgda | ew | 3 |" in text
    for name in ("results.md", "summary.csv", "contrasts.csv", "merge_points.csv"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_quick_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2 at 2 steps: every job writes a record; MAP's evaluation counts match the grid's."""
    pytest.importorskip("peft")
    s = alignment.Settings(**alignment.QUICK)
    records = alignment.run(s, tmp_path)
    train = [r for r in records if r["kind"] == "train"]
    assert {r["recipe"] for r in train} == set(alignment.recipes(s))
    assert all(math.isfinite(v) for r in train for v in r["loss"].values())
    assert all(r["steps"] == 2 and r["cpu_s_per_step"] > 0 for r in train)
    (merge,) = [r for r in records if r["kind"] == "merge"]
    rows = merge["rows"]
    assert rows["dense"]["n_evals"] == s.dense ** 2
    assert 12 < rows["map"]["n_evals"] <= 12 + s.n_prefs
    assert rows["grid"]["n_evals"] == math.isqrt(rows["map"]["n_evals"]) ** 2
    assert len(merge["points"]) == sum(v["n_evals"] for v in rows.values())
