"""Issue 17, checkpoints: nothing in a checkpoint runs code, a failed or killed write keeps the previous
checkpoint, a non-finite model is never checkpointed, and a skipped step is logged."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.train import _checkpoint as ckpt

from . import _problem
from ._problem import build

HERE = Path(__file__).resolve().parent


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class _Payload:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


# ------------------------------------------------------------------------------------------ failure 1
def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    """``weights_only=False`` executed the payload during ``fit(..., resume=True)``."""
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "seed": _Payload(marker)}, tmp_path / "checkpoint.pt")
    trainer, loader = build("ew", tmp_path)
    with pytest.raises(
        RuntimeError, match=r"refusing to load checkpoint '.*checkpoint\.pt'.*posix\.mkdir|os\.mkdir"
    ):
        trainer.fit(loader, epochs=1, resume=True)
    assert not marker.exists()
    with pytest.raises(RuntimeError, match="refusing"):
        ckpt.load(tmp_path / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(molearn.methods.registry()))
def test_real_checkpoints_load_with_weights_only(tmp_path: Path, name: str) -> None:
    kwargs = {"fixed": {"weights": [1.0, 2.0]}, "autolambda": {"lr": 0.05}}.get(name, {})
    trainer, loader = build(molearn.methods.get(name, **kwargs), tmp_path, n=48, checkpoint_every=None)
    trainer.fit(loader, epochs=1)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # raises on anything unsafe
    assert state["global_step"] == trainer.global_step
    again, loader = build(molearn.methods.get(name, **kwargs), tmp_path, n=48, checkpoint_every=None)
    again.load_checkpoint()
    assert again.global_step == trainer.global_step


def test_an_unsafe_state_is_refused_before_writing(tmp_path: Path) -> None:
    trainer, loader = build("ew", tmp_path, checkpoint_every=None)
    trainer.fit(loader, epochs=1)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    trainer.scheduler.extra = lambda: 0  # type: ignore[attr-defined]  # state_dict picks it up
    with pytest.raises(TypeError, match=r"checkpoint\['scheduler'\]\['extra'\] is a builtins\.function"):
        trainer.save_checkpoint()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


# ------------------------------------------------------------------------------------------ failure 5
def test_missing_keys_name_the_file(tmp_path: Path) -> None:
    """A dict checkpoint with missing keys gave a bare ``KeyError``."""
    path = tmp_path / "partial.pt"
    torch.save({"format": 1, "seed": 0}, path)
    trainer, loader = build("ew", tmp_path / "run")
    with pytest.raises(RuntimeError, match=r"checkpoint '.*partial\.pt' misses 'global_step', 'epoch'"):
        trainer.fit(loader, epochs=1, resume=path)
    state = _good_state(tmp_path)
    state["model"] = {"nonsense": torch.zeros(1)}
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"checkpoint '.*partial\.pt': .*state_dict"):
        trainer.fit(loader, epochs=1, resume=path)


def _good_state(tmp_path: Path) -> dict[str, Any]:
    trainer, loader = build("ew", tmp_path / "good", n=32)
    trainer.fit(loader, epochs=1)
    return ckpt.load(tmp_path / "good" / "checkpoint.pt")


class _Overflowing(torch.optim.SGD):
    """SGD whose ``n``-th step overflows a weight (a huge learning rate would): finite gradients, a
    non-finite model."""

    def __init__(self, params: Any, n: int) -> None:
        super().__init__(params, lr=0.05)
        self.n, self.calls = n, 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        out = super().step(closure)
        self.calls += 1
        if self.calls == self.n:
            self.param_groups[0]["params"][0].mul_(float("inf"))
        return out


def test_a_non_finite_model_is_never_checkpointed(tmp_path: Path) -> None:
    """After a NaN checkpoint the error called that same file "the last good checkpoint"."""
    trainer, loader = build("mgda", tmp_path, checkpoint_every=2)
    trainer.optimizer = _Overflowing(trainer.model.parameters(), n=4)
    with pytest.raises(
        molearn.NonFiniteLossError, match=r"step 4: model entries \['trunk\.0\.weight'\]"
    ) as err:
        trainer.fit(loader, epochs=2)
    assert "the last good checkpoint is" in str(err.value) and "(step 2)" in str(err.value)
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    assert saved["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_the_error_names_only_checkpoints_of_this_run(tmp_path: Path) -> None:
    old, loader = build("ew", tmp_path, n=32)
    old.fit(loader, epochs=1)  # a checkpoint of an earlier run in the same folder

    def nan_at_first(model: nn.Module, batch: Any) -> Tensor:
        return _problem.loss_fn(model, batch) * float("nan")

    fresh, loader = build("ew", tmp_path, loss=nan_at_first)
    with pytest.raises(molearn.NonFiniteLossError, match="no checkpoint was written"):
        fresh.fit(loader, epochs=1)


def test_skip_policy_logs_the_step_and_keeps_the_means_finite(tmp_path: Path) -> None:
    calls = {"n": 0}

    def loss(model: nn.Module, batch: Any) -> Tensor:
        calls["n"] += 1
        out = _problem.loss_fn(model, batch)
        return torch.stack([out[0], out[1] * float("nan")]) if calls["n"] == 3 else out

    trainer, loader = build("ew", tmp_path, loss=loss, on_nonfinite="skip")
    history = trainer.fit(loader, epochs=1)
    steps = _rows(tmp_path / "steps.csv")
    assert [r["skipped"] for r in steps] == ["0", "0", "1", "0", "0", "0"]
    assert "non-finite loss for objective(s) [1]" in steps[2]["nonfinite"]
    assert all(r["nonfinite"] == "" for i, r in enumerate(steps) if i != 2)
    assert history[0]["skipped"] == 1 and trainer.balancer.skipped_steps == 1
    kept = [float(r["loss_1"]) for i, r in enumerate(steps) if i != 2]
    assert history[0]["train_loss_1"] == pytest.approx(sum(kept) / 5)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ------------------------------------------------------------------------------------ fault tolerance
def test_a_failed_write_keeps_the_previous_checkpoint_and_says_so(tmp_path: Path, monkeypatch: Any) -> None:
    trainer, loader = build("ew", tmp_path, checkpoint_every=None)
    trainer.fit(loader, epochs=1)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def disk_full(obj: Any, f: Any) -> None:
        real_save(obj, f)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(
        OSError, match=r"No space left on device.*previous checkpoint '.*checkpoint\.pt' is intact"
    ) as err:
        trainer.fit(loader, epochs=2)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()

    def no_permission(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", no_permission)
    with pytest.raises(PermissionError, match="is intact"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob(".checkpoint.pt*")) == []  # no temporary left behind
    with pytest.raises(OSError, match="no previous checkpoint exists"):
        monkeypatch.setattr(torch, "save", disk_full)
        ckpt.atomic_save({"format": 1}, tmp_path / "new.pt")


CHILD = """
import os, signal, sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads(1)
real_save = torch.save
count = {{"n": 0}}

def dying_save(obj, f):
    count["n"] += 1
    if count["n"] == 3:  # the third checkpoint: half written, then the process is killed
        f.write(b"PK" + b"\\0" * 100)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, f)

torch.save = dying_save
import _problem
trainer, loader = _problem.build("famo", {log_dir!r}, scheduler_step="step", checkpoint_every=2)
trainer.fit(loader, epochs=2)
"""


def test_a_run_killed_while_writing_resumes_from_the_last_complete_checkpoint(tmp_path: Path) -> None:
    log_dir = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(here=str(HERE), log_dir=str(log_dir)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    stale = list(log_dir.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1  # the half-written file the kill left
    assert ckpt.load(log_dir / "checkpoint.pt")["global_step"] == 4  # the second checkpoint, complete

    full, loader = build("famo", tmp_path / "full", scheduler_step="step", checkpoint_every=2)
    full.fit(loader, epochs=2)
    resumed, loader = build("famo", log_dir, scheduler_step="step", checkpoint_every=2)
    resumed.fit(loader, epochs=2, resume=True)
    assert not list(log_dir.glob(".checkpoint.pt.*.tmp"))
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    time_free = [
        {k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in _rows(log_dir / "steps.csv")
    ]
    expected = [
        {k: v for k, v in r.items() if k not in ("time", "elapsed")}
        for r in _rows(tmp_path / "full" / "steps.csv")
    ]
    assert time_free == expected
