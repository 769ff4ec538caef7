"""Small copies of the vision releases in their on-disk formats, for the tests: the MTAN NumPy layout of
NYUv2 / Cityscapes (written with ``numpy.save``), CelebA's text files and JPEGs, and the Office-31 /
Office-Home class folders of JPEGs (written with Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molearn.datasets import CELEBA_ATTRIBUTES


def dense_item(rng: np.random.Generator, h: int, w: int, classes: int) -> dict[str, np.ndarray]:
    """One image of the MTAN layout: image (H, W, 3) in [0, 1], label (H, W) with -1 = ignored, depth
    (H, W, 1) with 0 = missing, normal (H, W, 3) unit length with 0 = missing."""
    label = rng.integers(-1, classes, size=(h, w)).astype(np.float32)
    depth = rng.uniform(0.5, 10.0, size=(h, w, 1)).astype(np.float32)
    depth[rng.random((h, w)) < 0.2] = 0.0
    normal = rng.normal(size=(h, w, 3))
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[rng.random((h, w)) < 0.2] = 0.0
    return {
        "image": rng.random((h, w, 3)).astype(np.float32),
        "label": label,
        "depth": depth,
        "normal": normal.astype(np.float32),
    }


def write_dense_fixture(
    root: Path,
    kind: str = "nyuv2",
    *,
    n_train: int = 2,
    n_test: int = 2,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """``<root>/{train,val}/...`` of NYUv2 (``image``, ``label``, ``depth``, ``normal``) or Cityscapes
    (``image``, ``label_7``, ``label_19``, ``depth``); returns the arrays written, by folder."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, np.ndarray]]] = {}
    for folder, n in (("train", n_train), ("val", n_test)):
        items = []
        for i in range(n):
            item = dense_item(rng, *size, classes=13 if kind == "nyuv2" else 7)
            if kind == "nyuv2":
                parts = {"image": item["image"], "label": item["label"], "depth": item["depth"]}
                parts["normal"] = item["normal"]
            else:
                parts = {"image": item["image"], "label_7": item["label"], "depth": item["depth"]}
                parts["label_19"] = rng.integers(-1, 19, size=size).astype(np.float32)
            for part, arr in parts.items():
                (root / folder / part).mkdir(parents=True, exist_ok=True)
                np.save(root / folder / part / f"{i}.npy", arr)
            items.append(parts)
        out[folder] = items
    return out


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    base = rng.integers(0, 256, size=(1, 1, 3))
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(0, 120, size=(1, 1, 3))
    arr = np.clip(base + ramp + rng.integers(-20, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=95)


def write_celeba_fixture(
    root: Path, *, layout: str = "torchvision", partition: tuple[int, ...] = (0, 0, 0, 0, 1, 1, 2, 2)
) -> tuple[list[str], np.ndarray]:
    """A CelebA release with one 178×218 JPEG per entry of ``partition`` (its split code) in
    ``layout`` ``"torchvision"`` (``<root>/celeba/...``), ``"flat"`` or ``"original"`` (``Img/``,
    ``Anno/``, ``Eval/``); returns the file names and the (N, 40) labels in {-1, 1}."""
    rng = np.random.default_rng(0)
    base = root / "celeba" if layout == "torchvision" else root
    if layout == "original":
        img_dir, attr, part = base / "Img" / "img_align_celeba", base / "Anno", base / "Eval"
    else:
        img_dir, attr, part = base / "img_align_celeba", base, base
    files = [f"{i + 1:06d}.jpg" for i in range(len(partition))]
    labels = rng.choice([-1, 1], size=(len(files), len(CELEBA_ATTRIBUTES)))
    for f in files:
        _jpeg(img_dir / f, rng, (218, 178))
    attr.mkdir(parents=True, exist_ok=True)
    part.mkdir(parents=True, exist_ok=True)
    # the release's spacing: values right-aligned in width 2, names followed by a space
    lines = [str(len(files)), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, labels)]
    (attr / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (part / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, partition)))
    return files, labels


def write_office_fixture(
    root: Path,
    domains: tuple[str, ...] = ("amazon", "dslr", "webcam"),
    *,
    classes: tuple[str, ...] = ("back_pack", "bike", "calculator"),
    per_class: tuple[int, ...] = (5, 7, 5),
    images_dir: bool = True,
    seed: int = 0,
) -> dict[str, dict[str, list[Path]]]:
    """``<root>/<domain>/[images/]<class>/frame_XXXX.jpg`` (small JPEGs, 40×30); returns the files by domain
    and class."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[Path]]] = {}
    for domain in domains:
        out[domain] = {}
        folder = root / domain / "images" if images_dir else root / domain
        for name, n in zip(classes, per_class):
            files = [folder / name / f"frame_{i + 1:04d}.jpg" for i in range(n)]
            for f in files:
                _jpeg(f, rng, (30, 40))
            out[domain][name] = files
    return out
