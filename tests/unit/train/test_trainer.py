"""Trainer: logs, checkpoints, exact resume after a kill, determinism, non-finite losses, progress line."""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.train import BatchStream, Trainer, atomic_save
from molearn.train import _checkpoint as ckpt

from . import _problem
from ._problem import build

HERE = Path(__file__).resolve().parent
TIME_COLUMNS = {"time", "elapsed", "epoch_time"}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(f)]


def params(trainer: Trainer) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_same_params(a: Trainer, b: Trainer) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), f"parameter {k} differs"


def assert_same_state(a: Any, b: Any) -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    else:
        assert a == b


class CrashError(Exception):
    """Stands for a crash in the middle of a step (the in-process variant of a kill)."""


def crashing_loss(after_calls: int) -> Any:
    calls = {"n": 0}

    def loss(model: nn.Module, batch: Any) -> Tensor:
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise CrashError
        return _problem.loss_fn(model, batch)

    return loss


# ---------------------------------------------------------------------------------------------- basics
def test_logs_and_epoch_records(tmp_path: Path) -> None:
    trainer, loader = build("mgda", tmp_path, objective_names=["a", "b"])
    history = trainer.fit(loader, epochs=3, eval_fn=lambda m: {"acc": torch.tensor(0.5)})
    assert trainer.global_step == 3 * len(loader) == 18
    steps = rows(tmp_path / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 19))
    assert [int(r["epoch"]) for r in steps] == [1] * 6 + [2] * 6 + [3] * 6
    first = steps[0]
    for col in ("loss_a", "loss_b", "weight_a", "weight_b", "conflict", "lr", "skipped"):
        assert first[col] != "", col
    w = [float(first["weight_a"]), float(first["weight_b"])]
    assert all(x >= 0 for x in w) and sum(w) == pytest.approx(1.0, abs=1e-5)  # MGDA: simplex weights
    assert -1.0 <= float(first["conflict"]) <= 1.0
    epochs = rows(tmp_path / "epochs.csv")
    assert [int(r["epoch"]) for r in epochs] == [1, 2, 3] and [r["acc"] for r in epochs] == ["0.5"] * 3
    # epoch means of the step losses
    mean_a = sum(float(r["loss_a"]) for r in steps[:6]) / 6
    assert float(epochs[0]["train_loss_a"]) == pytest.approx(mean_a)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert float(epochs[-1]["lr"]) == pytest.approx(0.05 * 0.7)  # StepLR(2, 0.7) stepped per epoch
    assert (tmp_path / "checkpoint.pt").exists()
    assert history[-1]["train_loss_a"] < history[0]["train_loss_a"]  # it learns


def test_loss_only_method_logs_no_conflict_and_metrics_fn(tmp_path: Path) -> None:
    seen: list[bool] = []

    def metrics(model: nn.Module, batch: Any) -> dict[str, Any]:
        seen.append(model.training or torch.is_grad_enabled())
        return {"n": len(batch[0])}

    trainer, loader = build("ew", tmp_path, metrics_fn=metrics)
    trainer.fit(loader, epochs=1)
    steps = rows(tmp_path / "steps.csv")
    assert all(r["conflict"] == "" for r in steps)  # no gradients, no cosines
    assert [float(r["n"]) for r in steps] == [16.0] * 6
    assert seen and not any(seen)  # eval mode, no grad
    assert trainer.model.training


def test_epoch_is_len_loader_batches_for_multi_batch_methods(tmp_path: Path) -> None:
    # 5 batches per pass, MoDo draws 3 per step: 3, 6, 9, 12, 15 batches drawn after steps 1..5
    trainer, loader = build("modo", tmp_path, n=80)
    history = trainer.fit(loader, epochs=3)
    assert len(loader) == 5
    assert [h["step"] for h in history] == [2, 4, 5]
    assert trainer._position == {"pass": 2, "batch": 5, "drawn": 15, "seed": 0}


def test_stream_order_is_owned_by_the_trainer() -> None:
    ds = _problem.data(12)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)

    def order(seed: int, noise: bool) -> list[Tensor]:
        s = BatchStream(loader, seed)
        out = []
        for _ in range(7):
            if noise:
                torch.rand(3)  # the global RNG must not matter
            out.append(s()[0])
        return out

    a, b, c = order(1, False), order(1, True), order(2, False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    # each pass is a permutation of the data set, and passes differ
    p0, p1 = torch.cat(a[:3]), torch.cat(a[3:6])
    assert torch.equal(p0[p0[:, 0].argsort()], p1[p1[:, 0].argsort()])
    assert not torch.equal(p0, p1)
    # seeking to a position continues with the same batches
    s = BatchStream(loader, 1)
    for _ in range(4):
        s()
    t = BatchStream(loader, 1)
    t.seek(s.state_dict())
    assert all(torch.equal(s()[0], t()[0]) for _ in range(4))


# ------------------------------------------------------------------------------------------ determinism
def test_deterministic_with_a_seed(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b", "c"):
        trainer, loader = build("pcgrad", tmp_path / name, seed=3 if name != "c" else 4)
        torch.manual_seed(len(name) * 99 + ord(name))  # the global RNG before fit must not matter
        trainer.fit(loader, epochs=2)
        runs.append(trainer)
    assert_same_params(runs[0], runs[1])
    assert rows(tmp_path / "a" / "steps.csv") == rows(tmp_path / "b" / "steps.csv")
    assert rows(tmp_path / "a" / "epochs.csv") == rows(tmp_path / "b" / "epochs.csv")
    assert not torch.equal(params(runs[0])["trunk.0.weight"], params(runs[2])["trunk.0.weight"])


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    ("method", "scheduler_step", "crash_after"),
    [("moco", "epoch", 23), ("modo", "step", 17), ("famo", "step", 30), ("rlw", "epoch", 11)],
)
def test_resume_after_crash_is_exact(
    tmp_path: Path, method: str, scheduler_step: str, crash_after: int
) -> None:
    epochs = 4
    full, loader = build(method, tmp_path / "full", scheduler_step=scheduler_step, checkpoint_every=3)
    full.fit(loader, epochs=epochs)

    crashed, loader = build(
        method,
        tmp_path / "run",
        scheduler_step=scheduler_step,
        checkpoint_every=3,
        loss=crashing_loss(crash_after),
    )
    with pytest.raises(CrashError):
        crashed.fit(loader, epochs=epochs)
    saved = ckpt.load(tmp_path / "run" / "checkpoint.pt")
    assert 0 < saved["global_step"] < full.global_step

    torch.manual_seed(999)
    random.seed(999)  # a fresh process would have other global RNG states
    resumed, loader = build(method, tmp_path / "run", scheduler_step=scheduler_step, checkpoint_every=3)
    resumed.fit(loader, epochs=epochs, resume=True)
    assert resumed.global_step == full.global_step
    assert_same_params(full, resumed)
    assert_same_state(full.optimizer.state_dict(), resumed.optimizer.state_dict())
    assert_same_state(full.balancer.state_dict(), resumed.balancer.state_dict())
    assert_same_state(full.scheduler.state_dict(), resumed.scheduler.state_dict())
    assert rows(tmp_path / "full" / "steps.csv") == rows(tmp_path / "run" / "steps.csv")
    assert rows(tmp_path / "full" / "epochs.csv") == rows(tmp_path / "run" / "epochs.csv")


CHILD = """
import sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads({threads})
import _problem
trainer, loader = _problem.build("famo", {log_dir!r}, sleep=0.01, scheduler_step="step", checkpoint_every=3)
trainer.fit(loader, epochs={epochs}, resume=True)
print("finished", flush=True)
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    epochs = 6  # 36 steps, each sleeping 2 x 10 ms in the child (FAMO evaluates the losses twice)
    log_dir = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(
        CHILD.format(here=str(HERE), threads=torch.get_num_threads(), log_dir=str(log_dir), epochs=epochs)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    target = log_dir / "checkpoint.pt"
    deadline = time.monotonic() + 60
    try:
        while not target.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the child wrote no checkpoint"
            time.sleep(0.005)
        time.sleep(random.Random(os.getpid()).uniform(0.0, 0.2))  # anywhere after the first checkpoint
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = ckpt.load(target)
    assert 0 < saved["global_step"] < epochs * 6, "the kill came too late to test anything"

    full, loader = build("famo", tmp_path / "full", scheduler_step="step", checkpoint_every=3)
    full.fit(loader, epochs=epochs)
    resumed, loader = build("famo", log_dir, scheduler_step="step", checkpoint_every=3)
    resumed.fit(loader, epochs=epochs, resume=True)
    assert_same_params(full, resumed)
    assert_same_state(full.balancer.state_dict(), resumed.balancer.state_dict())
    assert_same_state(full.optimizer.state_dict(), resumed.optimizer.state_dict())
    assert rows(tmp_path / "full" / "steps.csv") == rows(log_dir / "steps.csv")
    assert rows(tmp_path / "full" / "epochs.csv") == rows(log_dir / "epochs.csv")


def test_resume_restores_a_method_generator(tmp_path: Path) -> None:
    def rlw() -> Any:
        return molearn.methods.get("rlw", generator=torch.Generator().manual_seed(5))

    full, loader = build(rlw(), tmp_path / "full", checkpoint_every=3)
    full.fit(loader, epochs=3)
    crashed, loader = build(rlw(), tmp_path / "run", checkpoint_every=3, loss=crashing_loss(10))
    with pytest.raises(CrashError):
        crashed.fit(loader, epochs=3)
    resumed, loader = build(rlw(), tmp_path / "run", checkpoint_every=3)
    resumed.fit(loader, epochs=3, resume=True)
    assert_same_params(full, resumed)
    assert rows(tmp_path / "full" / "steps.csv") == rows(tmp_path / "run" / "steps.csv")


def test_fit_continues_with_more_epochs(tmp_path: Path) -> None:
    once, loader = build("cagrad", tmp_path / "once")
    once.fit(loader, epochs=3)
    twice, loader = build("cagrad", tmp_path / "twice")
    twice.fit(loader, epochs=1)
    twice.fit(loader, epochs=3)
    assert_same_params(once, twice)
    assert rows(tmp_path / "once" / "steps.csv") == rows(tmp_path / "twice" / "steps.csv")


def test_checkpoint_checks_and_fresh_resume(tmp_path: Path) -> None:
    trainer, loader = build("ew", tmp_path)
    trainer.fit(loader, epochs=1, resume=True)  # nothing to resume from: a fresh run
    assert trainer.global_step == 6
    other, loader = build("ew", tmp_path, seed=5)
    with pytest.raises(ValueError, match="seed=0"):
        other.fit(loader, epochs=2, resume=True)
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        other.fit(loader, epochs=2, resume=tmp_path / "nothing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"bad\.pt"):
        other.fit(loader, epochs=2, resume=tmp_path / "bad.pt")


def test_atomic_save_keeps_the_old_file_when_writing_dies(tmp_path: Path, monkeypatch: Any) -> None:
    target = tmp_path / "checkpoint.pt"
    atomic_save({"format": 1, "x": torch.arange(3)}, target)

    def dying_save(obj: Any, f: Any) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"format": 1, "x": torch.arange(5)}, target)
    monkeypatch.undo()
    assert torch.equal(ckpt.load(target)["x"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary left behind


# ------------------------------------------------------------------------------------------ bad input
def test_nonfinite_loss_names_step_and_objective_and_keeps_checkpoint(tmp_path: Path) -> None:
    calls = {"n": 0}

    def loss(model: nn.Module, batch: Any) -> Tensor:
        calls["n"] += 1
        out = _problem.loss_fn(model, batch)
        if calls["n"] == 8:
            return torch.stack([out[0], out[1] * float("nan")])
        return out

    trainer, loader = build("mgda", tmp_path, checkpoint_every=3, loss=loss)
    with pytest.raises(molearn.NonFiniteLossError, match=r"step 8 \(epoch 2\).*objective\(s\) \[1\]") as err:
        trainer.fit(loader, epochs=3)
    assert "checkpoint.pt" in str(err.value)
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    assert saved["global_step"] == 6  # the last good one (end of epoch 1; step 6 is also a multiple of 3)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert [int(r["step"]) for r in rows(tmp_path / "steps.csv")] == list(range(1, 8))


def test_bad_arguments(tmp_path: Path) -> None:
    model = _problem.Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyError, match="known"):
        Trainer(model, _problem.loss_fn, "nope", opt)
    with pytest.raises(ValueError, match="scheduler_step"):
        Trainer(model, _problem.loss_fn, "ew", opt, scheduler_step="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint_every"):
        Trainer(model, _problem.loss_fn, "ew", opt, checkpoint_every=0)
    with pytest.raises(ValueError, match="log_dir"):
        Trainer(model, _problem.loss_fn, "ew", opt, tensorboard=True)
    trainer = Trainer(model, _problem.loss_fn, "ew", opt, objective_names=["only"])
    with pytest.raises(ValueError, match="1 objective names for 2 objectives"):
        trainer.fit([(torch.randn(4, 6), torch.randn(4, 2))], epochs=1)
    with pytest.raises(TypeError, match="length"):
        trainer.fit(iter([]), epochs=1)


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    model = _problem.Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            Trainer(model, _problem.loss_fn, "ew", opt, log_dir=tmp_path, tensorboard=True)
        return
    trainer = Trainer(model, _problem.loss_fn, "ew", opt, log_dir=tmp_path, tensorboard=True, progress=False)
    trainer.fit([(torch.randn(4, 6), torch.randn(4, 2))] * 2, epochs=1)
    assert any((tmp_path / "tensorboard").iterdir())


# -------------------------------------------------------------------------------------------- progress
class FakeTTY(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_line_only_on_a_terminal(monkeypatch: Any, tty: bool) -> None:
    stream = FakeTTY(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    trainer, loader = build("ew", None)
    trainer.progress = True
    trainer.fit(loader, epochs=2)
    out = stream.getvalue()
    if tty:
        assert out.startswith("\r") and "epoch 1/2 step 1 loss" in out and "eta" in out and out.endswith("\n")
    else:
        assert out == ""

