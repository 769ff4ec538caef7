r"""Pareto set learning for real models by **conditioning** a network on the preference.

A hypernetwork that generates every weight of the target network (:mod:`molearn.pareto._psl`) does not
scale to networks with millions of parameters. The conditioning variants keep one ordinary network and
feed it the preference :math:`p \in \Delta^{K-1}` (Dosovitskiy & Djolonga, "You Only Train Once:
Loss-Conditional Training of Deep Networks", ICLR 2020; Ruchte & Grabocka, "Scalable Pareto Front
Approximation for Deep Multi-Objective Learning" (COSMOS), ICDM 2021, https://arxiv.org/abs/2103.13392):

* :class:`PreferenceConditioned` — **FiLM** (Perez et al., "FiLM: Visual Reasoning with a General
  Conditioning Layer", AAAI 2018): a small MLP maps :math:`p` to a per-channel scale and shift of a chosen
  hidden representation :math:`h` (the output of ``trunk``),

  .. math:: \tilde h_{n,c,\dots} = (1 + \gamma_c(p))\, h_{n,c,\dots} + \beta_c(p), \qquad
            [\gamma, \beta] = \mathrm{Linear}(\mathrm{ReLU}(\mathrm{Linear}(p)))

  then an optional ``post`` module and the K heads. Written as :math:`1 + \gamma` so that a small
  :math:`\gamma` is close to the identity (YOTO modulates with :math:`\sigma`/affine maps of the
  condition in the same way; the MLP size is molearn's choice: one hidden layer of ``hidden = 64``).
* :class:`PreferenceAsInput` — the COSMOS way: the preference is appended to the input as K extra
  constant channels (``x`` of shape (N, C, H, W) becomes (N, C + K, H, W)); the wrapped network must
  accept C + K input channels. COSMOS adds a cosine-similarity penalty to linear scalarisation; here any
  scalarisation of :func:`molearn.pareto.make_preference_method` is used (``"cosmos"`` where that name
  is available).

:func:`train_conditioned` draws **one preference per batch** from a Dirichlet distribution
:math:`p \sim \mathrm{Dir}(\alpha \mathbf 1)` (COSMOS, PHN and LibMOON's PSL draw per batch; default
``alpha = 1``, uniform on the simplex; COSMOS uses 1.2, PHN 0.2), pulls it slightly into the interior,
:math:`(1 - K b) p + b` with ``boundary`` :math:`b = 10^{-3}` (as :func:`uniform_preferences`, so that
methods which divide by :math:`p`, such as EPO, accept it), evaluates the K losses of the model
conditioned on :math:`p`, and writes the update of ``make_preference_method(method, p)`` into ``.grad``
through :class:`molearn.Balancer` (any method that needs one batch: LS, Tchebycheff, modified Tchebycheff,
STCH, PBI, EPO, COSMOS, PMGDA, ...), then steps the optimiser.

**Direction of the preference** (it depends on the method, measured on the unit-test problem): with LS,
Tchebycheff, STCH (plain, weights :math:`p`) and EPO (ray :math:`p_i L_i` = const) a larger :math:`p_i`
gives a smaller :math:`L_i`; with modified Tchebycheff, PBI, COSMOS and PMGDA the target ray is
:math:`L \propto p`, so a larger :math:`p_i` gives a *larger* :math:`L_i`. Both traverse the same front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._balancer import Balancer
from ._psl import _check_preferences
from ._sweep import make_preference_method

__all__ = [
    "ConditionedLog",
    "FiLM",
    "FixedPreference",
    "PreferenceAsInput",
    "PreferenceConditioned",
    "append_preference",
    "evaluate_conditioned",
    "train_conditioned",
]

#: ``loss_fn(model, batch, pref) -> (K,) losses`` of the model conditioned on ``pref`` (K,)
ConditionedLossFn = Callable[[nn.Module, Any, Tensor], Tensor]


def _per_sample(pref: Tensor, n_obj: int, n: int, like: Tensor) -> Tensor:
    """Validated preferences as an (n, n_obj) tensor with ``like``'s dtype and device."""
    p = _check_preferences(pref, n_obj).to(dtype=like.dtype, device=like.device)
    if p.shape[0] == 1:
        return p.expand(n, n_obj)
    if p.shape[0] != n:
        raise ValueError(f"got {p.shape[0]} preferences for a batch of {n} inputs (give 1 or {n})")
    return p


class FiLM(nn.Module):
    """Preference -> per-channel scale and shift: ``h * (1 + gamma(p)) + beta(p)`` over channel dim 1.

    Args:
        n_obj: K, the preference length. channels: C, size of dim 1 of the modulated tensor.
        hidden: width of the MLP's hidden layer.
    """

    def __init__(self, n_obj: int, channels: int, hidden: int = 64) -> None:
        super().__init__()
        for name, v in (("n_obj", n_obj), ("channels", channels), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if n_obj < 2:
            raise ValueError(f"a preference needs at least 2 objectives, got n_obj={n_obj}")
        self.n_obj = n_obj
        self.channels = channels
        self.net = nn.Sequential(nn.Linear(n_obj, hidden), nn.ReLU(), nn.Linear(hidden, 2 * channels))

    def forward(self, h: Tensor, pref: Tensor) -> Tensor:
        """``h`` of shape (N, C, ...); ``pref`` (K,) for the whole batch or (N, K) per sample."""
        if h.dim() < 2 or h.shape[1] != self.channels:
            raise ValueError(f"FiLM expects a tensor (N, {self.channels}, ...), got {tuple(h.shape)}")
        p = _per_sample(pref, self.n_obj, h.shape[0], h)
        gamma, beta = self.net(p).chunk(2, dim=1)
        shape = (h.shape[0], self.channels) + (1,) * (h.dim() - 2)
        return h * (1 + gamma.reshape(shape)) + beta.reshape(shape)


class PreferenceConditioned(nn.Module):
    """A multi-task network whose representation is FiLM-modulated by the preference.

    ``forward(x, pref)`` = ``[head(post(FiLM(trunk(x), pref))) for head in heads]``.

    Args:
        trunk: any module mapping the input to a representation (N, C, ...) (the FiLM point).
        heads: the K task heads (each maps ``post``'s output to that task's prediction).
        n_obj: K, the preference length (usually ``len(heads)``; a single head scored by K losses works too).
        channels: C, the representation's channel count (dim 1).
        post: optional module between the FiLM layer and the heads (to modulate a mid-trunk layer).
        hidden: width of the FiLM MLP.

    :meth:`shared_parameters` (trunk, FiLM, post) and :meth:`task_parameters` (heads) are what a
    :class:`molearn.Balancer` balances.
    """

    def __init__(
        self,
        trunk: nn.Module,
        heads: Sequence[nn.Module],
        n_obj: int,
        channels: int,
        *,
        post: nn.Module | None = None,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        if not isinstance(trunk, nn.Module):
            raise TypeError(f"trunk must be an nn.Module, got {type(trunk).__name__}")
        heads = list(heads)
        if not heads or not all(isinstance(h, nn.Module) for h in heads):
            raise TypeError("heads must be a non-empty sequence of nn.Module")
        self.trunk = trunk
        self.film = FiLM(n_obj, channels, hidden)
        self.post = post if post is not None else nn.Identity()
        self.heads = nn.ModuleList(heads)
        self.n_obj = n_obj

    def forward(self, x: Tensor, pref: Tensor) -> list[Tensor]:
        z = self.post(self.film(self.trunk(x), pref))
        return [head(z) for head in self.heads]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for module in (self.trunk, self.film, self.post):
            yield from module.parameters()

    def task_parameters(self) -> Iterator[nn.Parameter]:
        return self.heads.parameters()

    def at(self, pref: Tensor) -> FixedPreference:
        """This model at one preference, as a module ``x -> outputs`` (for evaluation code)."""
        return FixedPreference(self, pref)


def append_preference(x: Tensor, pref: Tensor) -> Tensor:
    """COSMOS input conditioning: ``x`` (N, C, ...) with K constant channels holding ``pref`` appended
    (``pref`` (K,) for the batch or (N, K) per sample; validated and normalised to sum 1)."""
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, ...), got {tuple(x.shape)}")
    if not isinstance(pref, Tensor):
        raise TypeError(f"preferences must be a torch.Tensor, got {type(pref).__name__}")
    k = pref.shape[-1] if pref.dim() in (1, 2) else -1
    if k < 2:
        raise ValueError(f"preferences must have shape (K,) or (N, K) with K >= 2, got {tuple(pref.shape)}")
    p = _per_sample(pref, k, x.shape[0], x)
    planes = p.reshape(x.shape[0], k, *([1] * (x.dim() - 2))).expand(x.shape[0], k, *x.shape[2:])
    return torch.cat([x, planes], dim=1)


class PreferenceAsInput(nn.Module):
    """COSMOS-style conditioning: ``forward(x, pref) = model(append_preference(x, pref))``.

    ``model`` must accept ``C + n_obj`` input channels (e.g. ``MultiLeNet(channels=1 + K)``). Its
    ``shared_parameters``/``task_parameters`` are passed through when it has them.
    """

    def __init__(self, model: nn.Module, n_obj: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(n_obj, bool) or not isinstance(n_obj, int) or n_obj < 2:
            raise ValueError(f"n_obj must be an int >= 2, got {n_obj!r}")
        self.model = model
        self.n_obj = n_obj

    def forward(self, x: Tensor, pref: Tensor) -> Any:
        if isinstance(pref, Tensor) and pref.shape[-1:] != (self.n_obj,):
            raise ValueError(
                f"preferences must have shape ({self.n_obj},) or (N, {self.n_obj}), got {tuple(pref.shape)}"
            )
        return self.model(append_preference(x, pref))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        fn = getattr(self.model, "shared_parameters", None)
        return fn() if callable(fn) else self.model.parameters()

    def task_parameters(self) -> Iterator[nn.Parameter]:
        fn = getattr(self.model, "task_parameters", None)
        return fn() if callable(fn) else iter(())

    def at(self, pref: Tensor) -> FixedPreference:
        return FixedPreference(self, pref)


class FixedPreference(nn.Module):
    """A preference-conditioned model evaluated at one fixed preference: ``forward(x) = model(x, pref)``."""

    def __init__(self, model: nn.Module, pref: Tensor) -> None:
        super().__init__()
        n_obj = getattr(model, "n_obj", None)
        p = _check_preferences(pref, int(n_obj) if n_obj is not None else pref.shape[-1])
        if p.shape[0] != 1:
            raise ValueError(f"FixedPreference takes one preference (K,), got shape {tuple(pref.shape)}")
        self.model = model
        self.register_buffer("pref", p[0].to(torch.get_default_dtype()))

    def forward(self, x: Tensor) -> Any:
        return self.model(x, self.pref)


@dataclass
class ConditionedLog:
    """What :func:`train_conditioned` did: the preference (steps, K) and losses (steps, K) of every step."""

    prefs: Tensor
    losses: Tensor

    @property
    def steps(self) -> int:
        return int(self.prefs.shape[0])


class _DirichletStream:
    """Preferences ``Dir(alpha 1)`` drawn in chunks under a forked RNG seeded from ``seed`` (reproducible,
    global RNG untouched)."""

    def __init__(self, n_obj: int, alpha: float, seed: int, chunk: int = 1024) -> None:
        self.dist = torch.distributions.Dirichlet(torch.full((n_obj,), float(alpha), dtype=torch.float64))
        self.seed, self.chunk, self.calls = seed, chunk, 0
        self.buf: list[Tensor] = []

    def __next__(self) -> Tensor:
        if not self.buf:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 1_000_003 + self.calls)
                self.buf = list(self.dist.sample((self.chunk,)).unbind(0))[::-1]
            self.calls += 1
        return self.buf.pop()


def _params(model: nn.Module, which: str) -> list[Tensor] | None:
    fn = getattr(model, which, None)
    return [p for p in fn() if p.requires_grad] if callable(fn) else None


def train_conditioned(
    model: nn.Module,
    loss_fn: ConditionedLossFn,
    batches: Iterable[Any],
    method: str = "ls",
    *,
    epochs: int = 1,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    alpha: float = 1.0,
    boundary: float = 1e-3,
    seed: int = 0,
    method_kwargs: dict[str, Any] | None = None,
    shared: Iterable[Tensor] | None = None,
    tasks: Iterable[Tensor] | None = None,
    balancer_kwargs: dict[str, Any] | None = None,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
) -> ConditionedLog:
    """Train a preference-conditioned ``model`` (module docstring) for ``epochs`` passes over ``batches``.

    Args:
        model: called by ``loss_fn``; usually a :class:`PreferenceConditioned` / :class:`PreferenceAsInput`.
        loss_fn: ``loss_fn(model, batch, pref)`` -> the (K,) losses at preference ``pref`` (K,) (float,
            on the model's dtype/device).
        batches: re-iterable batches (a ``DataLoader``, a list), iterated once per epoch.
        method: a name for :func:`molearn.pareto.make_preference_method` (``"ls"``, ``"tchebycheff"``,
            ``"stch"``, ``"pbi"``, ``"epo"``, ...); a fresh instance per step, for that step's preference.
        optimizer: default ``Adam(model.parameters(), lr)``.
        alpha: Dirichlet concentration; boundary: interior shift of the preferences (see module docstring).
        seed: seeds the preference stream only (model initialisation is the caller's).
        shared, tasks: parameters for the :class:`~molearn.Balancer`; default the model's
            ``shared_parameters()``/``task_parameters()``, else every parameter as shared.
        balancer_kwargs: extra :class:`~molearn.Balancer` arguments (``mode``, ``on_nonfinite``, ...).
        on_step: called as ``on_step(step, pref, losses)`` after each step (e.g. a progress bar).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not alpha > 0:
        raise ValueError(f"alpha (Dirichlet concentration) must be > 0, got {alpha}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    n_obj = getattr(model, "n_obj", None)
    if n_obj is None:
        raise ValueError("model must have an n_obj attribute (the preference length K)")
    n_obj = int(n_obj)
    if not 0 <= boundary * n_obj < 1:
        raise ValueError(f"boundary must be in [0, 1/K) = [0, {1 / n_obj}), got {boundary}")
    try:
        probe = make_preference_method(method, torch.full((n_obj,), 1.0 / n_obj), **(method_kwargs or {}))
    except KeyError as exc:
        raise ValueError(f"unknown method {method!r}: {exc.args[0] if exc.args else exc}") from exc
    except TypeError as exc:
        raise ValueError(
            f"method {method!r} does not take a preference (pref=...): use a preference-conditioned "
            f"method such as 'ls', 'tchebycheff', 'stch', 'pbi' or 'epo' ({exc})"
        ) from exc
    needs = probe.needs
    if needs.batches > 1 or needs.closure or needs.after_step:
        raise ValueError(
            f"{type(probe).__name__} needs independent batches, a closure or post-step losses; "
            "conditioned training supports single-batch methods only"
        )
    shared_l = list(shared) if shared is not None else _params(model, "shared_parameters")
    tasks_l = list(tasks) if tasks is not None else _params(model, "task_parameters")
    if shared_l is None:
        shared_l = [p for p in model.parameters() if p.requires_grad]
        tasks_l = []
    opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=lr)
    prefs = _DirichletStream(n_obj, alpha, seed)
    ref = next(iter(shared_l))
    log_p: list[Tensor] = []
    log_l: list[Tensor] = []
    model.train()
    step = 0
    for _ in range(epochs):
        for batch in batches:
            p64 = (1 - n_obj * boundary) * next(prefs) + boundary
            meth = make_preference_method(method, p64, **(method_kwargs or {}))
            bal = Balancer(meth, shared_l, tasks_l, **(balancer_kwargs or {}))
            p = p64.to(dtype=ref.dtype, device=ref.device)
            losses = loss_fn(model, batch, p)
            if not isinstance(losses, Tensor) or losses.shape != (n_obj,):
                got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
                raise ValueError(f"loss_fn must return a ({n_obj},) tensor of losses, got {got}")
            opt.zero_grad(set_to_none=True)
            bal.backward(losses)
            opt.step()
            log_p.append(p64)
            log_l.append(losses.detach().to("cpu", torch.float64))
            if on_step is not None:
                on_step(step, p64, log_l[-1])
            step += 1
    if step == 0:
        raise ValueError("batches is empty: nothing to train on")
    model.eval()
    return ConditionedLog(prefs=torch.stack(log_p), losses=torch.stack(log_l))


@torch.no_grad()
def evaluate_conditioned(
    model: nn.Module, loss_fn: ConditionedLossFn, batches: Iterable[Any], prefs: Tensor
) -> Tensor:
    """Mean losses (N, K) float64 of ``model`` at each of the preferences ``prefs`` (N, K) over ``batches``.

    Batches are weighted by their size (the length of their first tensor, when the batch is a tensor or a
    tuple/list starting with one), so per-example mean losses give the data set's mean loss.
    """
    n_obj = getattr(model, "n_obj", None)
    P = _check_preferences(prefs, int(n_obj) if n_obj is not None else prefs.shape[-1])
    was_training = model.training
    model.eval()
    ref = next(iter(model.parameters()))
    rows = []
    for p in P:
        total: Tensor | None = None
        count = 0.0
        for batch in batches:
            first = batch[0] if isinstance(batch, (tuple, list)) else batch
            w = float(first.shape[0]) if isinstance(first, Tensor) and first.dim() > 0 else 1.0
            losses = loss_fn(model, batch, p.to(dtype=ref.dtype, device=ref.device)).detach()
            term = losses.to("cpu", torch.float64) * w
            total = term if total is None else total + term
            count += w
        if total is None:
            raise ValueError("batches is empty: nothing to evaluate on")
        rows.append(total / count)
    model.train(was_training)
    return torch.stack(rows)
