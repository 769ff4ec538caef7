"""Late-fusion multi-modal classifier whose fused and uni-modal losses are objectives for molearn.

One encoder per modality, one linear uni-modal head per encoder and one linear fusion head on the
concatenation of the encoders' features (the "concat" fusion of OGM-GE, Peng et al., CVPR 2022, and the
late-fusion setting of MIMO, Fernando et al., arXiv 2511.06686, 2025). :func:`objectives` returns the
(1 + M,) loss vector ``[L_fused, L_1, ..., L_M]`` that :class:`molearn.Balancer` and the methods take.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["FusionOutput", "LateFusion", "check_batch", "objectives"]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class FusionOutput:
    """What :meth:`LateFusion.forward` returns: fused logits (N, C), per-modality logits of the uni-modal
    heads (N, C) and the encoders' features (N, d_m), both keyed by modality name in model order."""

    fused: Tensor
    unimodal: dict[str, Tensor]
    features: dict[str, Tensor]


def check_batch(
    modalities: tuple[str, ...], inputs: Mapping[str, Tensor], labels: Tensor | None = None
) -> int:
    """Validate one multi-modal batch and return its size.

    Raises a ValueError naming the problem for a missing or unknown modality and for batch sizes that
    differ between modalities (or from the labels), a TypeError for a non-tensor input.
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping modality -> tensor, got {type(inputs).__name__}")
    missing = [m for m in modalities if m not in inputs]
    if missing:
        raise ValueError(f"modality {missing[0]!r} is missing from the batch (got {sorted(inputs)})")
    unknown = [m for m in inputs if m not in modalities]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r} in the batch (the model has {list(modalities)})")
    sizes = {}
    for m in modalities:
        x = inputs[m]
        if not isinstance(x, Tensor):
            raise TypeError(f"modality {m!r}: expected a tensor, got {type(x).__name__}")
        if x.dim() == 0:
            raise ValueError(f"modality {m!r}: expected a batch (leading dimension), got a scalar")
        sizes[m] = int(x.shape[0])
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ between modalities: {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("empty batch")
    if labels is not None:
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a tensor, got {type(labels).__name__}")
        if labels.dim() != 1 or int(labels.shape[0]) != n:
            raise ValueError(f"labels have shape {tuple(labels.shape)}, expected ({n},) like the modalities")
    return n


class LateFusion(nn.Module):
    """Late-fusion classifier: ``encoders[m](x_m) -> f_m (N, d_m)``, ``heads[m](f_m)`` (uni-modal logits)
    and ``fusion(concat_m f_m)`` (fused logits).

    Args:
        encoders: one module per modality (the dict order is the objective order).
        feature_dims: the output width ``d_m`` of each encoder.
        num_classes: the number of classes C.
        probe_unimodal: the uni-modal heads see detached features, so that their losses train the heads
            only (a linear probe of the encoders). Used by the baselines whose update does not contain
            the uni-modal losses (fused-only training, OGM-GE); set per call with ``forward(probe=...)``.

    ``shared_parameters()`` are the encoders (the trunk every objective shares), ``task_parameters()``
    the heads: pass them to :class:`molearn.Balancer` as ``shared`` and ``tasks``.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        feature_dims: Mapping[str, int],
        num_classes: int,
        *,
        probe_unimodal: bool = False,
    ) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("at least one modality encoder is needed")
        if set(encoders) != set(feature_dims):
            raise ValueError(
                f"encoders {sorted(encoders)} and feature_dims {sorted(feature_dims)} differ in modalities"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        for m, d in feature_dims.items():
            if int(d) < 1:
                raise ValueError(f"feature_dims[{m!r}] must be positive, got {d}")
        self.modalities: tuple[str, ...] = tuple(encoders)
        self.feature_dims = {m: int(feature_dims[m]) for m in self.modalities}
        self.num_classes = int(num_classes)
        self.probe_unimodal = probe_unimodal
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], num_classes) for m in self.modalities})
        self.fusion = nn.Linear(sum(self.feature_dims.values()), num_classes)

    def shared_parameters(self) -> list[Tensor]:
        return [p for p in self.encoders.parameters() if p.requires_grad]

    def task_parameters(self) -> list[Tensor]:
        return [*self.fusion.parameters(), *self.heads.parameters()]

    def encoder_parameters(self, modality: str) -> list[Tensor]:
        if modality not in self.encoders:
            raise ValueError(f"unknown modality {modality!r} (the model has {list(self.modalities)})")
        return list(self.encoders[modality].parameters())

    def forward(self, inputs: Mapping[str, Tensor], *, probe: bool | None = None) -> FusionOutput:
        check_batch(self.modalities, inputs)
        probe = self.probe_unimodal if probe is None else probe
        feats: dict[str, Tensor] = {}
        for m in self.modalities:
            f = self.encoders[m](inputs[m])
            if f.dim() != 2 or f.shape[1] != self.feature_dims[m]:
                raise ValueError(
                    f"encoder {m!r} returned shape {tuple(f.shape)}, expected (N, {self.feature_dims[m]})"
                )
            feats[m] = f
        fused = self.fusion(torch.cat([feats[m] for m in self.modalities], dim=1))
        uni = {m: self.heads[m](feats[m].detach() if probe else feats[m]) for m in self.modalities}
        return FusionOutput(fused=fused, unimodal=uni, features=feats)

    def fusion_slice_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's share of the fusion head, ``W[:, slice_m] f_m + b / M`` (OGM-GE's per-modality
        scores; the official code uses ``b / 2`` with two modalities)."""
        out: dict[str, Tensor] = {}
        start = 0
        m_count = len(self.modalities)
        for m in self.modalities:
            d = self.feature_dims[m]
            w = self.fusion.weight[:, start : start + d]
            out[m] = features[m] @ w.T + self.fusion.bias / m_count
            start += d
        return out

    @property
    def objective_names(self) -> list[str]:
        return ["fused", *self.modalities]


def objectives(
    model: LateFusion,
    inputs: Mapping[str, Tensor],
    labels: Tensor,
    *,
    loss_fn: LossFn | None = None,
    probe: bool | None = None,
) -> tuple[Tensor, FusionOutput]:
    """The (1 + M,) objective vector ``[L_fused, L_m for m in model.modalities]`` and the forward output.

    ``loss_fn(logits, labels)`` defaults to the mean cross-entropy. Bad input (a missing modality,
    batch sizes that differ between modalities or from the labels) raises a ValueError naming it.
    """
    if not isinstance(model, LateFusion):
        raise TypeError(f"model must be a LateFusion, got {type(model).__name__}")
    check_batch(model.modalities, inputs, labels)
    fn = loss_fn or nn.functional.cross_entropy
    out = model(inputs, probe=probe)
    losses = [fn(out.fused, labels)] + [fn(out.unimodal[m], labels) for m in model.modalities]
    return torch.stack([loss.reshape(()) for loss in losses]), out
