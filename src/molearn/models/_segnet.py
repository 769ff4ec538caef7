"""The SegNet models of the NYUv2 / Cityscapes protocol of MTAN, Nash-MTL and FAMO.

Both follow the official code of Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention"
(CVPR 2019, github lorenmt/mtan ``im2im_pred/model_segnet_mtan.py`` and ``model_segnet_split.py``) in the
version Nash-MTL (AvivNavon/nash-mtl) and FAMO (Cranial-XIX/FAMO) train (``experiments/nyuv2/models.py``:
the same layers, without the uncertainty-weighting ``logsigma`` of the MTAN repository):

- a SegNet encoder-decoder with filters ``[64, 128, 256, 512, 512]``; every "conv layer" is
  ``Conv2d(3×3, padding 1) -> BatchNorm2d -> ReLU``; level ``i`` of the encoder is ``encoder_block[i]``
  (one conv layer to ``filters[i]``) then ``conv_block_enc[i]`` (one conv layer at levels 0-1, two
  afterwards) then a 2×2 max-pool whose indices the mirrored decoder level un-pools;
- one head per task: ``Conv2d(64, 64, 3×3) -> Conv2d(64, C_t, 1×1)`` (no normalisation in between);
- Xavier-normal convolution weights, zero biases, BatchNorm weight 1 / bias 0.

With the same seed, :class:`SegNetMTAN` and :class:`SegNet` draw the same initial weights as the official
models (the modules are registered in the official order). Pretrained weights do not exist for these
models (they train from scratch) and nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import MultiTaskModule, sub

__all__ = ["SegNet", "SegNetMTAN", "is_normal_task"]

FILTERS = (64, 128, 256, 512, 512)


def is_normal_task(name: str, channels: int) -> bool:
    """Whether a task's prediction is L2-normalised over channels (surface normals): its name is
    ``"normal"``, or it has 3 channels and its name starts with ``"normal"`` (``"normals"``,
    ``"normal_3d"``)."""
    return name == "normal" or (channels == 3 and name.startswith("normal"))


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


def _conv_block(channels: int, layers: int) -> nn.Sequential:
    # the official code nests two conv layers in a Sequential, but uses a single one as it is
    return (
        _conv(channels, channels)
        if layers == 1
        else nn.Sequential(*(_conv(channels, channels) for _ in range(layers)))
    )


def _head(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.Conv2d(cin, cout, 1))


def _attention(cin: int, mid: int, cout: int) -> nn.Sequential:
    """MTAN's attention module: ``1×1 conv -> BN -> ReLU -> 1×1 conv -> BN -> sigmoid`` (a mask in (0, 1))."""
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
        nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout), nn.Sigmoid(),
    )  # fmt: skip


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _task_channels(task_channels: Mapping[str, int]) -> tuple[list[str], list[int]]:
    if isinstance(task_channels, (str, bytes)) or not isinstance(task_channels, Mapping):
        raise TypeError(
            "task_channels must be a mapping task name -> output channels, e.g. {'segmentation': 13}"
        )
    names, channels = list(task_channels), [int(c) for c in task_channels.values()]
    if not names:
        raise ValueError("task_channels is empty: give at least one task")
    bad = [n for n, c in zip(names, channels) if c < 1]
    if bad:
        raise ValueError(f"task(s) {bad} have fewer than 1 output channel")
    return names, channels


class _SegNetBase(MultiTaskModule):
    """The shared SegNet encoder-decoder (attribute names as in the official code)."""

    def __init__(self, in_channels: int, filters: Sequence[int]) -> None:
        super().__init__()
        f = [int(c) for c in filters]
        if len(f) < 2 or min(f) < 1:
            raise ValueError(f"filters must be at least 2 positive channel counts, got {list(filters)}")
        n = len(f)
        self.filters = f
        self.encoder_block = nn.ModuleList(
            [_conv(in_channels, f[0])] + [_conv(f[i], f[i + 1]) for i in range(n - 1)]
        )
        self.decoder_block = nn.ModuleList(
            [_conv(f[0], f[0])] + [_conv(f[i + 1], f[i]) for i in range(n - 1)]
        )
        self.conv_block_enc = nn.ModuleList(
            [_conv(f[0], f[0])] + [_conv_block(f[i + 1], 1 if i == 0 else 2) for i in range(n - 1)]
        )
        self.conv_block_dec = nn.ModuleList(
            [_conv(f[0], f[0])] + [_conv_block(f[i], 1 if i == 0 else 2) for i in range(n - 1)]
        )

    def _check_input(self, x: Tensor) -> None:
        step = 2 ** len(self.filters)
        if x.dim() != 4 or x.shape[-1] % step or x.shape[-2] % step:
            raise ValueError(
                f"{type(self).__name__} takes (N, C, H, W) images with H and W multiples of {step} "
                f"({len(self.filters)} 2×2 poolings), got shape {tuple(x.shape)}"
            )

    def _trunk(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Encoder features before/after each level's conv block, un-pooled decoder inputs and decoder
        outputs (the decoder lists run from the bottom up, as in the official code)."""
        self._check_input(x)
        enc_u: list[Tensor] = []
        enc_p: list[Tensor] = []
        indices: list[Tensor] = []
        h = x
        for i in range(len(self.filters)):
            u = self.encoder_block[i](h)
            p = self.conv_block_enc[i](u)
            h, idx = F.max_pool2d(p, kernel_size=2, stride=2, return_indices=True)
            enc_u.append(u)
            enc_p.append(p)
            indices.append(idx)
        ups: list[Tensor] = []
        dec: list[Tensor] = []
        for i in range(len(self.filters)):
            up = F.max_unpool2d(h, indices[-i - 1], kernel_size=(2, 2), stride=(2, 2))
            h = self.conv_block_dec[-i - 1](self.decoder_block[-i - 1](up))
            ups.append(up)
            dec.append(h)
        return enc_u, enc_p, ups, dec

    def _trunk_modules(self) -> list[nn.Module]:
        return [self.encoder_block, self.decoder_block, self.conv_block_enc, self.conv_block_dec]

    def _finish(self, outputs: list[Tensor]) -> list[Tensor]:
        return [F.normalize(y, p=2, dim=1) if norm else y for y, norm in zip(outputs, self.normalized)]

    def _set_tasks(self, task_channels: Mapping[str, int], normalized: Collection[str] | None) -> None:
        self.tasks, self.task_channels = _task_channels(task_channels)
        if normalized is None:
            self.normalized = [is_normal_task(t, c) for t, c in zip(self.tasks, self.task_channels)]
        else:
            unknown = [t for t in normalized if t not in self.tasks]
            if unknown:
                raise ValueError(f"normalized names unknown task(s) {unknown}; tasks are {self.tasks}")
            self.normalized = [t in normalized for t in self.tasks]


class SegNet(_SegNetBase):
    """Hard-sharing SegNet ("Split, standard" of MTAN; ``SegNet`` of Nash-MTL / FAMO): the whole
    encoder-decoder is shared, each task has its own head on the last 64-channel decoder feature.

    Args:
        task_channels: task name -> output channels, in task order (NYUv2: ``{"segmentation": 13,
            "depth": 1, "normal": 3}``).
        in_channels: input channels (3 for RGB).
        filters: channels of the 5 levels (official ``[64, 128, 256, 512, 512]``; smaller for tests).
        normalized: tasks whose outputs are L2-normalised over channels; default: :func:`is_normal_task`
            (a task named ``"normal"``, or with 3 channels and a name starting with ``"normal"``).

    ``forward(x)`` takes (N, in_channels, H, W) with H, W multiples of 32 and returns the list, in task
    order, of (N, C_t, H, W) outputs: raw scores (segmentation logits: the official code's
    ``log_softmax`` + NLL loss equals ``cross_entropy`` on them), normalised vectors for normal tasks.
    Shared: the encoder-decoder; task-specific: the heads.
    """

    def __init__(
        self,
        task_channels: Mapping[str, int],
        in_channels: int = 3,
        *,
        filters: Sequence[int] = FILTERS,
        normalized: Collection[str] | None = None,
    ) -> None:
        super().__init__(in_channels, filters)
        self._set_tasks(task_channels, normalized)
        self.heads = nn.ModuleList(_head(self.filters[0], c) for c in self.task_channels)
        _init(self)

    def representation(self, x: Tensor) -> Tensor:
        """The shared feature (N, filters[0], H, W) the heads read (for ``mode="representation"``)."""
        return self._trunk(x)[3][-1]

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.representation(x)
        return self._finish([head(z) for head in self.heads])

    def shared_modules(self) -> Iterable[nn.Module]:
        return self._trunk_modules()

    def task_modules(self) -> Iterable[nn.Module]:
        return [self.heads]


class SegNetMTAN(_SegNetBase):
    """SegNet-MTAN (Liu, Johns & Davison, CVPR 2019): a shared SegNet plus, per task, a soft-attention
    module at every encoder and decoder level that masks the shared features.

    Per task ``t`` and encoder level ``j``: ``a = att_t^j([u_j; f_{j-1}])`` (``u_j`` the level's first conv
    output, ``f_{j-1}`` the task's previous attended feature), a mask in (0, 1) with ``filters[j]``
    channels, multiplies the level's output ``p_j``; a conv layer ``encoder_block_att[j]`` shared by the
    tasks and a 2×2 max-pool give ``f_j``. The decoder mirrors it (bilinear ×2 up-sampling,
    ``align_corners=True``, then ``decoder_block_att``, attention on ``[un-pooled shared feature; f]``).
    The head of task ``t`` reads its last attended decoder feature (64 channels, input resolution).

    The arguments are those of :class:`SegNet`, and ``shared_attention`` (below).

    Shared parameters: the SegNet encoder-decoder and the conv layers ``encoder_block_att`` /
    ``decoder_block_att`` (used by every task). Task-specific: each task's attention modules
    (``encoder_att[t]``, ``decoder_att[t]``, which only task ``t``'s output depends on — the official
    ``shared_modules()`` excludes them too) and its head. ``shared_attention=True`` counts the attention
    modules as shared, as Nash-MTL's and FAMO's ``SegNetMtan.shared_parameters()`` do (every parameter
    but the heads): their Gramians then also contain the (block-diagonal) attention gradients; use it to
    reproduce those papers' weights exactly.

    With ``filters[-1] == filters[-2]`` (the official case) the layers are exactly the official ones; the
    deepest decoder attention takes ``2·filters[-1]`` input channels (official: ``filters[-1] +
    filters[-2]``, the same number there).
    """

    def __init__(
        self,
        task_channels: Mapping[str, int],
        in_channels: int = 3,
        *,
        filters: Sequence[int] = FILTERS,
        normalized: Collection[str] | None = None,
        shared_attention: bool = False,
    ) -> None:
        super().__init__(in_channels, filters)
        self._set_tasks(task_channels, normalized)
        self.shared_attention = bool(shared_attention)
        f, n, k = self.filters, len(self.filters), len(self.tasks)
        self.encoder_att = nn.ModuleList(
            nn.ModuleList(
                [_attention(f[0], f[0], f[0])] + [_attention(2 * f[i], f[i], f[i]) for i in range(1, n)]
            )
            for _ in range(k)
        )
        dec_in = [2 * f[0]] + [f[i + 1] + f[i] for i in range(n - 2)] + [2 * f[n - 1]]
        dec_out = [f[0]] + [f[i] for i in range(n - 1)]
        self.decoder_att = nn.ModuleList(
            nn.ModuleList(_attention(c_in, c_out, c_out) for c_in, c_out in zip(dec_in, dec_out))
            for _ in range(k)
        )
        self.encoder_block_att = nn.ModuleList(
            [_conv(f[i], f[i + 1]) for i in range(n - 1)] + [_conv(f[-1], f[-1])]
        )
        self.decoder_block_att = nn.ModuleList(
            [_conv(f[0], f[0])] + [_conv(f[i + 1], f[i]) for i in range(n - 2)] + [_conv(f[-1], f[-1])]
        )
        self.heads = nn.ModuleList(_head(f[0], c) for c in self.task_channels)
        _init(self)

    def _forward(self, x: Tensor, masks: list[list[Tensor]] | None) -> list[Tensor]:
        enc_u, enc_p, ups, dec = self._trunk(x)
        n = len(self.filters)
        outputs: list[Tensor] = []
        for t in range(len(self.tasks)):
            att = None
            for j in range(n):
                inp = enc_u[j] if att is None else torch.cat((enc_u[j], att), dim=1)
                mask = sub(self.encoder_att, t)[j](inp)
                att = F.max_pool2d(self.encoder_block_att[j](mask * enc_p[j]), kernel_size=2, stride=2)
                if masks is not None:
                    masks[t].append(mask)
            assert att is not None
            for j in range(n):
                att = F.interpolate(att, scale_factor=2, mode="bilinear", align_corners=True)
                att = self.decoder_block_att[-j - 1](att)
                mask = sub(self.decoder_att, t)[-j - 1](torch.cat((ups[j], att), dim=1))
                att = mask * dec[j]
                if masks is not None:
                    masks[t].append(mask)
            outputs.append(self.heads[t](att))
        return self._finish(outputs)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self._forward(x, None)

    def attention_masks(self, x: Tensor) -> list[list[Tensor]]:
        """Per task, the 2·L attention masks (encoder levels top-down, then decoder levels bottom-up)."""
        masks: list[list[Tensor]] = [[] for _ in self.tasks]
        self._forward(x, masks)
        return masks

    def shared_modules(self) -> Iterable[nn.Module]:
        extra = [self.encoder_att, self.decoder_att] if self.shared_attention else []
        return [*self._trunk_modules(), self.encoder_block_att, self.decoder_block_att, *extra]

    def task_modules(self) -> Iterable[nn.Module]:
        if self.shared_attention:
            return [self.heads]
        return [
            m
            for t in range(len(self.tasks))
            for m in (self.encoder_att[t], self.decoder_att[t], self.heads[t])
        ]
