"""SDMGrad and SDMGrad-OS: direction-oriented multi-objective gradient descent (stochastic, simplex QP)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ..solvers import KKT_TOL, kkt_residual_min_norm, min_norm, project_simplex, status_from_residual
from ..solvers.linalg import eigh
from ._base import Inputs, Method, Needs, Output, check_gramian, check_jacobian, state_tensor

Solver = Literal["official", "exact"]

# official inner-loop learning rates: LibMTL (3 batches), NYUv2/Cityscapes/consistency (1 batch)
_LR = {3: 5.0, 1: 10.0}


def _sgd_on_simplex(
    grad_fn: Any,
    obj_fn: Any,
    w: Tensor,
    *,
    lr: float,
    momentum: float,
    niter: int,
    keep_best: bool,
) -> Tensor:
    """``niter`` steps of ``torch.optim.SGD`` (momentum, no dampening, buffer starting at the first
    gradient) each followed by the projection onto the simplex; ``keep_best``: the iterate of lowest
    objective among the ``niter + 1`` visited (the first one on ties). Fixed iteration count, no sync."""
    buf = torch.zeros_like(w)
    best_w, best_f = w, obj_fn(w) if keep_best else None
    for _ in range(niter):
        buf = momentum * buf + grad_fn(w)
        w = project_simplex(w - lr * buf)
        if best_f is not None:
            f = obj_fn(w)
            better = f < best_f
            best_w = torch.where(better, w, best_w)
            best_f = torch.where(better, f, best_f)
    return best_w if keep_best else w


def _direction_gramian(a: Tensor, lamda: float) -> Tensor:
    r"""Gramian of the rows :math:`h_i = g_i + \lambda g_0` from the (symmetric) :math:`A = GG^\top`:
    :math:`A + \lambda(c 1^\top + 1 c^\top) + \lambda^2 \bar a\, 11^\top` with :math:`c = A1/K`,
    :math:`\bar a = 1^\top A 1 / K^2`. Since :math:`\sum_i w_i = 1` on the simplex,
    :math:`\|G^\top w + \lambda g_0\|^2 = w^\top M w`."""
    c = a.mean(-1)
    return a + lamda * (c.unsqueeze(-1) + c.unsqueeze(-2)) + lamda**2 * c.mean(-1)[..., None, None]


def _psd_part(a: Tensor) -> Tensor:
    evals, evecs = eigh(a)  # LAPACK on the CPU, sync-free Jacobi elsewhere
    return (evecs * evals.clamp_min(0).unsqueeze(-2)) @ evecs.transpose(-1, -2)


class SDMGrad(Method):
    r"""SDMGrad (Xiao, Ban, Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
    Algorithms", NeurIPS 2023, https://arxiv.org/abs/2305.18409).

    .. math:: w^\star = \arg\min_{w \in \Delta_K} \|G^\top w + \lambda g_0\|^2, \qquad
        d = \frac{G^\top w^\star + \lambda g_0}{1 + \lambda}, \quad g_0 = \tfrac1K \textstyle\sum_i g_i,

    returned as the weights :math:`(w^\star + \lambda/K)/(1+\lambda)` (times ``scale``) of the last
    batch's gradients. λ = 0 is MGDA, λ → ∞ gradient descent on the mean loss. With :math:`A = GG^\top`
    the objective is :math:`w^\top A w + 2\lambda w^\top A1/K + \lambda^2 1^\top A 1/K^2`.

    ``batches`` picks the official variant (``lr=None`` takes its learning rate):

    - ``3`` (paper's stochastic algorithm, median-research-group/LibMTL ``weighting/SDMGrad.py``):
      :math:`A = G(\xi_1) G(\xi_2)^\top` from the two batches drawn first (``inputs.extra``; not
      symmetric, not necessarily PSD), divided by :math:`s^2 + 10^{-8}` with
      :math:`s = \mathrm{mean}_i \sqrt{\max(A_{ii}, 0)}`; the inner step uses
      :math:`Aw + \lambda A1/K` (half the gradient of the objective) with lr 5; the direction uses the
      last batch ζ. LibMTL labels its first batch ζ; the batches are i.i.d., so this relabelling changes
      nothing. LibMTL defaults: λ (``SDMGrad_lamda``) 0.3, ``SDMGrad_niter`` 20.
    - ``1`` (ml-opt-lab/sdmgrad ``nyuv2/utils.py``, ``cityscapes/utils.py``, ``consistency/utils.py``,
      ``mtrl/mtrl_files/sdmgrad.py``): one batch, :math:`A = GG^\top / s^2` with
      :math:`s = \mathrm{mean}_i\sqrt{A_{ii} + 10^{-4}}`, the inner step uses the autograd gradient
      :math:`(A + A^\top)w + 2\lambda A1/K` with lr 10 (MT10: 25, MT50: 50). λ (``--alpha``) 0.3 for
      NYUv2/Cityscapes, 0.5 consistency, 0.6 MT10/MT50. The NYUv2 (Cityscapes) trainer multiplies the
      direction by 3 (2) "to match the sum loss": ``scale="K"``; the consistency and RL code do not.

    ``solver="official"``: ``niter`` steps of SGD with ``momentum`` (``torch.optim.SGD`` semantics; the
    optimiser, hence the momentum buffer, is re-created every call), each followed by the projection onto
    the simplex (:func:`molearn.solvers.project_simplex`); w starts from the previous call's w
    (``warm_start``, as LibMTL/NYUv2/Cityscapes) or from :math:`\mathbb 1/K` (``warm_start=False``, as
    the RL code). ``keep_best`` (default: ``not warm_start``, as the RL code) returns the iterate of
    lowest objective among the ``niter + 1`` visited instead of the last. ``solver="exact"`` solves the QP
    exactly as a min-norm problem (:func:`molearn.solvers.min_norm`) over the rows
    :math:`g_i + \lambda g_0`, whose Gramian is :math:`A + \lambda(c1^\top + 1c^\top) + \lambda^2\bar a
    11^\top` (:math:`c = A1/K`, :math:`\bar a = 1^\top A1/K^2`); for ``batches=3`` it uses the PSD part
    of the symmetrised cross Gramian :math:`(A + A^\top)/2` (the quadratic form
    :math:`w^\top A w` only sees the symmetric part; negative eigenvalues, a sampling artefact, are
    clipped so that the problem stays convex). ``info``: ``w`` and the scale-free KKT ``residual`` of w
    for that QP (:func:`molearn.solvers.kkt_residual_min_norm`; symmetrised, unclipped A).

    Task-specific parameters get the mean over the batches of :math:`\sum_i\nabla L_i` (the engine's
    rule); LibMTL's SDMGrad sums them over its 3 backward passes (its MoDo divides by 3). A zero Jacobian
    gives the zero update. K = 1: w = 1 and the update is the gradient (times ``scale``).
    Permutation-equivariant (exactly for the exact solver; the official one up to the order of ties).

    Cost per step: ``batches`` forward passes and ``batches``·K backward passes; ``batches=1`` needs only
    the Gramian (so ``Balancer(mode="gramian")`` works), ``batches=3`` the Jacobians (the K×K cross
    Gramian). Inner solver: ``niter`` K×K matrix-vector products and projections (exact: a K×K active-set
    solve, plus an eigendecomposition for ``batches=3``). State: w (K, float64) when ``warm_start``;
    ``state_dict()`` holds ``w``.
    """

    def __init__(
        self,
        lamda: float = 0.3,
        batches: Literal[1, 3] = 3,
        solver: Solver = "official",
        niter: int = 20,
        lr: float | None = None,
        momentum: float = 0.5,
        warm_start: bool = True,
        *,
        keep_best: bool | None = None,
        scale: float | Literal["K"] = 1.0,
    ) -> None:
        if batches not in (1, 3):
            raise ValueError(f"batches must be 1 or 3, got {batches!r}")
        if solver not in ("official", "exact"):
            raise ValueError(f"solver must be 'official' or 'exact', got {solver!r}")
        if not lamda >= 0:
            raise ValueError(f"lamda must be non-negative, got {lamda!r}")
        if int(niter) != niter or niter < 0:
            raise ValueError(f"niter must be a non-negative integer, got {niter!r}")
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if scale != "K" and not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale must be a positive number or 'K', got {scale!r}")
        self.lamda = float(lamda)
        self.batches = batches
        self.solver = solver
        self.niter = int(niter)
        self.lr = float(_LR[batches] if lr is None else lr)
        self.momentum = float(momentum)
        self.warm_start = bool(warm_start)
        self.keep_best = (not self.warm_start) if keep_best is None else bool(keep_best)
        self.scale = scale
        self._w: Tensor | None = None

    @property  # type: ignore[override]
    def needs(self) -> Needs:  # type: ignore[override]
        return Needs(jacobian=True, batches=3) if self.batches == 3 else Needs(gramian=True)

    def _matrix(self, inputs: Inputs) -> Tensor:
        """The (unnormalised) matrix A of the inner problem, float64."""
        if self.batches == 1:
            return check_gramian(inputs.gramian, "SDMGrad").to(torch.float64)
        if len(inputs.extra) != 2:
            raise ValueError(
                f"SDMGrad(batches=3) needs 3 independent batches (got {len(inputs.extra) + 1}): "
                "use Balancer.step"
            )
        xi1 = check_jacobian(inputs.extra[0].jacobian, "SDMGrad")
        xi2 = check_jacobian(inputs.extra[1].jacobian, "SDMGrad")
        return (xi1 @ xi2.T).to(torch.float64)

    def _solve_official(self, a: Tensor, w0: Tensor) -> Tensor:
        lam = self.lamda
        if self.batches == 3:
            s = a.diagonal().clamp_min(0).sqrt().mean()
            an = a / (s * s + 1e-8)
            c = an.mean(1)

            def grad(w: Tensor) -> Tensor:
                return an @ w + lam * c
        else:
            s = (a.diagonal() + 1e-4).sqrt().mean()
            an = a / (s * s)
            c = an.mean(1)

            def grad(w: Tensor) -> Tensor:
                return an @ w + an.T @ w + 2 * lam * c

        def obj(w: Tensor) -> Tensor:
            return w @ (an @ w) + 2 * lam * (w @ c) + lam**2 * c.mean()

        return _sgd_on_simplex(
            grad, obj, w0, lr=self.lr, momentum=self.momentum, niter=self.niter, keep_best=self.keep_best
        )

    def combine(self, inputs: Inputs) -> Output:
        a = self._matrix(inputs)
        m = a.shape[0]
        k = inputs.num_objectives
        sym = 0.5 * (a + a.T)
        if self.solver == "exact":
            w = min_norm(_direction_gramian(_psd_part(sym) if self.batches == 3 else sym, self.lamda))
        else:
            w0 = self._w
            if not self.warm_start or w0 is None or w0.shape != (m,):
                w0 = torch.full((m,), 1.0 / m, dtype=torch.float64, device=a.device)
            else:
                w0 = w0.to(device=a.device, dtype=torch.float64)
            w = self._solve_official(a, w0)
            if self.warm_start:
                if self._w is not None and self._w.shape == w.shape and self._w.device == w.device:
                    self._w.copy_(w)  # in place (CUDA-graph friendly)
                else:
                    self._w = w.clone()
        res = kkt_residual_min_norm(_direction_gramian(sym, self.lamda), w)
        info = {"w": w, "residual": res, "status": status_from_residual(res, KKT_TOL)}
        scale = float(k) if self.scale == "K" else float(self.scale)
        v = (w + self.lamda / m) * (scale / (1.0 + self.lamda))
        if inputs.selected is not None:
            idx = inputs.selected.to(device=v.device)
            v = torch.zeros(k, dtype=v.dtype, device=v.device).index_copy(0, idx, v)
        return Output(weights=v.to(inputs.losses.dtype), info=info)

    def state_dict(self) -> dict[str, Any]:
        return {} if self._w is None else {"w": self._w.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"w"}
        if unknown:
            raise ValueError(f"{type(self).__name__} got unknown state keys {sorted(unknown)}")
        if not state:
            self._w = None
            return
        self._w = state_tensor(type(self).__name__, state, "w", ndim=1).detach().to(torch.float64).clone()

    def reset(self) -> None:
        self._w = None


class SDMGradOS(SDMGrad):
    r"""SDMGrad-OS: SDMGrad with objective sampling (Xiao, Ban, Ji, NeurIPS 2023,
    https://arxiv.org/abs/2305.18409; ml-opt-lab/sdmgrad ``mtrl/mtrl_files/sdmgrad.py``, ``sdmgrad_os``).

    Each step, :meth:`select` includes every objective independently with probability
    :math:`\min(n/K, 1)` (drawn again while none is included), so the engine computes only the |S|
    selected gradients (≈ n backward passes instead of K; the others' task parameters get nothing). The
    SDMGrad subproblem is solved over S with :math:`g_0 = \frac1{|S|}\sum_{i\in S} g_i`:
    :math:`d = (G_S^\top w^\star + \lambda g_{0,S})/(1+\lambda)`; the returned K weights are
    :math:`(w^\star + \lambda/|S|)/(1+\lambda)` on S and 0 elsewhere.

    Defaults of the official MT10 script (``run.sh``: ``sdmgrad_os4``, ``sdmgrad_lmbda`` 0.6; MT50 uses
    ``os8``) and of its inner solver: single batch, normalisation :math:`s = \mathrm{mean}_i
    \sqrt{A_{ii} + 10^{-4}}`, 20 SGD steps with lr 50 and momentum 0.5 from :math:`\mathbb 1/|S|` every
    step (no warm start: S changes), keeping the best of the 21 iterates. Other keyword arguments go to
    :class:`SDMGrad` (``solver``, ``niter``, ``lr``, ``momentum``, ``keep_best``, ``scale``).

    The draws come from ``generator`` (a CPU generator is best: the indices are needed on the host) or,
    if None, from a private CPU generator seeded once from torch's global RNG on first use. Its state is
    in ``state_dict()`` (``rng``), so a restored method draws the same objectives. The official code draws
    with ``np.random.binomial``; a different stream, the same distribution.

    Cost per step: one forward pass, |S| backward passes (E|S| ≈ n), the |S|×|S| Gramian and the inner
    solver on it. State: the generator's state only.
    """

    def __init__(
        self, n: int = 4, lamda: float = 0.6, generator: torch.Generator | None = None, **kw: Any
    ) -> None:
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if kw.pop("batches", 1) != 1:
            raise ValueError("SDMGradOS uses one batch (batches=1)")
        if kw.pop("warm_start", False):
            raise ValueError("SDMGradOS re-initialises w every step (warm_start=False): S changes")
        if kw.get("lr") is None:
            kw["lr"] = 50.0  # mtrl sdmgrad_os
        super().__init__(lamda=lamda, batches=1, warm_start=False, **kw)
        self.n = int(n)
        self.generator = generator
        self._own: torch.Generator | None = None

    def _gen(self) -> torch.Generator:
        if self.generator is not None:
            return self.generator
        if self._own is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())  # sync: once, on the host, before a step
            self._own = torch.Generator().manual_seed(seed)
        return self._own

    def select(self, num_objectives: int) -> Tensor | None:
        k = num_objectives
        p = min(self.n / k, 1.0)
        gen = self._gen()
        while True:  # host-side draw (before any backward pass); P(empty) = (1 - p)^K < 1
            mask = torch.rand(k, generator=gen, dtype=torch.float64, device=gen.device) < p
            if bool(mask.any()):  # sync: select() draws on the host by design (CPU generator, no device)
                return mask.nonzero().flatten().cpu()  # sync: as above (a CPU index, before any backward)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.generator is not None or self._own is not None:
            state["rng"] = self._gen().get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        rng = state.pop("rng", None)
        super().load_state_dict(state)
        if rng is None:
            self._own = None
            return
        if self.generator is None and self._own is None:
            self._own = torch.Generator()
        self._gen().set_state(rng)
