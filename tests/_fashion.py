"""A fake Fashion-MNIST folder in the real on-disk format (gzipped IDX files), for the tests."""

from __future__ import annotations

from pathlib import Path

import torch

from molearn.datasets import FASHION_MNIST_FILES, write_idx


def write_fake_fashion(folder: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """Random 28×28 images with the labels 0, 1, ..., 9, 0, ... in ``folder``; returns it."""
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = FASHION_MNIST_FILES[split]
        write_idx(folder / f"{img}.gz", torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8))
        write_idx(folder / f"{lab}.gz", (torch.arange(n) % 10).to(torch.uint8))
    return folder
