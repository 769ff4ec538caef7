"""The dense and multi-label meters on fixed predictions against values computed by hand (MTAN / LibMTL
definitions: confusion matrix over the split, valid-pixel masks, angle statistics; FAMO's F1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from molearn.metrics import (
    DepthMeter,
    Meter,
    MeterGroup,
    MultiLabelMeter,
    NormalMeter,
    SegmentationMeter,
)


def _scores(pred: list[int], classes: int) -> Tensor:
    """(1, C, 1, W) scores whose arg-max is ``pred``."""
    return torch.nn.functional.one_hot(torch.tensor(pred), classes).T.reshape(1, classes, 1, -1).float()


# ------------------------------------------------------------------------------------------ segmentation
def test_segmentation_confusion_matrix_over_batches() -> None:
    m = SegmentationMeter(3)
    m.add(_scores([0, 1, 1, 2], 3), torch.tensor([[[0, 0, 1, -1]]]))  # the last pixel is ignored
    m.add(_scores([2, 1, 1, 0], 3), torch.tensor([[[2, 1, 0, 1]]]))
    # confusion (rows = truth): [[1, 2, 0], [1, 2, 0], [0, 0, 1]]; IoU = TP / (row + col - TP)
    # = 1/4, 2/5, 1/1 -> mIoU 0.55; pixel accuracy 4/7
    out = m.compute()
    assert out == {"miou": pytest.approx(0.55), "pix_acc": pytest.approx(4 / 7)}
    assert isinstance(m, Meter)


def test_segmentation_class_absent_from_the_split_is_left_out() -> None:
    m = SegmentationMeter(4, prefix="seg_")
    m.add(_scores([0, 1, 1, 2], 4), torch.tensor([[[0, 0, 1, -1]]]))
    m.add(_scores([2, 1, 1, 0], 4), torch.tensor([[[2, 1, 0, 1]]]))
    out = m.compute()
    assert out["seg_miou"] == pytest.approx(0.55) and out["seg_pix_acc"] == pytest.approx(4 / 7)
    # targets outside [0, C) count as ignored; an empty meter gives NaN
    m2 = SegmentationMeter(2)
    m2.add(_scores([0, 1], 2), torch.tensor([[[5, -1]]]))
    assert all(math.isnan(v) for v in m2.compute().values())


def test_segmentation_shape_check() -> None:
    with pytest.raises(ValueError, match="scores"):
        SegmentationMeter(3).add(torch.zeros(1, 2, 1, 4), torch.zeros(1, 1, 4, dtype=torch.long))


# ------------------------------------------------------------------------------------------ depth
def test_depth_errors_over_valid_pixels() -> None:
    m = DepthMeter()
    pred, target = torch.tensor([1.0, 2.0, 5.0, 3.0]), torch.tensor([2.0, 0.0, 4.0, 3.0])
    m.add(pred.view(1, 1, 1, 4), target.view(1, 1, 1, 4))
    m.add(torch.tensor([1.0]).view(1, 1, 1), torch.tensor([0.5]).view(1, 1, 1))  # (N, H, W) works too
    # valid pixels: |1-2|, |5-4|, 0, |1-0.5| -> 2.5 / 4; relative: 1/2, 1/4, 0, 1 -> 1.75 / 4
    assert m.compute() == {"abs_err": pytest.approx(0.625), "rel_err": pytest.approx(0.4375)}
    assert all(math.isnan(v) for v in DepthMeter().compute().values())


# ------------------------------------------------------------------------------------------ normals
def _normals(angles_deg: list[float], scale: float = 2.0) -> tuple[Tensor, Tensor]:
    """Targets (0, 0, 1) and predictions rotated by the angles in the x-z plane (not unit length)."""
    a = torch.deg2rad(torch.tensor(angles_deg, dtype=torch.float64))
    pred = torch.stack([torch.sin(a), torch.zeros_like(a), torch.cos(a)]) * scale
    target = torch.zeros(3, len(angles_deg), dtype=torch.float64)
    target[2] = 1.0
    return pred.view(1, 3, 1, -1).float(), target.view(1, 3, 1, -1).float()


def test_normal_angle_statistics() -> None:
    m = NormalMeter()
    pred, target = _normals([0.0, 10.0, 20.0, 45.0, 90.0, 120.0, 33.0])
    target[..., -1] = 0.0  # an invalid pixel (target summed over channels = 0): left out
    m.add(pred, target)
    out = m.compute()
    # angles 0, 10, 20, 45, 90, 120: mean 47.5, median (20 + 45) / 2, 2 / 3 / 3 of 6 below the thresholds
    assert out["mean_angle"] == pytest.approx(47.5, abs=1e-4)
    assert out["median_angle"] == pytest.approx(32.5, abs=1e-3)
    assert out["within_11_25"] == pytest.approx(2 / 6)
    assert out["within_22_5"] == pytest.approx(3 / 6)
    assert out["within_30"] == pytest.approx(3 / 6)
    pred2, target2 = _normals([29.0], scale=0.5)
    m.add(pred2, target2)  # 7 angles: the median is the 4th, 29°
    out = m.compute()
    assert out["median_angle"] == pytest.approx(29.0, abs=1e-3)
    assert out["mean_angle"] == pytest.approx((285.0 + 29.0) / 7, abs=1e-4)
    assert out["within_30"] == pytest.approx(4 / 7)


def test_normal_median_from_many_pixels_matches_torch() -> None:
    g = torch.Generator().manual_seed(0)
    angles = (torch.rand(1001, generator=g) * 180).tolist()
    pred, target = _normals(angles)
    m = NormalMeter()
    m.add(pred[..., :500], target[..., :500])
    m.add(pred[..., 500:], target[..., 500:])
    exact = torch.tensor(angles, dtype=torch.float64).median().item()  # odd count: the middle value
    out = m.compute()
    assert out["median_angle"] == pytest.approx(exact, abs=2e-3)
    assert out["mean_angle"] == pytest.approx(sum(angles) / len(angles), abs=1e-3)


# ------------------------------------------------------------------------------------------ multi-label
def test_multilabel_accuracy_and_f1() -> None:
    m = MultiLabelMeter(["a", "b", "c"])
    # a: predicted 1, 0, 1, 0 (logit 0 predicts 0) vs 1, 1, 0, 0 -> TP 1 FP 1 FN 1 TN 1: acc 1/2, F1 1/2
    # b: all predicted 1 vs 1, 1, 1, 0 -> TP 3, FP 1: acc 3/4, F1 6/7
    # c: never present, never predicted: acc 1, F1 0
    logits = [torch.tensor([[1.0], [0.0], [2.0], [-2.0]]), torch.full((4, 1), 3.0), torch.full((4, 1), -1.0)]
    targets = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.float32)
    m.add(logits[:], targets[:])
    out = m.compute()
    assert out["acc_a"] == pytest.approx(0.5) and out["f1_a"] == pytest.approx(0.5)
    assert out["acc_b"] == pytest.approx(0.75) and out["f1_b"] == pytest.approx(6 / 7)
    assert out["acc_c"] == 1.0 and out["f1_c"] == 0.0
    # a second batch as one (N, K) tensor: c now has one TP -> F1 2 / (2 + 0 + 0) = 1 ... and a FP for a
    m.add(torch.tensor([[1.0, -1.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    out = m.compute()
    assert out["f1_c"] == 1.0 and out["acc_c"] == 1.0
    assert out["f1_a"] == pytest.approx(2 / (2 + 2 + 1)) and out["acc_a"] == pytest.approx(2 / 5)
    assert out["acc_b"] == pytest.approx(4 / 5)


def test_multilabel_choice_of_metrics_and_checks() -> None:
    m = MultiLabelMeter(["x", "y"], metrics=("f1",))
    m.add(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    assert m.compute() == {"f1_x": 1.0, "f1_y": 0.0}
    with pytest.raises(ValueError, match="metrics"):
        MultiLabelMeter(["x"], metrics=("auc",))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        m.add(torch.zeros(3, 3), torch.zeros(3, 3))


# ------------------------------------------------------------------------------------------ as meters
class _Fixed(torch.nn.Module):
    """A 'model' returning fixed outputs (and counting its calls)."""

    def __init__(self, outputs: list[Tensor]) -> None:
        super().__init__()
        self.outputs = outputs
        self.calls = 0

    def forward(self, x: Tensor) -> list[Tensor]:
        self.calls += 1
        return self.outputs


def test_meter_group_runs_the_model_once_per_batch() -> None:
    seg = _scores([0, 1, 1, 2], 3)
    depth = torch.tensor([1.0, 2.0, 5.0, 3.0]).view(1, 1, 1, 4)
    normal, normal_t = _normals([0.0, 10.0, 20.0, 45.0])
    model = _Fixed([seg, depth, normal])
    targets = {
        "segmentation": torch.tensor([[[0, 0, 1, -1]]]),
        "depth": torch.tensor([2.0, 0.0, 4.0, 3.0]).view(1, 1, 1, 4),
        "normal": normal_t,
    }
    group = MeterGroup(
        [SegmentationMeter(3), DepthMeter(), NormalMeter()], extra=lambda v: {"sum": v["miou"] + v["abs_err"]}
    )
    group.update(model, (torch.zeros(1), targets))
    out = group.compute()
    assert model.calls == 1
    # segmentation: confusion [[1, 1, 0], [0, 1, 0], [0, 0, 0]]: IoU 1/2, 1/2 (class 2 absent) -> 0.5
    assert out["miou"] == pytest.approx(0.5) and out["pix_acc"] == pytest.approx(2 / 3)
    assert out["abs_err"] == pytest.approx(2 / 3) and out["rel_err"] == pytest.approx(0.75 / 3)
    assert out["mean_angle"] == pytest.approx(18.75, abs=1e-4)
    assert out["sum"] == pytest.approx(0.5 + 2 / 3)
    single = DepthMeter(output=1, target="depth")
    single.update(model, (torch.zeros(1), targets))
    assert single.compute()["abs_err"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="different prefixes"):
        clash = MeterGroup([DepthMeter(), DepthMeter()])
        clash.update(model, (torch.zeros(1), targets))
        clash.compute()
