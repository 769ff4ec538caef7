"""The Multi-Task Attention Network on any backbone (Liu, Johns & Davison, "End-to-End Multi-Task Learning
with Attention", CVPR 2019). The NYUv2 SegNet version of the paper is :class:`molearn.models.SegNetMTAN`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import MultiTaskModule, sub
from ._sharing import _heads

__all__ = ["MTAN"]


def _pair(stage: nn.Module | Sequence[nn.Module]) -> tuple[nn.Module, nn.Module]:
    if isinstance(stage, nn.Sequential):
        if len(stage) < 2:
            raise ValueError(
                "an MTAN stage given as nn.Sequential needs at least 2 layers (first part, last)"
            )
        return stage[:-1], stage[-1]
    if isinstance(stage, nn.Module):
        raise TypeError(
            "an MTAN stage is an nn.Sequential (split into its layers but the last, and the last) or a pair "
            f"(first, rest) of modules; got a {type(stage).__name__}"
        )
    parts = list(stage)
    if len(parts) != 2:
        raise ValueError(f"an MTAN stage pair needs exactly 2 modules, got {len(parts)}")
    return parts[0], parts[1]


def _attention(cin: int, mid: int, cout: int, spatial: bool) -> nn.Sequential:
    """``g`` (1×1 conv -> BN -> ReLU) then ``h`` (1×1 conv -> BN -> sigmoid): a mask in (0, 1)."""
    if spatial:
        return nn.Sequential(
            nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout), nn.Sigmoid(),
        )  # fmt: skip
    return nn.Sequential(
        nn.Linear(cin, mid), nn.BatchNorm1d(mid), nn.ReLU(),
        nn.Linear(mid, cout), nn.BatchNorm1d(cout), nn.Sigmoid(),
    )  # fmt: skip


def _block(cin: int, cout: int, spatial: bool) -> nn.Sequential:
    """The shared ``f`` between attention modules: 3×3 conv -> BN -> ReLU (Linear for vector features)."""
    if spatial:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU())


def _resize(x: Tensor, like: Tensor) -> Tensor:
    """Max-pool (or bilinear up-sampling) ``x`` to the spatial size of ``like``."""
    if x.dim() == 2 or x.shape[-2:] == like.shape[-2:]:
        return x
    if x.shape[-2] >= like.shape[-2] and x.shape[-1] >= like.shape[-1]:
        return F.adaptive_max_pool2d(x, like.shape[-2:])
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class MTAN(MultiTaskModule):
    """MTAN on a backbone of L stages: the backbone is shared; each task has an attention module per stage
    that selects features from it.

    Stage ``j`` of the backbone produces ``u_j`` (its first part) then ``p_j`` (its last layer, e.g. the
    last block of a ResNet layer, as LibMTL splits them). Task ``t``'s attended feature is
    ``â_j = att_t^j([u_j; f_{j-1}(â_{j-1})]) ⊙ p_j`` (``[u_0]`` alone at the first stage), where
    ``att`` (1×1 conv -> BN -> ReLU -> 1×1 conv -> BN -> sigmoid) gives a mask in (0, 1) and ``f_j`` is a
    3×3 conv -> BN -> ReLU shared by the tasks, mapping to ``u_{j+1}``'s channels, followed by a 2×2-style
    max-pool to ``u_{j+1}``'s size (paper, Sec. 3.1). Head ``t`` reads ``â_L``. Features may be images
    (N, C, H, W) or vectors (N, C) (then 1×1 convolutions are linear layers).

    Args:
        stages: the backbone's stages, each an ``nn.Sequential`` of at least 2 layers (``u`` = all but the
            last, ``p`` = the last) or a pair ``(first, rest)``.
        heads: one module per task, reading (N, C_{p_L}, ...).
        input_shape: the shape of one example (without the batch dimension); a dry run finds the
            feature sizes that the attention modules need.

    Shared parameters: the backbone stages and the ``f`` blocks (read by every task's attention).
    Task-specific: each task's attention modules and head. (LibMTL's ``MTAN`` shares only the backbone;
    Nash-MTL / FAMO count the attention modules as shared: see :class:`SegNetMTAN` ``shared_attention``.)
    """

    def __init__(
        self,
        stages: Sequence[nn.Module | Sequence[nn.Module]],
        heads: Sequence[nn.Module],
        *,
        input_shape: Sequence[int],
    ) -> None:
        super().__init__()
        pairs = [_pair(s) for s in stages]
        if not pairs:
            raise ValueError("MTAN needs at least one backbone stage")
        self.first = nn.ModuleList(u for u, _ in pairs)
        self.last = nn.ModuleList(p for _, p in pairs)
        self.heads = _heads(heads)
        u_shapes, p_shapes = self._dry_run(tuple(int(s) for s in input_shape))
        spatial = [len(s) == 3 for s in u_shapes]
        for j, (u, p) in enumerate(zip(u_shapes, p_shapes)):
            if len(u) not in (1, 3) or len(p) != len(u):
                raise ValueError(f"stage {j}: features must be (N, C) or (N, C, H, W), got {u} and {p}")
        cu = [s[0] for s in u_shapes]
        cp = [s[0] for s in p_shapes]
        n = len(pairs)
        self.attention = nn.ModuleList(
            nn.ModuleList(
                _attention(cu[j] if j == 0 else 2 * cu[j], cp[j], cp[j], spatial[j]) for j in range(n)
            )
            for _ in self.heads
        )
        self.blocks = nn.ModuleList(_block(cp[j], cu[j + 1], spatial[j + 1]) for j in range(n - 1))
        for j in range(n - 1):
            if spatial[j] != spatial[j + 1]:
                raise ValueError(f"stages {j} and {j + 1}: cannot mix image and vector features")

    @torch.no_grad()
    def _dry_run(self, shape: tuple[int, ...]) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        was = self.training
        self.eval()
        try:
            h = torch.zeros(1, *shape)
            us, ps = [], []
            for first, last in zip(self.first, self.last):
                u = first(h)
                h = last(u)
                us.append(tuple(u.shape[1:]))
                ps.append(tuple(h.shape[1:]))
        finally:
            self.train(was)
        return us, ps

    def _forward(self, x: Tensor, masks: list[list[Tensor]] | None) -> list[Tensor]:
        us, ps = [], []
        h = x
        for first, last in zip(self.first, self.last):
            u = first(h)
            h = last(u)
            us.append(u)
            ps.append(h)
        outputs = []
        for t, head in enumerate(self.heads):
            att: Tensor | None = None
            for j in range(len(us)):
                inp = (
                    us[j]
                    if att is None
                    else torch.cat((us[j], _resize(self.blocks[j - 1](att), us[j])), dim=1)
                )
                mask = sub(self.attention, t)[j](inp)
                att = mask * ps[j]
                if masks is not None:
                    masks[t].append(mask)
            outputs.append(head(att))
        return outputs

    def forward(self, x: Tensor) -> list[Tensor]:
        return self._forward(x, None)

    def attention_masks(self, x: Tensor) -> list[list[Tensor]]:
        """Per task, the L attention masks (one per stage)."""
        masks: list[list[Tensor]] = [[] for _ in self.heads]
        self._forward(x, masks)
        return masks

    def shared_modules(self) -> Iterable[nn.Module]:
        return [self.first, self.last, self.blocks]

    def task_modules(self) -> Iterable[nn.Module]:
        return [m for t in range(len(self.heads)) for m in (self.attention[t], self.heads[t])]
