"""The built-in vision benchmarks (``nyuv2``, ``cityscapes``, ``celeba``, ``office31``, ``office_home``) on
fixture copies of the releases: registration and published schedules, errors naming the environment
variable, losses and metrics against hand computations with the real models, and each benchmark's
``quick`` comparison end to end with two methods (four on NYUv2 and CelebA: FairGrad and SAMO, whose papers
report these benchmarks, run there too).

The end-to-end comparisons keep the data, losses, meters, loaders and report of each benchmark but use
narrow models (SegNet-MTAN with narrow filters; a tiny CNN with one head per task for CelebA and Office),
so that the 42 runs of CelebA and the ResNet-18 checkpoints do not dominate the suite; the real models
run in the loss tests."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import math
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molearn.compare import _benchmark, _published, builtin_benchmarks, compare, load_benchmark
from molearn.compare import _run as run_mod
from molearn.compare._vision import (
    CITYSCAPES_STL_PUBLISHED,
    NYUV2_STL_PUBLISHED,
    celeba_benchmark,
    cityscapes_benchmark,
    nyuv2_benchmark,
    office_benchmark,
)
from molearn.datasets import (
    CELEBA_ATTRIBUTES,
    ENV_CACHE,
    ENV_CELEBA_DIR,
    ENV_CITYSCAPES_DIR,
    ENV_NYUV2_DIR,
    ENV_OFFICE31_DIR,
    ENV_OFFICE_HOME_DIR,
)
from molearn.metrics import delta_m
from molearn.models import CelebANet, ResNet18MultiHead, SegNetMTAN

from ..._vision import write_celeba_fixture, write_dense_fixture, write_office_fixture

needs_pil = pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="JPEG fixtures need Pillow")
NAMES = ("nyuv2", "cityscapes", "celeba", "office31", "office_home")
ENVS = {
    "nyuv2": ENV_NYUV2_DIR,
    "cityscapes": ENV_CITYSCAPES_DIR,
    "celeba": ENV_CELEBA_DIR,
    "office31": ENV_OFFICE31_DIR,
    "office_home": ENV_OFFICE_HOME_DIR,
}
SMALL = (4, 8, 8, 8, 8)  # SegNet filters for the end-to-end runs


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(_benchmark, "_BUILTIN_CACHE", {})  # built-in benchmarks cache their data sets
    for env in ENVS.values():
        monkeypatch.delenv(env, raising=False)


# ------------------------------------------------------------------------------------------ registration
def test_registered_with_the_published_schedules() -> None:
    table = builtin_benchmarks()
    assert all(n in table for n in NAMES)
    nyu, city, celeba, o31, oh = (load_benchmark(n) for n in NAMES)
    for bm, batch in ((nyu, 2), (city, 8)):
        full = bm.named_schedules()["full"]
        assert (full.epochs, full.batch_size, full.optimizer, full.lr) == (200, batch, "adam", 1e-4)
        assert full.scheduler == "step" and dict(full.scheduler_kwargs) == {"step_size": 100, "gamma": 0.5}
        assert full.train_size is None and full.eval_size is None
    full = celeba.named_schedules()["full"]
    assert (full.epochs, full.batch_size, full.optimizer, full.lr) == (15, 256, "adam", 3e-4)
    assert full.scheduler is None
    for bm in (o31, oh):
        full = bm.named_schedules()["full"]
        assert (full.epochs, full.batch_size, full.lr, full.weight_decay) == (100, 64, 1e-4, 1e-5)
        assert full.scheduler is None
    assert tuple(nyu.tasks) == ("segmentation", "depth", "normal")
    assert tuple(o31.tasks) == ("amazon", "dslr", "webcam")
    assert tuple(oh.tasks) == ("art", "clipart", "product", "real_world")
    assert tuple(celeba.tasks) == CELEBA_ATTRIBUTES
    assert nyu.method_kwargs["famo"] == {"gamma": 1e-3} and city.method_kwargs["famo"] == {"gamma": 1e-2}


def test_metric_names_and_directions_match_the_published_tables() -> None:
    expected = {
        "nyuv2": _published.NYUV2_METRICS,
        "cityscapes": _published.CITYSCAPES_METRICS,
        "office31": _published.OFFICE31_METRICS,
        "office_home": _published.OFFICE_HOME_METRICS,
    }
    higher = {"miou", "pix_acc", "within_11_25", "within_22_5", "within_30"}
    for name, metrics in expected.items():
        bm = load_benchmark(name)
        counted = [m for m in bm.metrics if m.weight > 0]
        assert tuple(m.name for m in counted) == metrics
        for m in counted:
            assert m.higher_is_better == (m.name in higher or m.name.startswith("acc_"))
    celeba = load_benchmark("celeba")
    weights = {m.name: m.weight for m in celeba.metrics}
    assert all(weights[f"f1_{a}"] == 1 and weights[f"acc_{a}"] == 0 for a in CELEBA_ATTRIBUTES)
    assert all(m.higher_is_better for m in celeba.metrics)
    published = {m.name: m.weight for m in load_benchmark("nyuv2").metrics}["delta_m_published"]
    assert published == 0


@pytest.mark.parametrize("name", NAMES)
def test_missing_data_names_the_variable(name: str, tmp_path: Path) -> None:
    with pytest.raises(_benchmark.BenchmarkError, match=rf"\${ENVS[name]}"):
        compare(name, methods="ew", seeds=1, schedule="quick", out=tmp_path, plot=False, log=lambda s: None)


def test_cli_reports_the_missing_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    run_mod.add_arguments(parser)
    args = parser.parse_args(["--benchmark", "nyuv2", "--quick", "--no-plot", "--out", str(tmp_path / "o")])
    args.command_line = "molearn compare --benchmark nyuv2 --quick"
    assert run_mod.run_cli(args) == 2
    err = capsys.readouterr().err
    assert ENV_NYUV2_DIR in err and "image,label,depth,normal" in err


# ------------------------------------------------------------------------------------------ losses by hand
def _ce_ignore(logits: Tensor, target: Tensor) -> Tensor:
    logp = logits.log_softmax(1)
    keep = target >= 0
    picked = logp.permute(0, 2, 3, 1)[keep]
    return -picked.gather(1, target[keep].unsqueeze(1)).mean()


def test_nyuv2_losses_and_metrics_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dense_fixture(tmp_path / "nyu", "nyuv2", n_train=2, n_test=2)
    monkeypatch.setenv(ENV_NYUV2_DIR, str(tmp_path / "nyu"))
    bm = load_benchmark("nyuv2")
    assert bm.dataset("val") is None and len(bm.dataset("train")) == 2 and len(bm.dataset("test", 1)) == 1
    torch.manual_seed(0)
    model = bm.model()
    assert isinstance(model, SegNetMTAN) and model.task_channels == [13, 1, 3] and model.shared_attention
    x, y = next(iter(bm.make_loader(bm.dataset("test"), 2, False)))
    model.eval()
    with torch.no_grad():
        seg, depth, normal = model(x)
        losses = bm.loss_fn(model, (x, y))
    valid = (y["depth"] != 0).float()
    normal_valid = (y["normal"].sum(1, keepdim=True) != 0).float()
    torch.testing.assert_close(losses[0], _ce_ignore(seg, y["segmentation"]))
    torch.testing.assert_close(losses[1], ((depth - y["depth"]).abs() * valid).sum() / valid.sum())
    cos = (normal * y["normal"]).sum(1, keepdim=True)
    torch.testing.assert_close(losses[2], 1 - (cos * normal_valid).sum() / normal_valid.sum())
    meter = bm.new_meter()
    with torch.no_grad():
        meter.update(model, (x, y))
    out = meter.compute()
    assert set(out) == {m.name for m in bm.metrics}
    # pixel accuracy over the valid pixels, depth errors over the valid ones, by hand
    keep = y["segmentation"] >= 0
    right = seg.argmax(1)[keep] == y["segmentation"][keep]
    assert out["pix_acc"] == pytest.approx(float(right.double().mean()))
    m = valid.bool()
    assert out["abs_err"] == pytest.approx(float((depth[m] - y["depth"][m]).abs().double().mean()), rel=1e-6)
    higher = ("miou", "pix_acc", "within_11_25", "within_22_5", "within_30")
    hib = {k: k in higher for k in NYUV2_STL_PUBLISHED}
    dm = delta_m({k: out[k] for k in NYUV2_STL_PUBLISHED}, NYUV2_STL_PUBLISHED, hib)
    assert out["delta_m_published"] == pytest.approx(dm)


def test_training_loader_augments_reproducibly_and_the_data_stay_fixed(tmp_path: Path) -> None:
    write_dense_fixture(tmp_path / "city", "cityscapes", n_train=4, n_test=1)
    bm = cityscapes_benchmark(str(tmp_path / "city"))
    ds = bm.dataset("train")
    plain = torch.stack([ds[i][0] for i in range(4)])
    evaluated = next(iter(bm.make_loader(ds, 4, False)))[0]
    assert torch.equal(evaluated, plain)

    def rows(x: Tensor) -> set[tuple[float, ...]]:
        return {tuple(b.flatten().tolist()) for b in x}

    def first_batch(seed: int) -> tuple[Tensor, dict[str, Tensor]]:
        loader = bm.make_loader(ds, 4, True)
        gen = torch.Generator().manual_seed(seed)
        loader.generator = loader.sampler.generator = gen  # what molearn's trainer does per pass
        return next(iter(loader))

    state = torch.get_rng_state()
    batches = [first_batch(seed) for seed in range(4)]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not used
    again = first_batch(2)
    assert torch.equal(again[0], batches[2][0]) and torch.equal(again[1]["depth"], batches[2][1]["depth"])
    for x, y in batches:
        assert tuple(x.shape) == (4, 3, 32, 32) and y["segmentation"].dtype == torch.int64
    assert any(rows(x) != rows(plain) for x, _ in batches)  # some items were cropped or flipped
    assert torch.equal(torch.stack([ds[i][0] for i in range(4)]), plain)
    unaugmented = cityscapes_benchmark(str(tmp_path / "city"), augment=False)
    loader = unaugmented.make_loader(ds, 4, True)
    assert rows(next(iter(loader))[0]) == rows(plain)


@needs_pil
def test_celeba_losses_by_hand(tmp_path: Path) -> None:
    write_celeba_fixture(tmp_path / "celeba")
    bm = celeba_benchmark(str(tmp_path / "celeba"))
    assert [len(bm.dataset(s)) for s in ("train", "val", "test")] == [4, 2, 2]
    torch.manual_seed(0)
    model = bm.model()
    assert isinstance(model, CelebANet) and len(model.heads) == 40
    model.eval()
    x, y = next(iter(bm.make_loader(bm.dataset("train"), 4, False)))
    assert tuple(x.shape) == (4, 3, 64, 64) and tuple(y.shape) == (4, 40)
    with torch.no_grad():
        logits = torch.cat(model(x), dim=1)
        losses = bm.loss_fn(model, (x, y))
    p = torch.sigmoid(logits)
    bce = -(y * p.log() + (1 - y) * (1 - p).log()).mean(0)  # FAMO: BCELoss on sigmoid outputs
    torch.testing.assert_close(losses, bce, rtol=1e-4, atol=1e-5)
    meter = bm.new_meter()
    meter.update(model, (x, y))
    out = meter.compute()
    pred = logits > 0
    for k, a in enumerate(CELEBA_ATTRIBUTES[:5]):
        t = y[:, k] > 0.5
        tp, fp, fn = (pred[:, k] & t).sum(), (pred[:, k] & ~t).sum(), (~pred[:, k] & t).sum()
        f1 = 0.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))
        assert out[f"f1_{a}"] == pytest.approx(f1)
        assert out[f"acc_{a}"] == float((pred[:, k] == t).float().mean())


@needs_pil
def test_office_losses_and_scores_by_hand(tmp_path: Path) -> None:
    write_office_fixture(tmp_path / "o31")
    bm = office_benchmark("office31", str(tmp_path / "o31"), image_size=32)
    train = bm.dataset("train")
    assert [len(d) for d in train.domains] == [10, 10, 10] and len(bm.dataset("train", 6)) == 6
    torch.manual_seed(0)
    model = bm.model()
    assert isinstance(model, ResNet18MultiHead) and [h.out_features for h in model.heads] == [31, 31, 31]
    model.eval()
    loader = bm.make_loader(train, 4, True)
    assert len(loader) == 2
    loader.generator = torch.Generator().manual_seed(0)  # type: ignore[attr-defined]
    batch = next(iter(loader))
    assert len(batch) == 3 and all(tuple(x.shape) == (4, 3, 32, 32) for x, _ in batch)
    with torch.no_grad():
        losses = bm.loss_fn(model, batch)
        for k, (x, y) in enumerate(batch):
            z = model(x)[k]  # all heads at once: head k is task k's
            torch.testing.assert_close(losses[k], F.cross_entropy(z, y))
        scores = bm.score_fn(model, (batch[0], None, batch[2]))  # type: ignore[misc]
    assert set(scores) == {"acc_amazon", "acc_webcam"}
    torch.testing.assert_close(scores["acc_webcam"], (model(batch[2][0])[2].argmax(1) == batch[2][1]).float())


# ------------------------------------------------------------------------------------------ quick runs
class _TinyHeads(nn.Module):
    """A tiny CNN trunk with one linear head per task (``forward(x, task=None)`` as the real models)."""

    def __init__(self, tasks: int, outputs: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.heads = nn.ModuleList(nn.Linear(4, outputs) for _ in range(tasks))

    def forward(self, x: Tensor, task: int | None = None) -> list[Tensor] | Tensor:
        z = self.trunk(x)
        return [h(z) for h in self.heads] if task is None else self.heads[task](z)

    def shared_parameters(self) -> Iterable[nn.Parameter]:
        return self.trunk.parameters()

    def task_parameters(self) -> Iterable[nn.Parameter]:
        return self.heads.parameters()


def _tiny_celeba() -> nn.Module:
    return _TinyHeads(40, 1)


def _tiny_office(tasks: int) -> nn.Module:
    return _TinyHeads(tasks, 31 if tasks == 3 else 65)


def _quick(bm: _benchmark.Benchmark, methods: str, out: Path) -> list[dict[str, str]]:
    # one thread: two per run thrash on a shared 2-core machine
    opts = {"seeds": 1, "schedule": "quick", "jobs": 0, "threads": 1, "plot": False}
    result = compare(bm, methods=methods, out=out, log=lambda s: None, **opts)
    assert not result.failed
    report = (out / "report.md").read_text()
    assert f"molearn compare: {bm.name}" in report
    with (out / "runs.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(not r.get("error") for r in rows)
    return rows


@pytest.mark.parametrize("kind", ["nyuv2", "cityscapes"])
def test_dense_quick_comparison(kind: str, tmp_path: Path) -> None:
    write_dense_fixture(tmp_path / kind, kind, n_train=2, n_test=2)
    factory = nyuv2_benchmark if kind == "nyuv2" else cityscapes_benchmark
    extra = ",fairgrad,samo" if kind == "nyuv2" else ""
    rows = _quick(factory(str(tmp_path / kind), filters=SMALL), "ew,mgda" + extra, tmp_path / "out")
    assert {r["method"] for r in rows} == {"EW", "MGDA"} | ({"FairGrad", "SAMO"} if extra else set())
    for r in rows:
        assert math.isfinite(float(r["delta_m"])) and 0 <= float(r["metric:miou"]) <= 1
        assert float(r["metric:abs_err"]) > 0 and float(r["metric:delta_m_published"]) > 0
    if kind == "nyuv2":
        assert all(0 <= float(r["metric:within_30"]) <= 1 for r in rows)
    base = CITYSCAPES_STL_PUBLISHED if kind == "cityscapes" else NYUV2_STL_PUBLISHED
    assert {f"metric:{k}" for k in base} <= set(rows[0])


@needs_pil
def test_celeba_quick_comparison(tmp_path: Path) -> None:
    write_celeba_fixture(tmp_path / "celeba")
    bm = dataclasses.replace(celeba_benchmark(str(tmp_path / "celeba"), image_size=16), model=_tiny_celeba)
    rows = _quick(bm, "ew,famo,fairgrad,samo", tmp_path / "out")
    assert {r["method"] for r in rows} == {"EW", "FAMO", "FairGrad", "SAMO"}
    assert all(0 <= float(r[f"metric:f1_{a}"]) <= 1 for r in rows for a in CELEBA_ATTRIBUTES)
    assert len(list((tmp_path / "cache" / "celeba").glob("*.pt"))) == 3  # train, val, test decoded once


@needs_pil
@pytest.mark.parametrize("name", ["office31", "office_home"])
def test_office_quick_comparison(name: str, tmp_path: Path) -> None:
    if name == "office31":
        write_office_fixture(tmp_path / name)
    else:
        write_office_fixture(tmp_path / name, ("Art", "Clipart", "Product", "Real World"), classes=("a", "b"),
                             per_class=(5, 6), images_dir=False)  # fmt: skip
    bm = office_benchmark(name, str(tmp_path / name), image_size=32)
    k = len(bm.tasks)
    bm = dataclasses.replace(bm, model=lambda: _tiny_office(k))
    rows = _quick(bm, "ew,mgda", tmp_path / "out")
    assert {r["method"] for r in rows} == {"EW", "MGDA"}
    assert all(0 <= float(r[f"metric:acc_{t}"]) <= 1 for r in rows for t in bm.tasks)
