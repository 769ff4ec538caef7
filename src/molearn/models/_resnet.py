"""Image classifiers with one head per task: a ResNet-18 trunk and the CelebA network of FAMO.

- :class:`ResNet18MultiHead`: ResNet-18 (He, Zhang, Ren & Sun, CVPR 2016) as the shared trunk, one linear
  head per task. It is the model of the Office-31 / Office-Home protocol of LibMTL (a ResNet-18 encoder
  with one linear classifier per domain; LibMTL starts it from ImageNet weights) and of the CelebA
  experiment of MGDA-UB (Sener & Koltun, NeurIPS 2018: ResNet-18 trunk, one linear layer per attribute).
- :class:`CelebANet`: the model of FAMO's CelebA experiment (Liu, Liu, Stone & Liu, NeurIPS 2023,
  ``experiments/celeba/models.py``): 7 convolutions and 2 linear layers, 40 single-logit heads, on 64×64
  images. The FAMO CelebA protocol uses this network, not a ResNet-18 (Nash-MTL has no CelebA experiment).

The trunk is written here (torchvision is not a dependency); its parameter names are torchvision's
(``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so a torchvision ``resnet18`` state dict without ``fc.*``
loads into ``model.trunk``. molearn downloads no pretrained weights: both models start from random
initialisation (LibMTL's Office numbers start from ImageNet weights, so they are not comparable).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from ._common import MultiTaskModule

__all__ = ["CelebANet", "ResNet18", "ResNet18MultiHead"]


class _BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (1×1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18 without its classifier: (N, in_channels, H, W) -> (N, 512) after global average pooling.

    ``small_inputs=True`` replaces the 7×7/2 stem and its max-pool by a 3×3/1 convolution (the usual
    CIFAR variant) for images of 32×32 or less. Kaiming-normal (fan-out) convolutions, BatchNorm 1/0, as
    torchvision.
    """

    def __init__(self, in_channels: int = 3, *, small_inputs: bool = False, width: int = 64) -> None:
        super().__init__()
        if small_inputs:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool: nn.Module = nn.Identity() if small_inputs else nn.MaxPool2d(3, stride=2, padding=1)
        widths = [width, 2 * width, 4 * width, 8 * width]
        cin = width
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(_BasicBlock(cin, w, stride), _BasicBlock(w, w, 1)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.avgpool(x).flatten(1)


def _outputs(task_outputs: Sequence[int]) -> list[int]:
    outs = [int(o) for o in task_outputs]
    if not outs or min(outs) < 1:
        raise ValueError(f"task_outputs must be a non-empty list of positive sizes, got {list(task_outputs)}")
    return outs


class _MultiHead(MultiTaskModule):
    trunk: nn.Module
    heads: nn.ModuleList

    def forward(self, x: Tensor, task: int | None = None) -> list[Tensor] | Tensor:
        """All tasks' outputs as a list of (N, out_t), or only task ``task``'s (N, out_task) — for problems
        where each task has its own inputs (Office: one domain per task)."""
        z = self.trunk(x)
        if task is None:
            return [head(z) for head in self.heads]
        if not 0 <= task < len(self.heads):
            raise IndexError(f"task {task} out of range for {len(self.heads)} tasks")
        return self.heads[task](z)

    def shared_modules(self) -> Iterable[nn.Module]:
        return [self.trunk]

    def task_modules(self) -> Iterable[nn.Module]:
        return [self.heads]


class ResNet18MultiHead(_MultiHead):
    """A ResNet-18 trunk shared by the tasks and one ``Linear(512, out_t)`` head per task.

    Args:
        task_outputs: the output size of each task's head (classes; 1 for a binary logit or a scalar).
        in_channels: input channels.
        small_inputs: 3×3 stem without max-pool (CIFAR-sized images), see :class:`ResNet18`.

    ``forward(x)`` -> list of (N, out_t) logits; ``forward(x, task=i)`` -> task i's (N, out_i) only.
    Shared: the trunk; task-specific: the heads. Randomly initialised (no pretrained weights are downloaded).
    """

    def __init__(
        self, task_outputs: Sequence[int], in_channels: int = 3, *, small_inputs: bool = False
    ) -> None:
        super().__init__()
        outs = _outputs(task_outputs)
        self.trunk = ResNet18(in_channels, small_inputs=small_inputs)
        self.heads = nn.ModuleList(nn.Linear(self.trunk.out_features, o) for o in outs)


class CelebANet(_MultiHead):
    """FAMO's CelebA network (Liu et al., NeurIPS 2023): for (N, 3, 64, 64) face images, a shared base of

    ``conv(3→64) · pool · conv(64→128) · conv(128→128) · pool · conv(128→256) · conv(256→256) · pool ·
    conv(256→512) · conv(512→512) · global average pool · [Linear(512, 512) · BN · ReLU] × 2``

    (every conv 3×3, padding 1, no bias, followed by BatchNorm and ReLU; pools are 2×2 max-pools) and one
    ``Linear(512, 1)`` head per attribute. ``forward`` returns logits (N, 1) per task: FAMO applies a
    sigmoid and ``BCELoss``; ``binary_cross_entropy_with_logits`` on these logits is the same loss, stabler.
    Shared: the base; task-specific: the heads. PyTorch's default initialisation, as FAMO.
    """

    def __init__(self, tasks: int = 40, in_channels: int = 3) -> None:
        super().__init__()
        if tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {tasks}")

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        def fc() -> list[nn.Module]:
            return [nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU()]

        pool = nn.MaxPool2d(2, stride=2)
        self.trunk = nn.Sequential(
            *conv(in_channels, 64), pool,
            *conv(64, 128), *conv(128, 128), pool,
            *conv(128, 256), *conv(256, 256), pool,
            *conv(256, 512), *conv(512, 512), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            *fc(), *fc(),
        )  # fmt: skip
        self.heads = nn.ModuleList(nn.Linear(512, 1) for _ in range(tasks))
