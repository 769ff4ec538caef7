"""A small trainer for multi-objective models, built on :meth:`molearn.Balancer.step`."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._balancer import Balancer, Mode, NonFiniteLossError, StepInfo
from ..engine import all_finite
from ..methods import Method, get
from . import _checkpoint as ckpt
from ._data import BatchStream
from ._log import TB_HINT, CsvLog, Progress, TensorBoardLog, format_eta
from ._ranks import Ranks, unwrap

__all__ = ["Trainer"]

FORMAT = 1
#: the keys every checkpoint of this format holds (a file without them is refused, naming it)
REQUIRED = (
    "format",
    "seed",
    "global_step",
    "epoch",
    "position",
    "model",
    "optimizer",
    "scheduler",
    "balancer",
    "method_generators",
    "rng",
    "acc",
    "history",
    "elapsed",
    "logs",
)
LossFn = Callable[[nn.Module, Any], "Tensor | Sequence[Tensor]"]
MetricsFn = Callable[[nn.Module, Any], Mapping[str, Any]]
EvalFn = Callable[[nn.Module], Mapping[str, Any]]


def _tensors(obj: Any) -> list[Tensor]:
    """The tensors inside nested dicts/lists/tuples."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _scalar(value: Any) -> float:
    return float(value.detach().cpu()) if isinstance(value, Tensor) else float(value)


def _ddp_keys(state: Mapping[str, Any]) -> bool:
    return bool(state) and all(str(k).startswith("module.") for k in state)


def _portable(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's state with its ``Counter`` entries (MultiStepLR's milestones) as plain dicts:
    ``torch.load(weights_only=True)`` of torch 2.3 refuses ``collections.Counter``."""
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in state.items()}


def _like(current: dict[str, Any], saved: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` with the ``Counter`` entries that :func:`_portable` turned into dicts restored."""
    return {
        k: Counter(v) if isinstance(current.get(k), Counter) and isinstance(v, dict) else v
        for k, v in saved.items()
    }


class Trainer:
    """Train one model against K objectives with a balancing method, as a user's own loop would.

    Every step is one :meth:`molearn.Balancer.step` (no per-method code): it draws as many batches as the
    method needs (MoDo/SDMGrad: 3) from an endless stream of passes over the training loader, combines
    the K gradients, steps the optimiser and feeds post-step losses back (FAMO). **An epoch is
    ``len(loader)`` batches drawn**: it ends after the step that drew its last batch, so a multi-batch step
    may straddle two passes and an epoch has about ``len(loader) / batches`` steps.

    Args:
        model: the model (put in train mode; eval mode while ``eval_fn``/``metrics_fn`` run).
        loss_fn: ``loss_fn(model, batch)`` returns the K losses (a (K,) tensor or a sequence of scalars).
            It moves the batch to the model's device itself.
        method: a :class:`~molearn.methods.Method` or its registry name (``"mgda"``).
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters.
        shared: the shared parameters. Default: ``model.shared_parameters()`` if the model defines it,
            otherwise all of the model's parameters (then there are no task-specific ones).
        tasks: task-specific parameters (default: found by the Balancer, see there).
        scheduler: a learning-rate scheduler, stepped once per epoch or per step (``scheduler_step``).
        log_dir: where ``steps.csv`` (one row per step: step, 1-based epoch, losses, weights, ``conflict``,
            the mean pairwise cosine of the objectives' gradients, learning rate, time, ``info_*`` method
            diagnostics), ``epochs.csv`` (one row per epoch:
            mean training losses and ``eval_fn``'s metrics), ``checkpoint.pt`` and ``tensorboard/`` go.
            ``None``: no files.
        checkpoint_every: also checkpoint every this many steps (a checkpoint is always written at the
            end of each epoch and of :meth:`fit` when ``log_dir`` is set).
        seed: seeds the global ``torch`` and ``random`` generators when a fresh run starts (dropout,
            stochastic methods without their own generator) and the data order: pass ``p`` over the
            loader is shuffled by a ``torch.Generator`` seeded from ``(seed, p)``, installed as the
            DataLoader's and its sampler's ``generator``.
        progress: a status line on stderr when it is a terminal.
        tensorboard: also write the logged scalars to TensorBoard (needs the ``tensorboard`` package).
        metrics_fn: ``metrics_fn(model, batch) -> {name: value}`` on the step's last batch, logged with
            the step (under ``torch.no_grad``; an extra forward pass per step).
        objective_names: names of the K objectives for the log columns (default ``0..K-1``).
        mode: passed to :class:`~molearn.Balancer`.
        on_nonfinite: what a non-finite step does (the Balancer's finite check: losses, per-objective
            gradients, the method's weights, the update): ``"raise"`` stops the run with a
            :class:`~molearn.NonFiniteLossError` naming the step, the objective and the stage;
            ``"skip"`` drops the step (no update, no optimiser step) and goes on: its row in
            ``steps.csv`` has ``skipped = 1`` and the reason in ``nonfinite``, and the epoch's mean
            losses leave it out (``skipped`` in ``epochs.csv`` counts such steps).
        distributed: passed to :class:`~molearn.Balancer` (``None``: detected; a model wrapped in
            ``DistributedDataParallel`` under ``torchrun`` needs nothing).

    **Several processes** (docs/distributed.md): wrap the model in ``DistributedDataParallel`` and give each
    rank its own loader over an equal slice of the data (a ``DistributedSampler``; the Trainer calls its
    ``set_epoch`` once per pass). Every rank then takes the update of the union batch and holds the same
    parameters and method state; rank 0 alone writes the logs, TensorBoard and the checkpoint (call
    :meth:`save_checkpoint` on every rank: the others wait for rank 0's write and raise if it failed), and
    ``resume`` makes every rank read rank 0's file (a filesystem all ranks see), also with another number of
    processes.

    Checkpoints hold the model, optimiser, scheduler, Balancer/method state (including any
    ``torch.Generator`` attribute of the method), the stream position (pass, batch) and the global RNG
    states; resuming (``fit(..., resume=True)``) continues bit-for-bit like an uninterrupted run on the
    CPU. Files are replaced atomically, so a killed run leaves the last complete checkpoint (a temporary
    file left by a kill during the write is removed on resume), and the CSV logs are cut back to the
    checkpoint's rows on resume. ``numpy``'s global generator is not saved. Checkpoints hold tensors and
    plain data only and are read with ``torch.load(weights_only=True)``: a file holding anything else is
    refused, never unpickled. A checkpoint is written only when the model and optimiser states are finite
    (otherwise the run stops, and the last checkpoint stays the last good one); an error while writing
    (disk full, permissions) leaves the previous checkpoint intact and says so.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        method: Method | str,
        optimizer: torch.optim.Optimizer,
        *,
        shared: Iterable[Tensor] | None = None,
        tasks: Iterable[Tensor] | None = None,
        scheduler: Any = None,
        scheduler_step: Literal["epoch", "step"] = "epoch",
        log_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        seed: int = 0,
        progress: bool = True,
        tensorboard: bool = False,
        metrics_fn: MetricsFn | None = None,
        objective_names: Sequence[str] | None = None,
        mode: Mode = "auto",
        on_nonfinite: Literal["raise", "skip"] = "raise",
        distributed: bool | None = None,
    ) -> None:
        if isinstance(method, str):
            method = get(method)
        if scheduler_step not in ("epoch", "step"):
            raise ValueError(f"scheduler_step must be 'epoch' or 'step', got {scheduler_step!r}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps, got {checkpoint_every}")
        if tensorboard and log_dir is None:
            raise ValueError("tensorboard=True needs a log_dir")
        if shared is None:
            own = getattr(unwrap(model), "shared_parameters", None)
            shared = own() if callable(own) else model.parameters()
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_step = scheduler_step
        self.balancer = Balancer(
            method, shared, tasks, mode=mode, on_nonfinite=on_nonfinite, module=model, distributed=distributed
        )
        self.ranks = Ranks(self.balancer.collective)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.checkpoint_every = checkpoint_every
        self.seed = int(seed)
        self.progress = progress
        self.tensorboard = tensorboard
        if tensorboard:
            try:
                import torch.utils.tensorboard  # noqa: F401
            except ImportError as err:
                raise ImportError(TB_HINT) from err
        self.metrics_fn = metrics_fn
        self.objective_names = None if objective_names is None else [str(n) for n in objective_names]
        self.global_step = 0
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []  # one record per completed epoch
        self.last_info: StepInfo | None = None
        self._position: dict[str, int] | None = None  # stream position after the last step
        self._length: int | None = None  # batches per pass of the loader the position refers to
        self._acc: dict[str, Any] = {"steps": 0, "losses": None, "time": 0.0, "skipped": 0}
        self._elapsed = 0.0
        self._saved: tuple[Path, int] | None = None  # the last checkpoint this trainer wrote or read
        self._log_offsets: dict[str, int] = {}
        self._steps_log: CsvLog | None = None
        self._epochs_log: CsvLog | None = None
        self._tb: TensorBoardLog | None = None

    @property
    def method(self) -> Method:
        return self.balancer.method

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.log_dir is None else self.log_dir / "checkpoint.pt"

    # ------------------------------------------------------------------ checkpoints
    def _method_generators(self) -> dict[str, torch.Generator]:
        return {k: v for k, v in vars(self.method).items() if isinstance(v, torch.Generator)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (what :meth:`save_checkpoint` writes)."""
        return {
            "format": FORMAT,
            "seed": self.seed,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "position": self._position,
            "length": self._length,
            "world_size": self.ranks.world,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else _portable(self.scheduler.state_dict()),
            "balancer": self.balancer.state_dict(),
            "method_generators": {k: g.get_state() for k, g in self._method_generators().items()},
            "rng": ckpt.capture_rng(),
            "acc": self._acc,
            "history": self.history,
            "elapsed": self._elapsed,
            "logs": dict(self._log_offsets),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the global RNG states last, so nothing consumes them after)."""
        if state.get("format") != FORMAT:
            raise RuntimeError(f"unsupported checkpoint format {state.get('format')!r}")
        missing = [k for k in REQUIRED if k not in state]
        if missing:
            raise RuntimeError(f"the checkpoint misses {', '.join(map(repr, missing))}")
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"the checkpoint was written with seed={state['seed']}, this trainer has seed={self.seed}"
            )
        inner = unwrap(self.model)
        model_state = state["model"]
        if _ddp_keys(model_state) and not _ddp_keys(inner.state_dict()):
            # written from a DistributedDataParallel's own state_dict: its keys start with "module."
            model_state = {k[len("module.") :]: v for k, v in model_state.items()}
        inner.load_state_dict(model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError("the checkpoint and this trainer disagree on having a scheduler")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(_like(self.scheduler.state_dict(), state["scheduler"]))
        self.balancer.load_state_dict(state["balancer"])
        gens = self._method_generators()
        for name, gen_state in state["method_generators"].items():
            if name in gens:
                gens[name].set_state(gen_state)
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self._position = state["position"]
        self._length = state.get("length")
        self._acc = {"skipped": 0, **dict(state["acc"])}
        self.history = list(state["history"])
        self._elapsed = float(state["elapsed"])
        self._log_offsets = dict(state["logs"])
        per_rank = state.get("rng_ranks")
        # each rank its own generators when the world size is the same, rank 0's otherwise
        if isinstance(per_rank, (list, tuple)) and len(per_rank) == self.ranks.world:
            ckpt.restore_rng(per_rank[self.ranks.rank])
        else:
            ckpt.restore_rng(state["rng"])

    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the checkpoint atomically (default: ``log_dir/checkpoint.pt``); logs are synced first.

        Under several processes call it on every rank: each rank's random-generator states are gathered,
        rank 0 writes the file and the others wait until it has (they raise if rank 0's write failed)."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path: give one or set log_dir")
        if not self.ranks.active:
            return self._write_checkpoint(target)
        rngs = self.ranks.gather(ckpt.capture_rng())
        what = f"write checkpoint {os.fspath(target)!r}"
        self._on_writer(lambda: self._write_checkpoint(target, rngs), what)
        self._saved = (target, self.global_step)
        return target

    def _on_writer(self, fn: Callable[[], Any], what: str) -> None:
        """Run ``fn`` on rank 0 and tell every rank whether it succeeded: the others wait for it (a
        barrier) and raise if it failed, instead of waiting for rank 0 in the next step's collectives."""
        failure: BaseException | None = None
        if self.ranks.writer:
            try:
                fn()
            except BaseException as err:  # told to every rank below, then raised here
                failure = err
        told = self.ranks.broadcast(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if told is not None:
            raise RuntimeError(f"rank 0 could not {what}: {told}")

    def _write_checkpoint(self, target: Path, rngs: list[Any] | None = None) -> Path:
        for name, log in (("steps", self._steps_log), ("epochs", self._epochs_log)):
            if log is not None:
                log.sync()
                self._log_offsets[name] = log.offset()
        if self._tb is not None:
            self._tb.flush()
        state = self.state_dict()
        if rngs is not None:
            state["rng_ranks"] = rngs
        self._check_finite_state(state, target)
        ckpt.check_plain(state)
        ckpt.atomic_save(state, target)
        self._saved = (target, self.global_step)
        return target

    def _check_finite_state(self, state: Mapping[str, Any], target: Path) -> None:
        """Refuse to overwrite a checkpoint with a non-finite model or optimiser state (one host sync per
        checkpoint): a checkpoint must stay a point to resume from."""
        tensors = [
            t
            for part in (state["model"], state["optimizer"].get("state", {}))
            for t in _tensors(part)
            if t.is_floating_point()
        ]
        if not tensors or bool(all_finite(tensors, tensors[0].device)):
            return
        bad = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        what = f"model entries {bad[:5]}" if bad else "the optimiser state"
        raise NonFiniteLossError(
            f"step {self.global_step}: {what} hold NaN/Inf, so the checkpoint was not written; "
            f"{self._last_checkpoint()}",
            stage="model",
        )

    def _last_checkpoint(self) -> str:
        if self._saved is None:
            return "no checkpoint was written"
        path, step = self._saved
        return f"the last good checkpoint is {os.fspath(path)!r} (step {step})"

    def load_checkpoint(self, path: str | os.PathLike[str] | None = None) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` (default: ``log_dir/checkpoint.pt``); every
        error (unreadable, unsafe, incomplete or mismatching file) names it."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path: give one or set log_dir")
        state = ckpt.load(target, required=REQUIRED)
        try:
            self.load_state_dict(state)
        except ValueError as err:
            raise ValueError(f"checkpoint {os.fspath(target)!r}: {err}") from err
        except Exception as err:
            raise RuntimeError(f"checkpoint {os.fspath(target)!r}: {err}") from err
        self._saved = (target, self.global_step)

    def _found(self, path: Path) -> bool:
        """Whether the checkpoint exists, the same answer on every rank: after a barrier (rank 0 has
        finished any write and removed stale temporaries), each rank looks; a rank that does not see
        rank 0's file (no shared filesystem) makes every rank raise."""
        if not self.ranks.active:
            return path.exists()
        self.ranks.barrier()
        seen = self.ranks.gather(path.exists())
        if seen[0] and not all(seen):
            missing = [r for r, s in enumerate(seen) if not s]
            raise FileNotFoundError(
                f"rank 0 has checkpoint {os.fspath(path)!r} but rank(s) {missing} do not see it: resuming "
                "under several processes reads rank 0's file on every rank (a filesystem all ranks share)"
            )
        return bool(seen[0])

    def _mapped(self, position: dict[str, int], length: int) -> dict[str, int]:
        """The saved stream position for a loader of ``length`` batches per pass.

        With the length the checkpoint was written with (the same world size, or another one with the
        same global batch size) the position is kept: pass ``p``, batch ``j``. Otherwise (another world
        size with the same per-rank batch size) only a checkpoint at the end of an epoch that ended a pass
        maps: the run continues with the next pass at its first batch."""
        saved = self._length
        if saved is None or saved == length:
            return position
        done = int(position["drawn"])
        if done == self.epoch * saved and int(position["batch"]) in (0, saved):
            return {**position, "pass": self.epoch, "batch": 0, "drawn": self.epoch * length}
        raise ValueError(
            f"the checkpoint was written at batch {position['batch']} of {saved} in pass {position['pass']}, "
            f"but the training loader now has {length} batches per pass (another number of processes or "
            "batch size): the position does not map. Keep the global batch size (per-rank batch = global / "
            "world size) so that the loader keeps its length, or resume from a checkpoint written at the end "
            "of an epoch"
        )

    # ------------------------------------------------------------------ logging
    def _open_logs(self, resumed: bool) -> None:
        if self.log_dir is None:
            return
        fresh = self.global_step == 0 and not resumed
        self._steps_log = CsvLog(self.log_dir / "steps.csv", fresh)
        self._epochs_log = CsvLog(self.log_dir / "epochs.csv", fresh)
        if resumed:
            self._steps_log.truncate(self._log_offsets.get("steps", 0))
            self._epochs_log.truncate(self._log_offsets.get("epochs", 0))
        if self.tensorboard:
            self._tb = TensorBoardLog(self.log_dir / "tensorboard", purge_step=self.global_step + 1)

    def _close_logs(self) -> None:
        for log in (self._steps_log, self._epochs_log):
            if log is not None:
                log.close()
        if self._tb is not None:
            self._tb.close()
        self._steps_log = self._epochs_log = self._tb = None

    def _names(self, k: int) -> list[str]:
        names = self.objective_names or [str(i) for i in range(k)]
        if len(names) != k:
            raise ValueError(f"{len(names)} objective names for {k} objectives")
        return names

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _step_row(self, info: StepInfo, seconds: float, batch: Any) -> dict[str, Any]:
        losses = info.losses.detach().cpu().tolist()
        names = self._names(len(losses))
        row: dict[str, Any] = {
            "step": self.global_step,
            "epoch": self.epoch + 1,
            "time": seconds,
            "elapsed": self._elapsed,
            "lr": self._lr(),
            "skipped": int(info.skipped),
            "nonfinite": info.reason,
        }
        row.update({f"loss_{n}": v for n, v in zip(names, losses)})
        weights = None if info.weights is None else info.weights.detach().cpu().tolist()
        row.update({f"weight_{n}": "" if weights is None else weights[i] for i, n in enumerate(names)})
        conflict: Any = ""
        if info.cosines is not None and len(losses) > 1:
            iu = torch.triu_indices(len(losses), len(losses), 1)
            conflict = float(info.cosines.detach()[iu[0], iu[1]].mean().cpu())
        row["conflict"] = conflict
        for key, value in info.info.items():
            flat = value.detach().reshape(-1).cpu().tolist()
            if len(flat) == 1:
                row[f"info_{key}"] = flat[0]
            else:
                row.update({f"info_{key}_{i}": v for i, v in enumerate(flat)})
        if self.metrics_fn is not None:
            row.update({k: _scalar(v) for k, v in self._evaluate(self.metrics_fn, batch).items()})
        return row

    def _evaluate(self, fn: Callable[..., Mapping[str, Any]], *args: Any) -> Mapping[str, Any]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return fn(self.model, *args)
        finally:
            self.model.train(was_training)

    def _accumulate(self, row: Mapping[str, Any], names: list[str], seconds: float) -> None:
        self._acc["time"] += seconds
        if row["skipped"]:  # its losses are not finite: the epoch's means leave it out
            self._acc["skipped"] = self._acc.get("skipped", 0) + 1
            return
        losses = [row[f"loss_{n}"] for n in names]
        prev = self._acc["losses"]
        self._acc["losses"] = losses if prev is None else [a + b for a, b in zip(prev, losses)]
        self._acc["steps"] += 1

    def _end_epoch(self, eval_fn: EvalFn | None) -> dict[str, Any]:
        self.epoch += 1
        steps = max(1, int(self._acc["steps"]))
        sums = self._acc["losses"] or []
        names = self._names(len(sums)) if sums else []
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.global_step,
            "elapsed": self._elapsed,
            "epoch_time": self._acc["time"],
            "lr": self._lr(),
            "skipped": int(self._acc.get("skipped", 0)),
        }
        record.update({f"train_loss_{n}": s / steps for n, s in zip(names, sums)})
        if eval_fn is not None:
            for key, value in self._evaluate(eval_fn).items():
                if key in record:
                    raise ValueError(f"eval_fn returned the reserved column name {key!r}")
                record[key] = _scalar(value)
        if self.scheduler is not None and self.scheduler_step == "epoch":
            self.scheduler.step()
        self._acc = {"steps": 0, "losses": None, "time": 0.0, "skipped": 0}
        self.history.append(record)
        if self._epochs_log is not None:
            self._epochs_log.write(record)
        if self._tb is not None:
            self._tb.write(record, self.global_step, "epoch")
        return record

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train_loader: Iterable[Any],
        epochs: int,
        eval_fn: EvalFn | None = None,
        *,
        resume: bool | str | os.PathLike[str] = False,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete; returns one record per epoch (losses, metrics).

        ``eval_fn(model) -> {metric: value}`` runs at the end of every epoch (eval mode, no grad).
        ``resume=True`` continues from ``log_dir/checkpoint.pt`` when it exists (a fresh run otherwise);
        a path resumes from that file. Calling ``fit`` again with more epochs continues the run.
        Raises :class:`~molearn.NonFiniteLossError` naming the step, the objective and the stage on a
        non-finite step (``on_nonfinite="raise"``); the last checkpoint written stays as it was.
        """
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        stream = BatchStream(train_loader, self.seed)
        if self.ranks.active:  # every rank must take the same number of steps per epoch
            lengths = self.ranks.gather(stream.length)
            if len(set(lengths)) > 1:
                raise ValueError(
                    f"the ranks' training loaders have different lengths {lengths} (batches per pass, in "
                    "rank order): each rank needs an equal slice of the data (a DistributedSampler over the "
                    "same data set, the same batch size, drop_last alike)"
                )
        resumed = False
        if resume is not False:
            path = self.checkpoint_path if resume is True else Path(resume)
            if path is None:
                raise ValueError("resume=True needs a log_dir (or give the checkpoint's path)")
            if self.ranks.writer:
                ckpt.remove_stale(path)  # a kill while writing leaves its temporary file
            if self._found(path):
                self.load_checkpoint(path)
                resumed = True
            elif resume is not True:
                raise FileNotFoundError(f"no checkpoint at {os.fspath(path)!r}")
        if self.global_step == 0 and not resumed:
            torch.manual_seed(self.seed)
            random.seed(self.seed)
        if self._position is not None:
            self._position = self._mapped(self._position, stream.length)
            stream.seek(self._position)
        self._length = stream.length
        self.model.train()
        self._on_writer(lambda: self._open_logs(resumed), "open the logs")
        bar = Progress(self.progress and self.ranks.writer)
        length = stream.length
        start_step, t_start = self.global_step, time.perf_counter()
        per_step = max(1, self.method.needs.batches)

        def losses_of(batch: Any) -> Tensor | Sequence[Tensor]:
            return self.loss_fn(self.model, batch)

        try:
            while self.epoch < epochs:
                t0 = time.perf_counter()
                try:
                    info = self.balancer.step(losses_of, stream, self.optimizer)
                except NonFiniteLossError as err:
                    where = f"step {self.global_step + 1} (epoch {self.epoch + 1})"
                    raise NonFiniteLossError(
                        f"{where}: {err}; {self._last_checkpoint()}",
                        stage=err.stage,
                        objectives=err.objectives,
                    ) from err
                seconds = time.perf_counter() - t0
                self.global_step += 1
                self._elapsed += seconds
                self._position = stream.state_dict()
                self.last_info = info
                row = self._step_row(info, seconds, stream.last)
                self._accumulate(row, self._names(int(info.losses.shape[0])), seconds)
                if self._steps_log is not None:
                    self._steps_log.write(row)
                if self._tb is not None:
                    self._tb.write(row, self.global_step, "step")
                if self.scheduler is not None and self.scheduler_step == "step":
                    self.scheduler.step()
                done_epoch = False
                while stream.drawn >= (self.epoch + 1) * length and self.epoch < epochs:
                    self._end_epoch(eval_fn)
                    done_epoch = True
                every = self.checkpoint_every
                if self.log_dir is not None and (done_epoch or (every and self.global_step % every == 0)):
                    self.save_checkpoint()
                if bar.enabled:
                    rate = (self.global_step - start_step) / max(time.perf_counter() - t_start, 1e-9)
                    left = max(0, epochs * length - stream.drawn) / per_step
                    total = float(sum(row[k] for k in row if k.startswith("loss_")))
                    bar.update(
                        f"epoch {self.epoch + 1}/{epochs} step {self.global_step} loss {total:.4g} "
                        f"{rate:.1f} it/s eta {format_eta(left / max(rate, 1e-9))}"
                    )
        finally:
            bar.close()
            if self._steps_log is not None:
                self._steps_log.sync()
            if self._epochs_log is not None:
                self._epochs_log.sync()
            self._close_logs()
        return list(self.history)
