"""Meters of the dense-prediction and multi-label benchmarks: segmentation (mIoU, pixel accuracy), depth
(absolute and relative error), surface normals (angle error statistics) and multi-label classification
(per-attribute accuracy and F1).

The definitions are those of MTAN (Liu, Johns & Davison, CVPR 2019, github lorenmt/mtan
``im2im_pred/utils.py``), also used by LibMTL (``examples/nyu/utils.py``), Nash-MTL and FAMO:

- segmentation: a confusion matrix accumulated over **the whole split** (pixels whose target is in
  ``[0, C)``; −1 marks an ignored pixel); IoU of class c = TP / (TP + FP + FN), mIoU their mean, pixel
  accuracy = Σ TP / valid pixels. A class absent from both targets and predictions of the split has
  no IoU and is left out of the mean (the references would return NaN; on the real splits every class
  occurs, so the numbers agree);
- depth: over valid pixels (target summed over channels ≠ 0, the references' mask), mean |ŷ − y| and
  mean |ŷ − y| / y over all valid pixels of the split (LibMTL weighs batches by their valid pixels,
  which is the same);
- normals: over valid pixels (target summed over channels ≠ 0), the angle between the L2-normalised
  prediction and the target in degrees; its mean, its median and the fractions below 11.25°, 22.5° and
  30° over the split (LibMTL concatenates the split's angles; MTAN / Nash-MTL / FAMO average per-batch
  medians, which differs). The median comes from a histogram of 0.001° bins kept on the device, so it is
  exact to within 0.0005°; everything else is exact;
- multi-label: per attribute, prediction = logit > 0 (FAMO's ``sigmoid > 0.5``), accuracy and
  F1 = 2 TP / (2 TP + FP + FN) (FAMO's ``CelebaMetrics`` up to its 1e-8 guards; 0 when the attribute is
  neither present nor predicted).

Every meter is a :class:`molearn.metrics.Meter` (``update(model, batch)`` runs the model on a batch
``(inputs, targets)`` and picks its output and target) and also takes predictions directly
(``add(prediction, target)``); :class:`MeterGroup` runs the model once for several meters. Sums stay on
the predictions' device until :meth:`compute`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ANGLE_THRESHOLDS",
    "DepthMeter",
    "MeterGroup",
    "MultiLabelMeter",
    "NormalMeter",
    "SegmentationMeter",
    "pick",
]

#: the angle thresholds (degrees) of the normal metrics ``within_11_25``, ``within_22_5``, ``within_30``
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
_HIST_BIN = 1e-3  # degrees per bin of the angle histogram (median exact to half a bin)


def pick(values: Any, key: int | str | None) -> Any:
    """``values[key]`` (a list / tuple / dict of per-task tensors), or ``values`` itself for ``key=None``."""
    if key is None:
        return values
    try:
        return values[key]
    except (KeyError, IndexError, TypeError) as err:
        raise KeyError(f"cannot take {key!r} from a {type(values).__name__} ({err})") from None


def _split(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError("these meters take batches (inputs, targets)")
    return batch[0], batch[1]


class _Base:
    output: int | str | None
    target: int | str | None

    def update(self, model: Any, batch: Any) -> None:
        """Run ``model`` on the batch's inputs and accumulate its output ``output`` against the batch's
        target ``target`` (the :class:`~molearn.metrics.Meter` protocol)."""
        x, y = _split(batch)
        self.add(pick(model(x), self.output), pick(y, self.target))

    def add(self, prediction: Any, target: Any) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


def _names(prefix: str, names: Sequence[str]) -> list[str]:
    return [f"{prefix}{n}" for n in names]


class SegmentationMeter(_Base):
    """mIoU and pixel accuracy of a segmentation from a confusion matrix accumulated over the split.

    Args:
        num_classes: C; the prediction is (N, C, H, W) scores (the arg-max is the predicted class).
        ignore_index: target value of ignored pixels (any target outside ``[0, C)`` is ignored).
        output: which model output is the segmentation (index into the model's list; None: the output).
        target: which target of the batch (key or index; None: the targets themselves).
        prefix: prepended to the metric names ``miou``, ``pix_acc``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = -1,
        output: int | str | None = 0,
        target: int | str | None = "segmentation",
        prefix: str = "",
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.output, self.target, self.prefix = output, target, prefix
        self.matrix: Tensor | None = None

    def add(self, prediction: Tensor, target: Tensor) -> None:
        c = self.num_classes
        if prediction.dim() != target.dim() + 1 or prediction.shape[1] != c:
            raise ValueError(
                f"segmentation scores (N, {c}, ...) and targets (N, ...), got {tuple(prediction.shape)} "
                f"and {tuple(target.shape)}"
            )
        with torch.no_grad():
            pred = prediction.argmax(1).reshape(-1)
            gt = target.reshape(-1).to(torch.int64)
            keep = (gt >= 0) & (gt < c) & (gt != self.ignore_index)
            counts = torch.bincount(gt[keep] * c + pred[keep], minlength=c * c).reshape(c, c)
        self.matrix = counts if self.matrix is None else self.matrix + counts

    def compute(self) -> dict[str, float]:
        names = _names(self.prefix, ("miou", "pix_acc"))
        if self.matrix is None or int(self.matrix.sum()) == 0:
            return dict.fromkeys(names, math.nan)
        h = self.matrix.to(torch.float64)
        tp = h.diagonal()
        union = h.sum(0) + h.sum(1) - tp
        present = union > 0
        miou = (tp[present] / union[present]).mean()
        return {names[0]: float(miou), names[1]: float(tp.sum() / h.sum())}


def _valid(target: Tensor) -> Tensor:
    """The references' mask of valid pixels: the target summed over its channels is not 0, (N, 1, H, W)."""
    return target.sum(dim=1, keepdim=True) != 0


class DepthMeter(_Base):
    """Absolute and relative depth error over the valid pixels of the split (target ≠ 0).

    ``prediction`` and ``target`` are (N, 1, H, W) (or (N, H, W)); ``rel_err`` divides by the target, as the
    references do (depths are positive in the NYUv2 and Cityscapes releases). Metric names ``abs_err``,
    ``rel_err`` with ``prefix``.
    """

    def __init__(
        self, *, output: int | str | None = 1, target: int | str | None = "depth", prefix: str = ""
    ) -> None:
        self.output, self.target, self.prefix = output, target, prefix
        self._abs: Tensor | None = None
        self._rel: Tensor | None = None
        self._count: Tensor | None = None

    def add(self, prediction: Tensor, target: Tensor) -> None:
        if target.dim() == 3:
            target = target.unsqueeze(1)
        if prediction.dim() == 3:
            prediction = prediction.unsqueeze(1)
        if prediction.shape != target.shape:
            raise ValueError(f"depth prediction {tuple(prediction.shape)} and target {tuple(target.shape)}")
        with torch.no_grad():
            mask = _valid(target).expand_as(target)
            p = prediction.detach()[mask].to(torch.float64)
            t = target[mask].to(torch.float64)
            err = (p - t).abs()
            s_abs, s_rel, n = err.sum(), (err / t).sum(), mask.sum()
        if self._abs is None or self._rel is None or self._count is None:
            self._abs, self._rel, self._count = s_abs, s_rel, n
        else:
            self._abs, self._rel, self._count = self._abs + s_abs, self._rel + s_rel, self._count + n

    def compute(self) -> dict[str, float]:
        names = _names(self.prefix, ("abs_err", "rel_err"))
        n = 0 if self._count is None else int(self._count)
        if n == 0 or self._abs is None or self._rel is None:
            return dict.fromkeys(names, math.nan)
        return {names[0]: float(self._abs) / n, names[1]: float(self._rel) / n}


class NormalMeter(_Base):
    """Angle error of surface normals over the valid pixels of the split (target summed over channels ≠ 0).

    ``prediction`` and ``target`` are (N, 3, H, W); the prediction is L2-normalised first (the target is
    unit length in the releases). Metrics (with ``prefix``): ``mean_angle``, ``median_angle`` (degrees,
    lower is better) and ``within_11_25``, ``within_22_5``, ``within_30`` (fractions of pixels whose
    error is strictly below the threshold, higher is better).
    """

    def __init__(
        self, *, output: int | str | None = 2, target: int | str | None = "normal", prefix: str = ""
    ) -> None:
        self.output, self.target, self.prefix = output, target, prefix
        self._sum: Tensor | None = None
        self._within: Tensor | None = None
        self._hist: Tensor | None = None
        self.count = 0

    def add(self, prediction: Tensor, target: Tensor) -> None:
        if prediction.shape != target.shape or prediction.dim() < 2:
            raise ValueError(f"normal prediction {tuple(prediction.shape)} and target {tuple(target.shape)}")
        with torch.no_grad():
            pred = F.normalize(prediction.detach().to(torch.float64), p=2, dim=1)
            dot = (pred * target.to(torch.float64)).sum(1, keepdim=True)
            angle = torch.rad2deg(torch.acos(dot[_valid(target)].clamp(-1.0, 1.0)))
            limits = torch.tensor(ANGLE_THRESHOLDS, dtype=torch.float64, device=angle.device)
            within = (angle.unsqueeze(1) < limits).sum(0)
            bins = round(180.0 / _HIST_BIN) + 1
            idx = torch.floor(angle / _HIST_BIN).to(torch.int64).clamp(0, bins - 1)
            hist = torch.bincount(idx, minlength=bins)
            total = angle.sum()
        self.count += int(angle.numel())
        if self._sum is None or self._within is None or self._hist is None:
            self._sum, self._within, self._hist = total, within, hist
        else:
            self._sum, self._within, self._hist = self._sum + total, self._within + within, self._hist + hist

    def compute(self) -> dict[str, float]:
        names = _names(
            self.prefix, ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30")
        )
        if self.count == 0 or self._sum is None or self._within is None or self._hist is None:
            return dict.fromkeys(names, math.nan)
        n = self.count
        cum = self._hist.cumsum(0)
        # numpy's median: the mean of the values of ranks floor((n-1)/2) and ceil((n-1)/2) (0-based);
        # each value is estimated by the centre of its bin
        ranks = torch.tensor([(n - 1) // 2, n // 2], dtype=cum.dtype, device=cum.device)
        bins = torch.searchsorted(cum, ranks, right=True).to(torch.float64)
        median = float(((bins + 0.5) * _HIST_BIN).mean())
        within = (self._within.to(torch.float64) / n).tolist()
        return dict(zip(names, [float(self._sum) / n, median, *within]))


class MultiLabelMeter(_Base):
    """Per-attribute accuracy and F1 of K binary tasks (CelebA), accumulated over the split.

    Args:
        names: the K attribute names (metrics ``acc_<name>`` and ``f1_<name>``).
        metrics: which of ``"acc"``, ``"f1"`` to report.
        threshold: a logit above it predicts 1 (0: FAMO's ``sigmoid(z) > 0.5``).
        output: which model output (None: the model returns the K logits as a list of (N,) / (N, 1)
            tensors or one (N, K) tensor).
        target: which target of the batch (None: the targets, an (N, K) 0/1 tensor or K (N,) tensors).
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        metrics: Sequence[str] = ("acc", "f1"),
        threshold: float = 0.0,
        output: int | str | None = None,
        target: int | str | None = None,
    ) -> None:
        self.names = [str(n) for n in names]
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"attribute names must be non-empty and distinct, got {self.names}")
        unknown = [m for m in metrics if m not in ("acc", "f1")]
        if unknown or not metrics:
            raise ValueError(f"metrics must be among 'acc', 'f1', got {list(metrics)}")
        self.metrics = list(metrics)
        self.threshold = threshold
        self.output, self.target = output, target
        self._counts: Tensor | None = None  # (4, K): TP, FP, FN, TN
        self.count = 0

    def _stack(self, values: Any, what: str) -> Tensor:
        k = len(self.names)
        if isinstance(values, Tensor):
            out = values
        else:
            parts = [torch.as_tensor(v).reshape(len(v), -1) for v in values]
            if any(p.shape[1] != 1 for p in parts):
                raise ValueError(f"{what}: each of the K tensors must be (N,) or (N, 1)")
            out = torch.cat(parts, dim=1)
        if out.dim() != 2 or out.shape[1] != k:
            raise ValueError(f"{what}: expected (N, {k}) or {k} tensors of (N,), got {tuple(out.shape)}")
        return out

    def add(self, prediction: Any, target: Any) -> None:
        z = self._stack(prediction, "predictions")
        y = self._stack(target, "targets").to(z.device)
        if z.shape != y.shape:
            raise ValueError(f"predictions {tuple(z.shape)} and targets {tuple(y.shape)} differ")
        with torch.no_grad():
            p = z.detach() > self.threshold
            t = y > 0.5
            parts = [(p & t).sum(0), (p & ~t).sum(0), (~p & t).sum(0), (~p & ~t).sum(0)]
            counts = torch.stack(parts).to(torch.int64)
        self._counts = counts if self._counts is None else self._counts + counts
        self.count += int(z.shape[0])

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._counts is None or self.count == 0:
            return {f"{m}_{n}": math.nan for m in self.metrics for n in self.names}
        tp, fp, fn, tn = self._counts.to(torch.float64)
        acc = ((tp + tn) / self.count).tolist()
        denom = 2 * tp + fp + fn
        f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(denom)).tolist()
        for m in self.metrics:
            values = acc if m == "acc" else f1
            out.update({f"{m}_{n}": float(v) for n, v in zip(self.names, values)})
        return out


class MeterGroup:
    """Several meters fed by one forward pass: ``update(model, batch)`` runs ``model(inputs)`` once and
    gives each meter its output and target; ``compute()`` merges their results (names must differ).

    ``extra``: an optional ``extra(results) -> {name: value}`` adding derived numbers (a Δm against
    published baselines)."""

    def __init__(self, meters: Sequence[Any], extra: Any = None) -> None:
        self.meters = list(meters)
        if not self.meters:
            raise ValueError("a MeterGroup needs at least one meter")
        self.extra = extra

    def update(self, model: Any, batch: Any) -> None:
        x, y = _split(batch)
        outputs = model(x)
        for m in self.meters:
            m.add(pick(outputs, m.output), pick(y, m.target))

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.meters:
            values: Mapping[str, float] = m.compute()
            clash = set(values) & set(out)
            if clash:
                raise ValueError(f"two meters report {sorted(clash)}; give them different prefixes")
            out.update(values)
        if self.extra is not None:
            out.update(self.extra(out))
        return out
