"""Per-task metrics and Δm% (per-metric convention of Nash-MTL / FAMO / FairGrad ``delta_fn``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from molearn.metrics import ClassificationMeter, accuracy, delta_m, relative_changes

# NYUv2 single-task baselines (OptMN-Lab/fairgrad experiments/nyuv2/utils.py, from CAGrad):
# mIoU, PixAcc, AbsErr, RelErr, Mean, Median, <11.25, <22.5, <30
NYU_BASE = [0.3830, 0.6376, 0.6754, 0.2780, 25.01, 19.21, 0.3014, 0.5720, 0.6915]
NYU_HIB = [True, True, False, False, False, False, True, True, True]
# Cityscapes (2 tasks): mIoU, PixAcc, AbsErr, RelErr
CITY_BASE = [0.7401, 0.9316, 0.0125, 27.77]
CITY_HIB = [True, True, False, False]


# ------------------------------------------------------------------------------------------ Δm golden
def test_delta_m_zero_at_the_baseline() -> None:
    assert delta_m(NYU_BASE, NYU_BASE, NYU_HIB) == 0.0


def test_delta_m_every_metric_ten_percent_better_is_minus_ten() -> None:
    vals = [b * 1.1 if h else b * 0.9 for b, h in zip(NYU_BASE, NYU_HIB)]
    assert delta_m(vals, NYU_BASE, NYU_HIB) == pytest.approx(-10.0, abs=1e-9)
    worse = [b * 0.9 if h else b * 1.1 for b, h in zip(NYU_BASE, NYU_HIB)]
    assert delta_m(worse, NYU_BASE, NYU_HIB) == pytest.approx(10.0, abs=1e-9)


def test_delta_m_nyuv2_hand_computed() -> None:
    # mIoU +10 % (better: -0.1), AbsErr x0.8 (better: -0.2), Mean angle x1.05 (worse: +0.05),
    # <30 x0.9 (worse: +0.1); the others at the baseline: sum -0.15 over 9 metrics -> -15/9 %
    vals = [0.4213, 0.6376, 0.54032, 0.2780, 26.2605, 19.21, 0.3014, 0.5720, 0.62235]
    assert delta_m(vals, NYU_BASE, NYU_HIB) == pytest.approx(-15.0 / 9.0, abs=1e-9)
    terms = relative_changes(vals, NYU_BASE, NYU_HIB)
    assert terms == pytest.approx([-0.1, 0, -0.2, 0, 0.05, 0, 0, 0, 0.1], abs=1e-12)


def test_delta_m_cityscapes_hand_computed() -> None:
    # AbsErr 0.0150 vs 0.0125: +0.2 (worse); RelErr 13.885 vs 27.77: -0.5 (better) -> (-0.3 / 4) * 100
    vals = [0.7401, 0.9316, 0.0150, 13.885]
    assert delta_m(vals, CITY_BASE, CITY_HIB) == pytest.approx(-7.5, abs=1e-9)


def test_delta_m_matches_the_delta_fn_formula() -> None:
    # delta_fn: (KK ** SIGN * (a - BASE) / BASE).mean() * 100 with KK = -1, SIGN = 1 where higher is better
    rng = np.random.default_rng(0)
    base, sign = np.array(NYU_BASE), np.array(NYU_HIB, dtype=np.int64)
    for _ in range(20):
        a = base * rng.uniform(0.5, 1.5, size=base.shape)
        expected = float(((-1.0) ** sign * (a - base) / base).mean() * 100)
        assert delta_m(a.tolist(), NYU_BASE, NYU_HIB) == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert delta_m(torch.tensor(a), torch.tensor(base), NYU_HIB) == pytest.approx(expected, rel=1e-12)


def test_delta_m_sign_positive_means_worse() -> None:
    # accuracy (higher is better) drops from 0.9 to 0.81: 10 % worse -> +10
    assert delta_m([0.81], [0.9], True) == pytest.approx(10.0)
    # a loss (lower is better) drops from 2.0 to 1.0: 50 % better -> -50
    assert delta_m([1.0], [2.0], False) == pytest.approx(-50.0)


def test_delta_m_mappings_align_by_name() -> None:
    base = {"acc_left": 0.9, "acc_right": 0.8}
    vals = {"acc_right": 0.88, "acc_left": 0.9}  # other order: right is 10 % better
    assert delta_m(vals, base, True) == pytest.approx(-5.0)
    assert delta_m(vals, base, {"acc_left": True, "acc_right": False}) == pytest.approx(5.0)


# ------------------------------------------------------------------------------------------ Δm errors
@pytest.mark.parametrize(
    ("values", "baselines", "hib", "match"),
    [
        ([1.0, 2.0], [1.0], True, "shape mismatch"),
        ([1.0], [1.0], [True, False], "shape mismatch"),
        ([], [], True, "at least one metric"),
        ([1.0, 2.0], [1.0, 0.0], True, "must be positive"),
        ([1.0], [-2.0], False, "must be positive"),
        ([math.nan, 1.0], [1.0, 1.0], True, "non-finite"),
        ([1.0, math.inf], [1.0, 1.0], True, "non-finite"),
        ([1.0], [math.nan], True, "baseline must be finite"),
    ],
)
def test_delta_m_rejects_bad_input(
    values: list[float], baselines: list[float], hib: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        delta_m(values, baselines, hib)  # type: ignore[arg-type]


def test_delta_m_rejects_mismatched_names() -> None:
    with pytest.raises(ValueError, match="different metrics"):
        delta_m({"a": 1.0}, {"b": 1.0}, True)
    with pytest.raises(ValueError, match="does not say the direction"):
        delta_m({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, {"a": True})
    with pytest.raises(ValueError, match="both be mappings"):
        delta_m({"a": 1.0}, [1.0], True)


# ------------------------------------------------------------------------------------------ accuracy
def test_accuracy_counts_argmax_hits() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.1, 0.2]])
    target = torch.tensor([0, 1, 1, 0])
    assert accuracy(logits, target).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="logits"):
        accuracy(logits, target[:3])


def test_meter_accumulates_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(30, 10, generator=g), torch.randn(30, 5, generator=g)
    t = torch.stack([torch.randint(0, 10, (30,), generator=g), torch.randint(0, 5, (30,), generator=g)], 1)
    meter = ClassificationMeter(["left", "right"])
    for lo, hi in ((0, 7), (7, 20), (20, 30)):  # uneven batches, targets as one (N, K) tensor
        meter.update([z1[lo:hi], z2[lo:hi]], t[lo:hi])
    out = meter.compute()
    assert set(out) == {"acc_left", "acc_right", "loss_left", "loss_right"}
    assert out["acc_left"] == pytest.approx((z1.argmax(1) == t[:, 0]).float().mean().item())
    assert out["acc_right"] == pytest.approx((z2.argmax(1) == t[:, 1]).float().mean().item())
    assert out["loss_left"] == pytest.approx(F.cross_entropy(z1, t[:, 0]).item(), rel=1e-6)
    assert out["loss_right"] == pytest.approx(F.cross_entropy(z2, t[:, 1]).item(), rel=1e-6)
    # targets as a list of per-task tensors give the same
    other = ClassificationMeter(2)
    other.update([z1, z2], [t[:, 0], t[:, 1]])
    assert other.compute() == pytest.approx(
        {k.replace("left", "0").replace("right", "1"): v for k, v in out.items()}
    )
    meter.reset()
    assert all(math.isnan(v) for v in meter.compute().values())


def test_meter_rejects_bad_shapes() -> None:
    meter = ClassificationMeter(2)
    with pytest.raises(ValueError, match="expected logits of 2 tasks"):
        meter.update([torch.zeros(3, 4)], torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        meter.update([torch.zeros(3, 4), torch.zeros(3, 4)], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="same N"):
        meter.update([torch.zeros(3, 4), torch.zeros(2, 4)], [torch.zeros(3, dtype=torch.long)] * 2)
    with pytest.raises(ValueError, match="distinct"):
        ClassificationMeter(["a", "a"])


# ------------------------------------------------------------------------------------------ weights, meters
def test_weighted_delta_m() -> None:
    from molearn.metrics import delta_m

    # terms: a 10 % worse (+0.1), b 20 % better (-0.2); weights 3 and 1: 100 (0.3 - 0.2) / 4 = 2.5
    vals, base, hib = {"a": 0.9, "b": 0.8}, {"a": 1.0, "b": 1.0}, {"a": True, "b": False}
    assert delta_m(vals, base, hib, {"a": 3.0, "b": 1.0}) == pytest.approx(2.5)
    assert delta_m(vals, base, hib, {"a": 1.0, "b": 1.0}) == pytest.approx(delta_m(vals, base, hib))
    # weight 0 leaves a metric out entirely, even a non-finite one
    assert delta_m({"a": 0.9, "b": math.nan}, base, hib, {"a": 1.0, "b": 0.0}) == pytest.approx(10.0)
    assert delta_m([0.9, 0.8], [1.0, 1.0], [True, False], [3.0, 1.0]) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="positive weight"):
        delta_m(vals, base, hib, {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match="not among the baselines"):
        delta_m(vals, base, hib, {"c": 1.0})
    with pytest.raises(ValueError, match="weights"):
        delta_m([0.9], [1.0], True, [1.0, 2.0])


def test_mean_meter_means_over_examples() -> None:
    from molearn.metrics import MeanMeter, Meter

    def score(model: object, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred, y = batch
        return {"mae": (pred - y).abs(), "acc": (pred.round() == y).float()}

    meter = MeanMeter(score)
    assert isinstance(meter, Meter)
    meter.update(None, (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 5.0])))  # |e| 0, 0, 2
    meter.update(None, (torch.tensor([0.0]), torch.tensor([1.0])))  # |e| 1: a short last batch counts once
    out = meter.compute()
    assert out["mae"] == pytest.approx(3.0 / 4) and out["acc"] == pytest.approx(2.0 / 4)
    assert MeanMeter(score).compute() == {}
    with pytest.raises(TypeError, match="mapping"):
        MeanMeter(lambda m, b: [1.0]).update(None, None)  # type: ignore[arg-type, return-value]
