"""``experiments/mimo`` at toy size: every method runs, the table and files come out, bad input is refused;
the imbalance probe of AV-Fashion."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from experiments import common
from molearn.datasets import AVData

mimo = common.load("mimo")


def test_quick_run_writes_outputs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert mimo.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()
    for m in mimo.METHODS:
        assert f"| {m} |" in text
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(mimo.METHODS)  # 2 seeds in --quick
    for r in rows:
        assert 0.0 <= float(r["acc_fused"]) <= 1.0 and float(r["step_ms"]) > 0
    assert "× joint" in capsys.readouterr().out


def test_run_summary_and_reference_rows() -> None:
    res = mimo.run(data="toy", methods=("joint", "unimodal", "mimo"), seeds=2, epochs=8, n_per_class=30)
    by = {r["method"]: r for r in res.summary}
    assert by["joint"]["step_vs_joint"] == pytest.approx(1.0)
    assert by["unimodal"]["weak_gap"] == pytest.approx(0.0, abs=1e-12)
    assert res.weak in res.modalities
    # the toy's first modality is the informative one: trained alone it beats chance clearly
    strong = next(m for m in res.modalities if m != res.weak)
    assert by["unimodal"][f"acc_{strong}"] > 0.3  # chance is 0.1
    assert all(math.isfinite(r["acc_fused"]) for r in res.summary)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        mimo.run(data="toy", methods=("joint", "unimodal", "nope"))
    with pytest.raises(ValueError, match="must include 'joint'"):
        mimo.run(data="toy", methods=("mimo",))
    with pytest.raises(ValueError, match="unknown data set"):
        mimo.load_data("imagenet", n_per_class=2)


def _tiny_av(n_per_class: int, seed: int) -> AVData:
    g = torch.Generator().manual_seed(seed)
    n = 10 * n_per_class
    label = torch.arange(n) % 10
    return AVData(torch.rand(n, 1, 28, 28, generator=g), torch.randn(n, 40, 64, generator=g), label)


def test_imbalance_probe_runs_on_tiny_data() -> None:
    tr, te = _tiny_av(4, 0), _tiny_av(2, 1)
    rows = mimo.imbalance_probe(tr, te, epochs=2, dim=8, batch_size=16)
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    keys = {"image_alone", "audio_alone", "joint_fused", "joint_image", "joint_audio"}
    assert keys <= set(rows[0]) and all(0 <= rows[-1][k] <= 1 for k in keys)


def test_paired_differences_by_seed() -> None:
    runs = []
    for s in range(4):
        runs.append({"method": "mimo", "seed": s, "acc_fused": 0.80 + 0.01 * s, "acc_audio": 0.5})
        runs.append({"method": "joint", "seed": s, "acc_fused": 0.70 + 0.01 * s, "acc_audio": 0.5 + 0.1 * s})
    runs.append({"method": "joint", "seed": 9, "acc_fused": 0.0, "acc_audio": 0.0})  # no mimo partner
    (row,) = mimo.paired(runs, ("joint", "mimo"), ["image", "audio"], "audio")
    assert row["method"] == "joint" and row["seeds"] == 4  # seed 9 has no pair and is left out
    assert row["d_fused"] == pytest.approx(0.10) and row["d_fused_ci"] == pytest.approx(0.0, abs=1e-9)
    assert row["sep_fused"] == 1  # constant +10 points: separated, mimo better
    assert row["d_weak"] == pytest.approx(-0.15) and row["sep_weak"] == 0  # -0, -10, -20, -30: CI spans 0
    res = mimo.MimoResult(runs, [], ["image", "audio"], "audio", paired=[row])
    assert mimo.verdict(res).startswith("supported") and "fused accuracy: above joint" in mimo.verdict(res)
    res.paired = [{**row, "sep_fused": 0}]
    assert mimo.verdict(res).startswith("not resolved at this scale")
    res.paired = [{**row, "sep_fused": -1}]
    assert mimo.verdict(res).startswith("contradicted")


def test_checkpoint_resumes_matching_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    ck = tmp_path / "ck.jsonl"
    kw = dict(data="toy", methods=("joint", "unimodal", "mimo"), seeds=2, epochs=1, n_per_class=10)
    first = mimo.run(**kw, checkpoint=ck)
    assert len(ck.read_text().splitlines()) == 6
    with open(ck, "a") as fh:
        fh.write('{"method": "joint", "se')  # a line cut off by a kill is skipped
    log = io.StringIO()
    again = mimo.run(**kw, checkpoint=ck, log=log)
    assert "6 of 6 runs reused" in log.getvalue()
    assert again.runs == first.runs and [r["method"] for r in again.paired] == ["joint", "unimodal"]
    other = mimo.run(**{**kw, "epochs": 2}, checkpoint=ck, log=io.StringIO())  # other settings: trained
    assert all(r["steps"] == 2 * first.runs[0]["steps"] for r in other.runs)
