"""Method API: what a method needs from the engine, what it receives and what it returns."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor

TaskGrad = Literal["own", "weighted"]
_F = TypeVar("_F", bound=Callable[..., Any])


def _without_grad(fn: _F) -> _F:
    """``fn`` run under ``torch.no_grad()``: a method never records an autograd graph, also when the
    engine (or a user) hands it a Gramian, Jacobian or losses that require grad."""
    if getattr(fn, "_molearn_no_grad", False):
        return fn

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return fn(*args, **kwargs)

    wrapped._molearn_no_grad = True  # type: ignore[attr-defined]
    return wrapped  # type: ignore[return-value]


def _validated_load(fn: _F) -> _F:
    """``load_state_dict`` made safe: the state is checked first (:func:`check_state`: tensors and plain
    data, nothing non-finite), and a load that fails half-way restores the previous state, so a bad file
    never leaves a method half-loaded. Nested calls (a subclass calling ``super().load_state_dict``) run
    unwrapped inside the outer one."""
    if getattr(fn, "_molearn_validated", False):
        return fn

    @functools.wraps(fn)
    def wrapped(self: Any, state: Any) -> None:
        if self.__dict__.get("_molearn_loading", False):
            fn(self, state)
            return
        owner = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"{owner}.load_state_dict expects a dict, got {type(state).__name__}")
        check_state(owner, state)
        before = self.state_dict()
        self.__dict__["_molearn_loading"] = True
        try:
            fn(self, state)
        except Exception:
            try:
                fn(self, before)
            except Exception:  # the previous state cannot come back: at least not a half-loaded one
                self.reset()
            raise
        finally:
            self.__dict__["_molearn_loading"] = False

    wrapped._molearn_validated = True  # type: ignore[attr-defined]
    return wrapped  # type: ignore[return-value]


_PLAIN = (bool, int, str, type(None))


def check_state(owner: str, value: Any, path: str = "state") -> None:
    """Raise unless ``value`` holds only tensors and plain data (dicts, lists, tuples, numbers, strings,
    ``None``: what ``torch.load(weights_only=True)`` reads back) and no NaN/Inf: a method state loaded
    from a file must not poison every later step."""
    if isinstance(value, Tensor):
        if (value.is_floating_point() or value.is_complex()) and not bool(
            torch.isfinite(value).all()  # sync: once, when a state is loaded
        ):
            raise ValueError(f"{owner}: {path} holds NaN/Inf values")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{owner}: {path} is {value}")
        return
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{owner}: {path} has a key of type {type(key).__name__}")
            check_state(owner, item, f"{path}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_state(owner, item, f"{path}[{i}]")
        return
    raise TypeError(
        f"{owner}: {path} is a {type(value).__name__}; a method state holds tensors and plain data only"
    )


def state_tensor(
    owner: str, state: Mapping[str, Any], key: str, *, ndim: int | None = None, integral: bool = False
) -> Tensor:
    """``state[key]`` checked to be a tensor with ``ndim`` dimensions, floating-point (or, ``integral``,
    a Python int or an integer/floating 0-d tensor holding a whole number: a step count); the error
    names the method and the key."""
    if key not in state:
        raise ValueError(f"{owner} state misses {key!r} (it has {sorted(map(str, state))})")
    value = state[key]
    if integral and isinstance(value, int) and not isinstance(value, bool):
        value = torch.tensor(float(value), dtype=torch.float64)  # sync: loading a state
    if not isinstance(value, Tensor):
        raise TypeError(f"{owner} state {key!r}: expected a tensor, got {type(value).__name__}")
    if not (value.is_floating_point() or (integral and not value.is_complex() and value.dtype != torch.bool)):
        raise TypeError(f"{owner} state {key!r}: expected a floating-point tensor, got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(
            f"{owner} state {key!r}: expected {ndim} dimension(s), got shape {tuple(value.shape)}"
        )
    if integral and (value.numel() != 1 or value.reshape(()).item() < 0):  # sync: loading a state
        raise ValueError(f"{owner} state {key!r}: expected a non-negative count, got {value}")
    return value


def state_vector(owner: str, state: Mapping[str, Any], key: str, *, ndim: int = 1) -> Tensor | None:
    """An optional per-objective entry of a state: ``None`` when absent or ``None``, else a floating tensor
    with ``ndim`` dimensions (a list of numbers from an older checkpoint is converted)."""
    value = state.get(key)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        try:
            value = torch.tensor(value, dtype=torch.float64)  # sync: loading a state
        except (TypeError, ValueError) as err:
            raise TypeError(f"{owner} state {key!r}: expected numbers, got {value!r:.80}") from err
    return state_tensor(owner, {key: value}, key, ndim=ndim)


def state_count(owner: str, state: Mapping[str, Any], key: str, default: int = 0) -> int:
    """A non-negative integer entry of a state (a Python int, or a 0-d tensor holding one)."""
    value = state.get(key, default)
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        number = value.reshape(()).item()  # sync: loading a state
        value = int(number) if float(number).is_integer() else number  # sync: loading a state
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{owner} state {key!r}: expected a non-negative int, got {value!r}")
    return value


def check_lengths(owner: str, **lengths: int | None) -> None:
    """The state's per-objective entries agree on K (``None``: absent)."""
    known = {k: v for k, v in lengths.items() if v is not None}
    if len(set(known.values())) > 1:
        sizes = ", ".join(f"{k}: {v}" for k, v in known.items())
        raise ValueError(f"{owner} state disagrees on the number of objectives ({sizes})")


@dataclass(frozen=True)
class Needs:
    """What a method asks the engine for (the engine provides exactly that and nothing more).

    Attributes:
        gramian: the K×K Gramian ``G Gᵀ`` of the per-objective gradients.
        jacobian: the K×P matrix ``G`` itself (rows are per-objective gradients); implies ``gramian``.
        batches: independent mini-batches per step (MoDo/SDMGrad: 2-3). Only the closure-driven
            :meth:`molearn.Balancer.step` can provide more than one; each batch's gradients reach
            :meth:`Method.combine` as one :class:`Inputs` (the extra ones in ``Inputs.extra``).
        after_step: the losses re-evaluated on the same batch after the optimiser step (FAMO).
        closure: the method computes the per-objective gradients itself through a
            :class:`~molearn.engine.Probe` (losses and gradients at perturbed parameters, SAMO), in
            :meth:`Method.jacobian`; needs :meth:`molearn.Balancer.step`.
    """

    gramian: bool = False
    jacobian: bool = False
    batches: int = 1
    after_step: bool = False
    closure: bool = False

    @property
    def gradients(self) -> bool:
        """Whether per-objective gradients must be computed at all."""
        return self.gramian or self.jacobian


@dataclass
class Inputs:
    """What the engine hands to :meth:`Method.combine` for one mini-batch.

    ``losses`` are detached, shape (K,). ``gramian`` (K×K) and ``jacobian`` (K×P) are present when the
    method declared them in :class:`Needs`. ``extra`` holds the other independent mini-batches (same
    fields) for methods with ``Needs.batches > 1``, in the order they were drawn; this one was drawn
    last, and ``Output.weights`` apply to its gradients.
    ``selected`` is set when the method chose a subset S of the objectives (:meth:`Method.select`):
    ``gramian``/``jacobian`` then hold only the |S| rows of S (in that order), ``losses`` all K.
    """

    losses: Tensor
    gramian: Tensor | None = None
    jacobian: Tensor | None = None
    extra: list[Inputs] = field(default_factory=list)
    selected: Tensor | None = None

    @property
    def num_objectives(self) -> int:
        return int(self.losses.shape[0])


@dataclass
class Output:
    """What a method returns.

    Exactly one of ``weights`` (K,) and ``direction`` (P,) is set. With ``weights`` the update of the
    shared parameters is ``Σ_i w_i ∇L_i`` (computed by the engine as ``Jᵀw`` or by one backward of
    ``Σ_i w_i L_i``). ``direction`` is only allowed for methods that declared ``Needs.jacobian``.
    ``weights`` always have K entries, also when the method selected a subset (zeros outside it).
    ``extra_weights`` (multi-batch methods): one (K,) weight vector per entry of ``Inputs.extra``,
    whose gradients are added to the update too (MoDo's two-batch direction ``½ λᵀ(G₁ + G₂)``).
    ``info`` carries method diagnostics (e.g. ``residual`` of its solver), as tensors, never synced.
    """

    weights: Tensor | None = None
    direction: Tensor | None = None
    extra_weights: list[Tensor] | None = None
    info: dict[str, Tensor] = field(default_factory=dict)


class Method:
    """Base class of every multi-objective method.

    A subclass sets ``needs`` and implements :meth:`combine`, which always runs under
    ``torch.no_grad()`` (the base class wraps every override: its outputs never require grad, whatever
    the inputs). Stateful methods override
    :meth:`state_dict` (returning copies: the Balancer keeps one to restore the state when its finite
    check rejects a step), :meth:`load_state_dict` (wrapped by the base class: the state is checked for
    tensors and plain data without NaN/Inf, and a failed load leaves the previous state) and
    :meth:`reset`. ``task_grad`` is the convention the
    official code uses for task-specific parameters: ``"own"`` (each head gets ``∇L_i``, as in the
    Nash-MTL/FairGrad/LibMTL gradient methods) or ``"weighted"`` (``∇ w_i L_i``, as in loss-weighting
    methods that back-propagate ``Σ w_i L_i``). :class:`molearn.Balancer` lets the user override it.
    ``loop_only`` is empty, or says what the method needs from the user's own training loop that a
    loss function of a batch alone cannot give (``molearn compare`` refuses it with that reason).
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "own"
    loop_only: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # every override of combine / after_step runs without autograd (see _without_grad)
        for name in ("combine", "after_step"):
            if name in cls.__dict__:
                setattr(cls, name, _without_grad(cls.__dict__[name]))
        # every override of load_state_dict checks the state and is all-or-nothing (see _validated_load)
        if "load_state_dict" in cls.__dict__:
            cls.load_state_dict = _validated_load(cls.__dict__["load_state_dict"])  # type: ignore[method-assign]

    def combine(self, inputs: Inputs) -> Output:
        raise NotImplementedError

    def select(self, num_objectives: int) -> Tensor | None:
        """The objectives whose gradients this step needs, as a sorted 1-D index tensor on the CPU, or
        ``None`` for all (SDMGrad-OS samples a subset). Called once per step before any backward pass;
        the others' gradients are never computed and their task parameters receive nothing."""
        return None

    def jacobian(self, probe: Any) -> Tensor:
        """Methods with ``Needs.closure``: the K×(P_shared + P_tasks) per-objective gradients, computed
        through the engine's :class:`~molearn.engine.Probe` (SAMO: at perturbed parameters)."""
        raise NotImplementedError(
            f"{type(self).__name__} declares Needs.closure but implements no jacobian()"
        )

    def after_step(self, losses_before: Tensor, losses_after: Tensor) -> None:
        """Called with the losses on the same batch before and after the optimiser step (FAMO)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state keys {sorted(state)}")

    def reset(self) -> None:
        """Forget everything learnt so far (stateless methods: nothing to do)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def check_gramian(gramian: Tensor | None, name: str) -> Tensor:
    if gramian is None:
        raise ValueError(f"{name} needs the Gramian but the engine provided none")
    return gramian


def check_jacobian(jacobian: Tensor | None, name: str) -> Tensor:
    if jacobian is None:
        raise ValueError(f"{name} needs the Jacobian but the engine provided none")
    return jacobian


def as_float64(x: Tensor) -> Tensor:
    return x.to(torch.float64)


def _all_subclasses(cls: type) -> list[type]:
    out: list[type] = []
    subs: list[type] = cls.__subclasses__()
    for sub in subs:
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def registry() -> dict[str, type[Method]]:
    """All methods by lower-case class name (``"mgda"``, ``"cagrad"``, ...), for configs and the CLI."""
    return {c.__name__.lower(): c for c in _all_subclasses(Method) if not c.__name__.startswith("_")}


def get(name: str, **kwargs: Any) -> Method:
    """Construct a method from its (case-insensitive) name and keyword arguments."""
    table = registry()
    key = name.lower().replace("-", "").replace("_", "")
    table_norm = {k.replace("_", ""): v for k, v in table.items()}
    if key not in table_norm:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(table))}")
    return table_norm[key](**kwargs)
