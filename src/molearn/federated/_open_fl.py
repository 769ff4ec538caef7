r"""Open federated learning: clients join and leave between rounds; local SGD / local Adam; FedAvg server.

Seed paper: Y. Sun, H. Fernando, T. Chen, S. Shahrampour, "On the Stability Analysis of Open Federated
Learning Systems", arXiv:2209.12307 (2022, v2 2023).

**What could be confirmed from the paper** (only its abstract was reachable from this machine): in an
open FL system clients may join and/or leave during training, so the number of present clients varies
and convergence to a fixed model cannot be guaranteed; the paper instead measures *stability*, which
"quantifies the magnitude of the learned model" in the open system; under strongly convex and smooth
local functions it bounds the *radius of stability* of local SGD and of local Adam, and the radius
depends on the condition number of the functions and on the variance of the stochastic gradient; it
is checked on synthetic and real data sets.

**Reconstruction (not checked against the paper's text).** The exact definitions, the bounds and their
constants could not be read, so the simulator measures the natural quantities:

* a *universe* of ``M`` potential clients with local objectives :math:`f_i` (strongly convex); the
  *population* :math:`S_t` of round ``t`` is a subset of it, changed between rounds by a
  :class:`PopulationProcess` (departures first, then arrivals drawn uniformly from the absent clients;
  a client that left may come back later, with the same data);
* round ``t``: every present client starts from the server model :math:`x_t` and runs ``E`` local
  steps of SGD (:math:`y \leftarrow y - \eta g_i(y)`) or Adam (moments reset every round, bias
  corrected) on stochastic gradients :math:`g_i`; the server averages
  :math:`x_{t+1} = \sum_{i\in S_t} w_i y_i^E / \sum_{i\in S_t} w_i` (FedAvg; ``w_i`` = data size);
* per round, the magnitude :math:`\|x_{t+1}\|` and the distance :math:`\|x_{t+1} - x^\star_t\|` to the
  optimum :math:`x^\star_t` of the present clients' average objective
  :math:`F_t = \sum_{S_t} w_i f_i / \sum_{S_t} w_i` (exact for quadratics, warm-started Newton for
  logistic regression);
* the *empirical stability radius*: a high quantile (default 0.95) of the distance (or of the
  magnitude) after a burn-in, :meth:`OpenFLTrace.radius`.

The expected dependences (the abstract's "condition number" and "variance of the stochastic gradient";
local steps, step size and client turnover from the standard local-SGD analyses) are what
``experiments/open-fl`` measures; it reports which hold. For local SGD with ``E = 1``, a static population
and isotropic gradient noise the stationary mean-square distance has the closed form
:func:`sgd_stationary_msd` (a Lyapunov equation, derived here, not taken from the paper).

**Empty populations.** When the process leaves no client present, the round is *skipped*: the model
is kept, ``skipped[t]`` is set and the distance of that round is NaN (it is excluded from the radius).
If the process cannot bring clients back (arrival rate 0), a ``RuntimeError`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

__all__ = [
    "BernoulliPoissonProcess",
    "ClientObjectives",
    "FixedSizeReplacement",
    "LogisticClients",
    "OpenFLTrace",
    "PopulationProcess",
    "QuadraticClients",
    "StaticPopulation",
    "local_update",
    "random_quadratic_clients",
    "sgd_stationary_msd",
    "simulate_open_fl",
]


# ------------------------------------------------------------------------------------------ objectives
class ClientObjectives(Protocol):
    """A universe of ``num_clients`` local objectives on one flat parameter vector of size ``dim``."""

    num_clients: int
    dim: int
    weights: Tensor  # (M,) aggregation weights (data sizes)

    def grad(self, idx: Tensor, x: Tensor, gen: torch.Generator) -> Tensor:
        """Stochastic gradients (k, dim) of clients ``idx`` (k,) at their local models ``x`` (k, dim)."""
        ...

    def optimum(self, idx: Tensor, warm: Tensor | None = None) -> Tensor:
        """Minimiser (dim,) of the weighted average objective of clients ``idx``."""
        ...


def _check_finite(name: str, t: Tensor) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")


class QuadraticClients:
    r"""Quadratic clients :math:`f_i(x) = \tfrac12 (x - c_i)^\top A_i (x - c_i)` with stochastic gradients
    :math:`A_i(x - c_i) + \xi`, :math:`\xi \sim \mathcal N(0, \tfrac{\sigma^2}{d} I)` (so
    :math:`\mathbb E\|\xi\|^2 = \sigma^2`, ``noise_std`` = σ). ``A`` (M, d, d) symmetric positive definite,
    ``c`` (M, d); ``weights`` default to 1 (every client holds one "unit" of data)."""

    def __init__(self, A: Tensor, c: Tensor, noise_std: float = 0.0, weights: Tensor | None = None):
        if A.dim() != 3 or A.shape[1] != A.shape[2]:
            raise ValueError(f"A must have shape (M, d, d), got {tuple(A.shape)}")
        if c.shape != A.shape[:2]:
            raise ValueError(f"c must have shape (M, d) = {tuple(A.shape[:2])}, got {tuple(c.shape)}")
        if A.shape[0] == 0 or A.shape[1] == 0:
            raise ValueError("QuadraticClients needs at least one client and one dimension")
        if noise_std < 0 or not math.isfinite(noise_std):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        _check_finite("A", A)
        _check_finite("c", c)
        if not torch.allclose(A, A.transpose(1, 2), atol=1e-8 * float(A.abs().max())):
            raise ValueError("A must be symmetric")
        if float(torch.linalg.eigvalsh(A).min()) <= 0:
            raise ValueError("every A_i must be positive definite (strongly convex clients)")
        self.A, self.c = A, c
        self.Ac = torch.einsum("mij,mj->mi", A, c)
        self.num_clients, self.dim = c.shape
        self.noise_std = float(noise_std)
        self.weights = _check_weights(weights, self.num_clients, c.dtype)

    def exact_grad(self, idx: Tensor, x: Tensor) -> Tensor:
        return torch.einsum("kij,kj->ki", self.A[idx], x) - self.Ac[idx]

    def grad(self, idx: Tensor, x: Tensor, gen: torch.Generator) -> Tensor:
        g = self.exact_grad(idx, x)
        if self.noise_std > 0:
            noise = torch.randn(g.shape, generator=gen, dtype=g.dtype)
            g = g + noise * (self.noise_std / math.sqrt(self.dim))
        return g

    def optimum(self, idx: Tensor, warm: Tensor | None = None) -> Tensor:
        w = self.weights[idx]
        H = torch.einsum("k,kij->ij", w, self.A[idx])
        return torch.linalg.solve(H, w @ self.Ac[idx])

    def hessian(self, idx: Tensor, x: Tensor | None = None) -> Tensor:
        """Hessian of the weighted average objective of clients ``idx``."""
        w = self.weights[idx]
        return torch.einsum("k,kij->ij", w / w.sum(), self.A[idx])


def random_quadratic_clients(
    num_clients: int,
    dim: int,
    *,
    condition_number: float = 10.0,
    heterogeneity: float = 1.0,
    noise_std: float = 0.0,
    shared_basis: bool = True,
    spread: float = 0.2,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> QuadraticClients:
    r"""Random quadratic clients :math:`A_i = Q_i \operatorname{diag}(\lambda \odot e^{s u_i}) Q_i^\top`:
    eigenvalues :math:`\lambda` log-spaced in ``[1, condition_number]``, jittered per client by
    :math:`e^{s u_i}`, :math:`u_i \sim U[-1, 1]^d`, ``s`` = ``spread``; one random rotation ``Q`` shared by
    all clients (``shared_basis=True``, so the population average keeps the condition number; with a
    rotation per client the average of many clients is close to a multiple of the identity); centres
    ``c_i ~ N(0, heterogeneity² I)``."""
    if condition_number < 1:
        raise ValueError(f"condition_number must be >= 1, got {condition_number}")
    if num_clients < 1 or dim < 1:
        raise ValueError(f"num_clients and dim must be >= 1, got {num_clients}, {dim}")
    gen = torch.Generator().manual_seed(seed)
    eig = torch.logspace(0.0, math.log10(condition_number), dim, dtype=dtype)
    eig = eig * torch.exp(spread * (2 * torch.rand(num_clients, dim, generator=gen, dtype=dtype) - 1))
    nq = 1 if shared_basis else num_clients
    Q, _ = torch.linalg.qr(torch.randn(nq, dim, dim, generator=gen, dtype=dtype))
    A = Q @ torch.diag_embed(eig) @ Q.transpose(1, 2)
    A = 0.5 * (A + A.transpose(1, 2))
    c = heterogeneity * torch.randn(num_clients, dim, generator=gen, dtype=dtype)
    return QuadraticClients(A, c, noise_std=noise_std)


class LogisticClients:
    r"""Multinomial logistic-regression clients with ridge ``l2``:
    :math:`f_i(W) = \frac1{n_i}\sum_j -\log \mathrm{softmax}(a_j^\top W)_{y_j} + \frac{l2}2\|W\|_F^2`,
    ``W`` of shape (d, C) flattened to the parameter vector (size ``d·C``). Stochastic gradients use a
    minibatch of ``batch_size`` samples drawn with replacement from the client's own data (``None``:
    the full local data, exact gradients), plus optional isotropic noise of total variance
    ``noise_std²``. Aggregation weights default to the data sizes ``n_i``. ``l2 > 0`` makes every client
    strongly convex. The population optimum is computed by Newton's method (dense Hessian, warm start).

    ``features`` is a list of (n_i, d) tensors and ``labels`` a list of (n_i,) int tensors in
    ``0..num_classes-1``; they are padded into (M, n_max, d) internally.
    """

    def __init__(
        self,
        features: list[Tensor],
        labels: list[Tensor],
        num_classes: int,
        *,
        l2: float = 1e-2,
        batch_size: int | None = None,
        noise_std: float = 0.0,
        weights: Tensor | None = None,
        dtype: torch.dtype = torch.float64,
        newton_steps: int = 20,
        newton_tol: float = 1e-9,
    ):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature tensors but {len(labels)} label tensors")
        if len(features) == 0:
            raise ValueError("LogisticClients needs at least one client")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not l2 > 0 or not math.isfinite(l2):
            raise ValueError(f"l2 must be > 0 (strong convexity), got {l2}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if noise_std < 0 or not math.isfinite(noise_std):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        d = None
        for i, (x, y) in enumerate(zip(features, labels, strict=True)):
            if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"client {i}: features must be (n, d) and labels (n,), "
                    f"got {tuple(x.shape)}, {tuple(y.shape)}"
                )
            if x.shape[0] == 0:
                raise ValueError(f"client {i} has no data (0 samples): every client needs one sample or more")
            if d is None:
                d = x.shape[1]
            elif x.shape[1] != d:
                raise ValueError(f"client {i}: {x.shape[1]} features, client 0 has {d}")
            if y.dtype.is_floating_point or int(y.min()) < 0 or int(y.max()) >= num_classes:
                raise ValueError(f"client {i}: labels must be integers in 0..{num_classes - 1}")
            _check_finite(f"features of client {i}", x)
        assert d is not None
        counts = torch.tensor([x.shape[0] for x in features])
        M, n_max = len(features), int(counts.max())
        self.X = torch.zeros(M, n_max, d, dtype=dtype)
        self.Y = torch.zeros(M, n_max, num_classes, dtype=dtype)
        self.mask = torch.zeros(M, n_max, dtype=dtype)
        for i, (x, y) in enumerate(zip(features, labels, strict=True)):
            n = x.shape[0]
            self.X[i, :n] = x.to(dtype)
            self.Y[i, :n] = torch.nn.functional.one_hot(y.long(), num_classes).to(dtype)
            self.mask[i, :n] = 1.0
        self.counts = counts
        self.num_clients, self.features, self.num_classes = M, d, num_classes
        self.dim = d * num_classes
        self.l2, self.batch_size, self.noise_std = float(l2), batch_size, float(noise_std)
        self.newton_steps, self.newton_tol = newton_steps, newton_tol
        self.weights = _check_weights(weights, M, dtype, default=counts.to(dtype))

    def _batch_grad(self, Xb: Tensor, Yb: Tensor, mb: Tensor, x: Tensor) -> Tensor:
        k = x.shape[0]
        W = x.view(k, self.features, self.num_classes)
        P = torch.softmax(torch.bmm(Xb, W), dim=-1)
        R = (P - Yb) * (mb / mb.sum(1, keepdim=True)).unsqueeze(-1)
        return (torch.bmm(Xb.transpose(1, 2), R) + self.l2 * W).reshape(k, -1)

    def exact_grad(self, idx: Tensor, x: Tensor) -> Tensor:
        return self._batch_grad(self.X[idx], self.Y[idx], self.mask[idx], x)

    def grad(self, idx: Tensor, x: Tensor, gen: torch.Generator) -> Tensor:
        if self.batch_size is None:
            g = self.exact_grad(idx, x)
        else:
            u = torch.rand(idx.shape[0], self.batch_size, generator=gen)
            j = (u * self.counts[idx].unsqueeze(1)).long()
            rows = idx.unsqueeze(1)
            g = self._batch_grad(self.X[rows, j], self.Y[rows, j], torch.ones_like(u, dtype=x.dtype), x)
        if self.noise_std > 0:
            noise = torch.randn(g.shape, generator=gen, dtype=g.dtype)
            g = g + noise * (self.noise_std / math.sqrt(self.dim))
        return g

    def _pooled(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w = self.weights[idx]
        sw = (self.mask[idx] * (w / w.sum() / self.counts[idx].to(w.dtype)).unsqueeze(1)).reshape(-1)
        keep = sw > 0
        X = self.X[idx].reshape(-1, self.features)[keep]
        return X, self.Y[idx].reshape(-1, self.num_classes)[keep], sw[keep]

    def _grad_hess(self, X: Tensor, Y: Tensor, s: Tensor, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d, C = self.features, self.num_classes
        P = torch.softmax(X @ W, dim=-1)
        g = X.T @ ((P - Y) * s.unsqueeze(1)) + self.l2 * W
        # H = sum_j s_j (diag(p_j) - p_j p_j^T) ⊗ a_j a_j^T, variables in W.view(-1)'s (feature, class) order
        U = (P.unsqueeze(1) * X.unsqueeze(2)).reshape(X.shape[0], d * C)  # rows p_j ⊗ a_j in (d, C) order
        H = -(U.T * s) @ U
        Xw = (P * s.unsqueeze(1)).T.unsqueeze(2) * X.unsqueeze(0)  # (C, n, d): s_j p_jc a_j
        Hd = torch.bmm(Xw.transpose(1, 2), X.expand(C, -1, -1))  # diag(p_j) part: a (d, d) block per class
        ic = torch.arange(C)
        Hv = H.view(d, C, d, C)
        Hv[:, ic, :, ic] += Hd  # advanced indices first: [c, a, b] -> H[a, c, b, c]
        H += self.l2 * torch.eye(d * C, dtype=W.dtype)
        loss = -(Y * torch.log_softmax(X @ W, -1)).sum(1) @ s + 0.5 * self.l2 * (W * W).sum()
        return loss, g.reshape(-1), H

    def optimum(self, idx: Tensor, warm: Tensor | None = None) -> Tensor:
        X, Y, s = self._pooled(idx)
        W = (warm.clone() if warm is not None else torch.zeros(self.dim, dtype=X.dtype)).view(
            self.features, self.num_classes
        )
        for _ in range(self.newton_steps):
            loss, g, H = self._grad_hess(X, Y, s, W)
            step = torch.linalg.solve(H, g).view_as(W)
            decrement = float(g @ step.reshape(-1))  # Newton decrement^2 = g^T H^-1 g
            if decrement < self.newton_tol**2:
                W = W - step
                break
            t = 1.0  # backtracking keeps cold starts safe; warm starts take the full step
            while t > 1e-4:
                Wn = W - t * step
                ln = -(Y * torch.log_softmax(X @ Wn, -1)).sum(1) @ s + 0.5 * self.l2 * (Wn * Wn).sum()
                if ln <= loss:
                    break
                t *= 0.5
            W = Wn
        return W.reshape(-1)

    def hessian(self, idx: Tensor, x: Tensor) -> Tensor:
        X, Y, s = self._pooled(idx)
        return self._grad_hess(X, Y, s, x.view(self.features, self.num_classes))[2]


def _check_weights(
    weights: Tensor | None, M: int, dtype: torch.dtype, default: Tensor | None = None
) -> Tensor:
    if weights is None:
        return default if default is not None else torch.ones(M, dtype=dtype)
    weights = torch.as_tensor(weights, dtype=dtype)
    if weights.shape != (M,):
        raise ValueError(f"weights must have shape ({M},), got {tuple(weights.shape)}")
    if not torch.isfinite(weights).all() or bool((weights <= 0).any()):
        raise ValueError("weights must be finite and > 0")
    return weights


# ---------------------------------------------------------------------------------- population process
class PopulationProcess(Protocol):
    """Changes the present clients between rounds."""

    can_repopulate: bool

    def initial(self, num_clients: int, gen: torch.Generator) -> Tensor:
        """Boolean mask (M,) of the clients present at round 0."""
        ...

    def step(self, active: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Masks (M,) of the clients that leave and of those that join before the next round."""
        ...


def _pick(candidates: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """Mask of ``n`` clients drawn uniformly without replacement among ``candidates`` (capped)."""
    pool = candidates.nonzero().squeeze(1)
    n = min(n, pool.numel())
    out = torch.zeros_like(candidates)
    if n > 0:
        out[pool[torch.randperm(pool.numel(), generator=gen)[:n]]] = True
    return out


def _initial(size: int, M: int, gen: torch.Generator) -> Tensor:
    if size > M:
        raise ValueError(f"initial population {size} is larger than the universe of {M} clients")
    return _pick(torch.ones(M, dtype=torch.bool), size, gen)


@dataclass
class BernoulliPoissonProcess:
    """Each present client leaves with probability ``departure_prob`` per round; ``Poisson(arrival_rate)``
    absent clients join (capped by the number absent). Stationary mean population ``arrival_rate /
    departure_prob``. ``initial_size`` defaults to that mean (rounded)."""

    arrival_rate: float
    departure_prob: float
    initial_size: int | None = None

    def __post_init__(self) -> None:
        if not (self.arrival_rate >= 0 and math.isfinite(self.arrival_rate)):
            raise ValueError(f"arrival_rate must be a finite number >= 0, got {self.arrival_rate}")
        if not 0 <= self.departure_prob <= 1:
            raise ValueError(f"departure_prob must be in [0, 1], got {self.departure_prob}")
        if self.initial_size is None:
            if self.departure_prob == 0:
                raise ValueError("departure_prob = 0: give initial_size (the stationary mean is infinite)")
            self.initial_size = max(1, round(self.arrival_rate / self.departure_prob))
        if self.initial_size < 0:
            raise ValueError(f"initial_size must be >= 0, got {self.initial_size}")

    @property
    def can_repopulate(self) -> bool:
        return self.arrival_rate > 0

    def initial(self, num_clients: int, gen: torch.Generator) -> Tensor:
        assert self.initial_size is not None
        return _initial(self.initial_size, num_clients, gen)

    def step(self, active: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        leave = active & (torch.rand(active.shape, generator=gen) < self.departure_prob)
        n = int(torch.poisson(torch.tensor([float(self.arrival_rate)]), generator=gen).item())
        join = _pick(~active, n, gen)
        return leave, join


@dataclass
class FixedSizeReplacement:
    """A population of ``size`` clients; each present client is replaced, with probability
    ``replace_prob`` per round, by a client drawn from the absent ones (size constant when the universe
    has at least ``2·size`` clients; otherwise fewer replacements happen)."""

    size: int
    replace_prob: float

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if not 0 <= self.replace_prob <= 1:
            raise ValueError(f"replace_prob must be in [0, 1], got {self.replace_prob}")

    can_repopulate = True

    def initial(self, num_clients: int, gen: torch.Generator) -> Tensor:
        return _initial(self.size, num_clients, gen)

    def step(self, active: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        want = active & (torch.rand(active.shape, generator=gen) < self.replace_prob)
        join = _pick(~active, int(want.sum()), gen)
        leave = _pick(want, int(join.sum()), gen)  # only as many leave as can be replaced
        return leave, join


@dataclass
class StaticPopulation:
    """A closed system: the first ``size`` clients of a random order stay for the whole run (``size=None``:
    the whole universe)."""

    size: int | None = None
    can_repopulate: bool = field(default=False, init=False)

    def initial(self, num_clients: int, gen: torch.Generator) -> Tensor:
        if self.size is None:
            return torch.ones(num_clients, dtype=torch.bool)
        if self.size < 1:
            raise ValueError(f"StaticPopulation size must be >= 1, got {self.size}")
        return _initial(self.size, num_clients, gen)

    def step(self, active: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        none = torch.zeros_like(active)
        return none, none


# -------------------------------------------------------------------------------------- local update
def local_update(
    objectives: ClientObjectives,
    idx: Tensor,
    x0: Tensor,
    *,
    local_steps: int,
    lr: float,
    optimizer: str = "sgd",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    gen: torch.Generator,
) -> Tensor:
    """``local_steps`` (E) steps of SGD or Adam of clients ``idx`` from ``x0`` ((dim,) or (k, dim)), batched
    over clients. Adam starts from zero moments every call (bias-corrected, as ``torch.optim.Adam``)."""
    k = idx.shape[0]
    y = (x0.expand(k, -1) if x0.dim() == 1 else x0).clone()
    if optimizer == "sgd":
        for _ in range(local_steps):
            y -= lr * objectives.grad(idx, y, gen)
        return y
    if optimizer != "adam":
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    b1, b2 = betas
    m, v = torch.zeros_like(y), torch.zeros_like(y)
    for t in range(1, local_steps + 1):
        g = objectives.grad(idx, y, gen)
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(eps)
        y.addcdiv_(m, denom, value=-lr / (1 - b1**t))
    return y


# ------------------------------------------------------------------------------------------ simulator
@dataclass
class OpenFLTrace:
    """Per-round records of :func:`simulate_open_fl` (index ``t`` = after round ``t``).

    ``num_clients``, ``joined``, ``left`` (int64): the population that trained in round ``t`` and the
    changes that produced it; ``skipped`` (bool): no client present, model kept; ``model_norm``:
    :math:`\\|x_{t+1}\\|`; ``distance``: :math:`\\|x_{t+1} - x^\\star_t\\|` (NaN on skipped rounds and
    rounds not tracked, see ``track_every``); ``optimum_norm``: :math:`\\|x^\\star_t\\|` (same NaNs)."""

    num_clients: Tensor
    joined: Tensor
    left: Tensor
    skipped: Tensor
    model_norm: Tensor
    distance: Tensor
    optimum_norm: Tensor
    final_model: Tensor

    def radius(self, burn_in: float = 0.5, quantile: float = 0.95, metric: str = "distance") -> float:
        """Empirical stability radius: the ``quantile`` (1.0 = sup) of ``metric`` ("distance" or
        "model_norm") over the tracked, non-skipped rounds after the first ``burn_in`` fraction."""
        if not 0 <= burn_in < 1:
            raise ValueError(f"burn_in must be in [0, 1), got {burn_in}")
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        if metric not in ("distance", "model_norm"):
            raise ValueError(f"metric must be 'distance' or 'model_norm', got {metric!r}")
        values = getattr(self, metric)[int(burn_in * len(self.distance)) :]
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            raise ValueError("no tracked round after the burn-in (all skipped or not tracked)")
        return float(torch.quantile(values, quantile))

    def mean_square_distance(self, burn_in: float = 0.5) -> float:
        d = self.distance[int(burn_in * len(self.distance)) :]
        d = d[torch.isfinite(d)]
        if d.numel() == 0:
            raise ValueError("no tracked round after the burn-in (all skipped or not tracked)")
        return float((d * d).mean())


def simulate_open_fl(
    objectives: ClientObjectives,
    process: PopulationProcess,
    *,
    rounds: int,
    local_steps: int = 1,
    lr: float = 0.1,
    optimizer: str = "sgd",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    init: Tensor | None = None,
    seed: int = 0,
    track_every: int = 1,
) -> OpenFLTrace:
    """Run the open FL system for ``rounds`` rounds (see the module docstring for the model of a round).

    ``init``: the initial server model (default zeros). ``track_every``: compute the population optimum
    (and the distance) every that many rounds — Newton solves dominate the cost for logistic clients.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if local_steps < 1:
        raise ValueError(f"local_steps (E) must be >= 1, got {local_steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if track_every < 1:
        raise ValueError(f"track_every must be >= 1, got {track_every}")
    M, dim = objectives.num_clients, objectives.dim
    dtype = objectives.weights.dtype
    x = torch.zeros(dim, dtype=dtype) if init is None else init.to(dtype).clone()
    if x.shape != (dim,):
        raise ValueError(f"init must have shape ({dim},), got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(seed)  # population process
    noise_gen = torch.Generator().manual_seed(seed + 7919)  # gradient noise: same joins/leaves at any noise
    active = process.initial(M, gen)
    if not active.any() and not process.can_repopulate:
        raise ValueError("the initial population is empty and the process never adds clients")
    cols = {k: torch.zeros(rounds, dtype=torch.int64) for k in ("num_clients", "joined", "left")}
    skipped = torch.zeros(rounds, dtype=torch.bool)
    nan = torch.full((rounds,), float("nan"), dtype=dtype)
    model_norm, distance, opt_norm = torch.zeros(rounds, dtype=dtype), nan.clone(), nan.clone()
    x_star: Tensor | None = None
    stale = True  # the population changed since x_star was computed
    for t in range(rounds):
        if t > 0:
            leave, join = process.step(active, gen)
            active = (active & ~leave) | join
            cols["left"][t], cols["joined"][t] = int(leave.sum()), int(join.sum())
            stale = stale or bool(leave.any() or join.any())
        idx = active.nonzero().squeeze(1)
        cols["num_clients"][t] = idx.numel()
        if idx.numel() == 0:
            if not process.can_repopulate:
                raise RuntimeError(
                    f"round {t}: the population is empty and the process cannot add clients "
                    "(arrival rate 0): the open system has died out"
                )
            skipped[t] = True
            model_norm[t] = x.norm()
            continue
        y = local_update(
            objectives, idx, x, local_steps=local_steps, lr=lr, optimizer=optimizer, betas=betas, eps=eps,
            gen=noise_gen,
        )
        w = objectives.weights[idx]
        x = (w / w.sum()) @ y
        if not torch.isfinite(x).all():
            raise FloatingPointError(
                f"round {t}: the server model diverged (non-finite); lower lr (={lr}) or local_steps"
            )
        model_norm[t] = x.norm()
        if t % track_every == 0 or t == rounds - 1:
            if stale or x_star is None:
                x_star = objectives.optimum(idx, warm=x_star)
                stale = False
            distance[t] = (x - x_star).norm()
            opt_norm[t] = x_star.norm()
    return OpenFLTrace(
        num_clients=cols["num_clients"], joined=cols["joined"], left=cols["left"], skipped=skipped,
        model_norm=model_norm, distance=distance, optimum_norm=opt_norm, final_model=x,
    )


def sgd_stationary_msd(hessian: Tensor, lr: float, noise_var: float) -> float:
    r"""Stationary :math:`\mathbb E\|x - x^\star\|^2` of :math:`x \leftarrow x - \eta(H(x - x^\star) + \xi)`,
    :math:`\xi \sim \mathcal N(0, s^2 I)`, ``noise_var`` = :math:`s^2` per coordinate: the Lyapunov
    equation :math:`P = (I-\eta H)P(I-\eta H) + \eta^2 s^2 I` gives
    :math:`\sum_k \eta^2 s^2 / (1 - (1-\eta h_k)^2)` over the eigenvalues :math:`h_k` of ``H``. This is
    local SGD with ``E = 1`` on a static quadratic population, where the averaged noise of ``k`` clients
    with weights ``w`` has :math:`s^2 = \frac{\sigma^2}{d}\sum_i (w_i/\sum w)^2`."""
    h = torch.linalg.eigvalsh(hessian)
    rho = 1 - (1 - lr * h) ** 2
    if bool((rho <= 0).any()):
        raise ValueError("lr too large: the iteration is not contracting (need 0 < lr < 2 / L)")
    return float((lr * lr * noise_var / rho).sum())
