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
