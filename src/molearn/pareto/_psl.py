r"""Pareto set learning (PSL): one preference-conditioned model for the whole Pareto set of a problem.

A :class:`ParetoSetModel` maps a preference :math:`p \in \Delta^{M-1}` to a decision vector
:math:`x(p) = l + (u - l)\,\sigma(\mathrm{MLP}(p))` inside the box :math:`[l, u]` of the problem: the
"hypernetwork" of Navon et al., "Learning the Pareto Front with Hypernetworks" (ICLR 2021,
https://arxiv.org/abs/2010.04104) whose output *is* the decision vector, as in Lin et al., "Pareto Set
Learning for Expensive Multi-Objective Optimization" (NeurIPS 2022, https://arxiv.org/abs/2210.08495;
code ``Xi-L/PSL-MOBO``, ``Xi-L/EPSL``). The MLP is ``Linear(M, h) - ReLU - Linear(h, h) - ReLU -
Linear(h, n_var)`` with a sigmoid output, as in the official code (``h = 256`` in PSL-MOBO, 1024 in EPSL).

Two deviations from the official code, both measured (``molearn pareto --methods psl-tchebycheff``):

* **Box output.** A sigmoid reaches the box bounds only asymptotically, but the extreme points of many
  fronts lie on them (ZDT: :math:`x_1 \in \{0, 1\}`): on ZDT2 the official output stopped at
  :math:`f_1 \in [0.002, 0.968]` after 2000 steps and lost about 1 % of the hypervolume. molearn stretches the
  sigmoid by ``stretch`` (default 0.05) beyond both bounds, clips to the box, and passes the gradient straight
  through the clip (so a solution pushed against a bound can come back); ``stretch=0`` is the official output.
* **Ideal point.** ``ideal="auto"`` (default) uses the problem's known ideal point when it has one and the
  official running minimum otherwise. With the running minimum, PSL on ZDT2 collapses to the single point
  :math:`f_1 = 0` (20 % of the front's hypervolume, every scalarisation): :math:`z` follows the solutions
  down, so the :math:`f_1` term stays active for half the preferences while :math:`\partial f_2 / \partial
  x_1 = -2x_1/g` vanishes as :math:`x_1 \to 0`.

:func:`train_psl` minimises, with Adam, the mean over ``n_pref_per_step`` preferences
:math:`p \sim \mathrm{Dir}(\mathbf 1)` of a scalarisation :math:`s(f(x(p)) \mid p)` (``z`` the ideal point):

* ``"tchebycheff"`` (augmented, as the official ``tch`` loss):
  :math:`\max_i p_i (f_i - z_i) + 0.01 \sum_i f_i`;
* ``"stch"`` (smooth Tchebycheff, Lin et al. ICML 2024): :math:`\mu \log\sum_i \exp(p_i (f_i - z_i)/\mu)`,
  ``mu = 0.1`` (EPSL's value). EPSL weights by :math:`1/p_i` instead of :math:`p_i` (its ``mtch``
  variant); molearn weights by :math:`p_i` like the Tchebycheff loss above (the two families of
  solutions are the same, traversed in the opposite order of :math:`p`);
* ``"ls"``: :math:`\sum_i p_i f_i` (finds only the convex hull of the front);
* ``"pbi"``: :math:`d_1 + \theta d_2` with :math:`d_1 = (f - z)\cdot \hat p`, :math:`d_2 = \|f - z - d_1
  \hat p\|`, :math:`\hat p = p / \|p\|`, ``theta = 5``.

Ideal point: ``ideal=None`` follows the official code (``"auto"``, the default, prefers a known one): ``z``
is a running minimum of every objective value seen so far minus 0.1 (detached; EPSL ``z = min(z, f -
0.1)``). A given ``ideal`` is used as ``z`` as it is. Official defaults: Adam ``lr = 1e-3`` (CoPSL /
PSL-MOBO), 10 preferences per step (PSL-MOBO, EPSL), 1000-2000 steps. EPSL uses a schedule-free AdamW (lr
0.0025) and evolutionary gradient estimates (for expensive black boxes); molearn back-propagates the exact
gradients of the torch problem.

**Stein variational variant** (``svgd=True``; Nguyen et al., "Improving Pareto Set Learning for Expensive
Multi-objective Optimization via Stein Variational Hypernetworks", AAAI 2025,
https://arxiv.org/abs/2412.17312). The ``n`` solutions :math:`x_i = x(p_i)` of a step are treated as SVGD
particles. With :math:`g_j = \nabla_{x_j} s(f(x_j) \mid p_j)` and an RBF kernel
:math:`k(a, b) = \exp(-\|a - b\|^2 / h)` on the box-normalised decision vectors, the particle update is

.. math:: \phi(x_i) = \frac1n \sum_j \Big[ -k(x_j, x_i)\, g_j
          + \alpha\, \nabla_{x_j} k(x_j, x_i) \Big]

(driving term + ``svgd_alpha`` times the repulsive term; default 0.01: with 1.0 the repulsion in the 30
variables of ZDT1 keeps the distance variables off 0 and the HV falls to 16 % of the front's), with the
median heuristic
:math:`h = \mathrm{med}^2 / \log(n + 1)` (Liu & Wang 2016, ``+1`` so that ``n = 1`` is defined) unless
``svgd_bandwidth`` is given. The hypernetwork is then updated by back-propagating :math:`-\phi(x_i)` as
the gradient at :math:`x_i` (``X.backward(-phi)``) and taking an Adam step. What molearn implements and
what it does not: the paper's public text (abstract) was read, its code was not; the kernel over the
generated solutions, the driving/repulsive split and the median bandwidth follow the brief and standard
SVGD. The paper's setting uses a Gaussian-process surrogate with an acquisition function (LCB) in place
of :math:`f`; molearn applies the update to the true differentiable objectives. Any annealing schedule of
the repulsive term (the later SVH-MOL paper) is not implemented; ``svgd_alpha`` is constant.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from ._problems import Problem, _simplex_lattice
from ._problems import problem as _make_problem

__all__ = ["ParetoSetModel", "evaluate_psl", "train_psl"]

Scalarization = Literal["tchebycheff", "stch", "ls", "pbi"]
_INSIDE = 1e-9
_SCALARIZATIONS = ("tchebycheff", "stch", "ls", "pbi")


def _check_preferences(pref: Tensor, n_obj: int) -> Tensor:
    """Validate preferences ``(n_obj,)`` / ``(N, n_obj)``; return them as ``(N, n_obj)`` on the simplex."""
    if not isinstance(pref, Tensor):
        raise TypeError(f"preferences must be a torch.Tensor, got {type(pref).__name__}")
    if not pref.is_floating_point():
        raise TypeError(f"preferences must be floating point, got {pref.dtype}")
    if pref.dim() not in (1, 2) or pref.shape[-1] != n_obj:
        raise ValueError(f"preferences must have shape ({n_obj},) or (N, {n_obj}), got {tuple(pref.shape)}")
    p = pref.reshape(-1, n_obj)
    if not bool(torch.isfinite(p).all()):
        raise ValueError("preferences must be finite")
    if bool((p < 0).any()):
        raise ValueError("preferences must be non-negative")
    s = p.sum(dim=1, keepdim=True)
    if bool((s <= 0).any()):
        raise ValueError("every preference vector must have a positive sum (got one summing to zero)")
    return p / s


class ParetoSetModel(nn.Module):
    """Preference -> decision vector: ``x(p) = lower + (upper - lower) * sigmoid(MLP(p))`` (stretched by
    ``stretch`` beyond the box and clipped, see the module docstring).

    Args:
        n_obj: number of objectives (input size).
        n_var: number of decision variables (output size).
        lower, upper: the box, tensors or sequences of shape ``(n_var,)`` with ``lower < upper``.
        hidden: width of the two hidden layers (256 as PSL-MOBO).
        stretch: how far the sigmoid is stretched beyond each bound before clipping (0 = official).

    :meth:`forward` validates the preferences (non-negative, right length, positive sum) and normalises
    them to sum 1; the result has the dtype of the model's parameters (``float32`` unless converted).
    """

    lower: Tensor
    upper: Tensor

    def __init__(
        self,
        n_obj: int,
        n_var: int,
        lower: Tensor | list[float],
        upper: Tensor | list[float],
        hidden: int = 256,
        stretch: float = 0.05,
    ) -> None:
        super().__init__()
        if not 0.0 <= stretch < 1.0:
            raise ValueError(f"stretch must be in [0, 1), got {stretch}")
        self.stretch = float(stretch)
        for name, v in (("n_obj", n_obj), ("n_var", n_var), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        lo = torch.as_tensor(lower, dtype=torch.float64).reshape(-1)
        hi = torch.as_tensor(upper, dtype=torch.float64).reshape(-1)
        if lo.shape != (n_var,) or hi.shape != (n_var,):
            raise ValueError(
                f"lower and upper must have shape ({n_var},), got {tuple(lo.shape)}, {tuple(hi.shape)}"
            )
        if not bool((hi > lo).all()) or not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
            raise ValueError("the box must be finite with lower < upper")
        self.n_obj = n_obj
        self.n_var = n_var
        self.net = nn.Sequential(
            nn.Linear(n_obj, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_var),
        )
        self.register_buffer("lower", lo.to(torch.get_default_dtype()))
        self.register_buffer("upper", hi.to(torch.get_default_dtype()))

    def forward(self, pref: Tensor) -> Tensor:
        """Decision vectors ``(n_var,)`` or ``(N, n_var)`` for preferences ``(n_obj,)`` or ``(N, n_obj)``."""
        p = _check_preferences(pref, self.n_obj)
        x = self._forward(p.to(self.lower.dtype))
        return x.squeeze(0) if pref.dim() == 1 else x

    def _forward(self, p: Tensor) -> Tensor:
        """Unchecked forward on ``(N, n_obj)`` simplex points (no host synchronisation)."""
        s = torch.sigmoid(self.net(p))
        if self.stretch > 0:
            s = (1.0 + 2.0 * self.stretch) * s - self.stretch
            # clip into the box (a hair inside: some problems have infinite slopes on the bounds) and let
            # the gradient through unchanged
            s = s + (s.clamp(_INSIDE, 1.0 - _INSIDE) - s).detach()
        return self.lower + (self.upper - self.lower) * s


def evaluation_preferences(n: int, n_obj: int) -> Tensor:
    """``n`` evenly spread preferences (float64): ``(t, 1 - t)`` for ``t`` evenly spaced in [0, 1] when
    ``n_obj = 2``, a Das-Dennis lattice thinned to ``n`` points otherwise (as the true fronts)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if n_obj < 2:
        raise ValueError(f"n_obj must be >= 2, got {n_obj}")
    if n_obj == 2:
        t = (
            torch.linspace(0.0, 1.0, n, dtype=torch.float64)
            if n > 1
            else torch.full((1,), 0.5, dtype=torch.float64)
        )
        return torch.stack([t, 1.0 - t], dim=1)
    return _simplex_lattice(n, n_obj)


def _scalarize(f: Tensor, p: Tensor, z: Tensor, kind: str, theta: float, mu: float) -> Tensor:
    """Per-preference scalarised values ``(N,)`` of objectives ``f`` ``(N, M)``."""
    d = f - z
    if kind == "tchebycheff":
        return (p * d).amax(dim=1) + 0.01 * f.sum(dim=1)
    if kind == "stch":
        return mu * torch.logsumexp(p * d / mu, dim=1)
    if kind == "ls":
        return (p * f).sum(dim=1)
    # pbi
    u = p / p.norm(dim=1, keepdim=True)
    d1 = (d * u).sum(dim=1)
    d2 = (d - d1.unsqueeze(1) * u).norm(dim=1)
    return d1 + theta * d2


def _dirichlet_ones(
    n: int, m: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """``n`` samples of Dir(1, ..., 1): normalised Exp(1) variables drawn from ``generator``."""
    u = torch.rand(n, m, generator=generator, dtype=torch.float64, device=generator.device)
    e = -torch.log1p(-u)  # Exp(1), finite since u < 1
    e = e.clamp_min(1e-12)
    return (e / e.sum(dim=1, keepdim=True)).to(dtype=dtype, device=device)


def _svgd_direction(x: Tensor, g: Tensor, alpha: float, bandwidth: float | None) -> Tensor:
    r"""SVGD update :math:`\phi` of particles ``x`` ``(n, d)`` with loss gradients ``g`` (descent: ``-g``)."""
    n = x.shape[0]
    sq = torch.cdist(x, x).square()
    if bandwidth is None:
        med2 = (
            torch.median(sq[~torch.eye(n, dtype=torch.bool, device=x.device)]) if n > 1 else sq.new_ones(())
        )
        h = (med2 / math.log(n + 1)).clamp_min(1e-12)
    else:
        h = sq.new_tensor(bandwidth)
    k = torch.exp(-sq / h)  # symmetric
    drive = -(k @ g)
    # sum_j grad_{x_j} k(x_j, x_i) = (2 / h) sum_j (x_i - x_j) k_ij
    repulse = (2.0 / h) * (x * k.sum(dim=1, keepdim=True) - k @ x)
    return (drive + alpha * repulse) / n


def train_psl(
    problem: Problem | str,
    scalarization: Scalarization = "tchebycheff",
    *,
    steps: int = 1000,
    n_pref_per_step: int = 10,
    lr: float = 1e-3,
    seed: int = 0,
    hidden: int = 256,
    ideal: Tensor | list[float] | Literal["auto"] | None = "auto",
    theta: float = 5.0,
    mu: float = 0.1,
    svgd: bool = False,
    svgd_alpha: float = 0.01,
    svgd_bandwidth: float | None = None,
    model: ParetoSetModel | None = None,
    device: torch.device | str | None = None,
) -> ParetoSetModel:
    """Train a :class:`ParetoSetModel` on ``problem`` (see the module docstring) and return it (eval mode).

    Args:
        problem: a :class:`Problem` or a name for :func:`molearn.pareto.problem`.
        scalarization: ``"tchebycheff"`` (augmented), ``"stch"``, ``"ls"`` or ``"pbi"``.
        steps, n_pref_per_step, lr: Adam steps, preferences per step, learning rate.
        seed: seeds the model's initialisation and the preference sampling (global RNG untouched).
        hidden: width of a new model (ignored when ``model`` is given).
        ideal: ideal point ``z`` ``(n_obj,)``; ``None`` tracks ``min(f seen) - 0.1`` (official);
            ``"auto"``: the problem's known ideal point, else as ``None``.
        theta: PBI penalty. mu: STCH smoothing.
        svgd: use the Stein variational update; ``svgd_alpha`` weights its repulsive term and
            ``svgd_bandwidth`` fixes the RBF bandwidth ``h`` (``None``: median heuristic).
        model: continue training this model instead of creating one.
        device: where to train (default: the model's device, else CPU).
    """
    prob = _make_problem(problem) if isinstance(problem, str) else problem
    if not isinstance(prob, Problem):
        raise TypeError(f"problem must be a Problem or a name, got {type(problem).__name__}")
    if scalarization not in _SCALARIZATIONS:
        raise ValueError(f"scalarization must be one of {_SCALARIZATIONS}, got {scalarization!r}")
    for name, v in (("steps", steps), ("n_pref_per_step", n_pref_per_step)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not lr > 0 or not mu > 0 or not theta >= 0 or not svgd_alpha >= 0:
        raise ValueError("lr and mu must be positive, theta and svgd_alpha non-negative")
    if svgd_bandwidth is not None and not svgd_bandwidth > 0:
        raise ValueError(f"svgd_bandwidth must be positive, got {svgd_bandwidth}")
    m = prob.n_obj
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ParetoSetModel(m, prob.n_var, prob.lower, prob.upper, hidden=hidden)
    elif model.n_obj != m or model.n_var != prob.n_var:
        raise ValueError(
            f"model has (n_obj, n_var) = ({model.n_obj}, {model.n_var}), problem ({m}, {prob.n_var})"
        )
    dev = torch.device(device) if device is not None else model.lower.device
    model.to(dev).train()
    dtype = model.lower.dtype
    fixed_z = None
    if isinstance(ideal, str):
        if ideal != "auto":
            raise ValueError(f"ideal must be a vector, None or 'auto', got {ideal!r}")
        ideal = prob.ideal
    if ideal is not None:
        fixed_z = torch.as_tensor(ideal, dtype=torch.float64, device=dev).reshape(-1)
        if fixed_z.shape != (m,) or not bool(torch.isfinite(fixed_z).all()):
            raise ValueError(f"ideal must be a finite vector of shape ({m},)")
    z = fixed_z if fixed_z is not None else torch.full((m,), math.inf, dtype=torch.float64, device=dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        p = _dirichlet_ones(n_pref_per_step, m, gen, dtype, dev)
        x = model._forward(p)
        xd = x.to(torch.float64)
        if svgd:
            xd = xd.detach().requires_grad_(True)
        f = prob.evaluate(xd)
        if fixed_z is None:
            z = torch.minimum(z, f.detach().amin(dim=0) - 0.1)
        vals = _scalarize(f, p.to(torch.float64), z, scalarization, theta, mu)
        opt.zero_grad(set_to_none=True)
        if svgd:
            (g,) = torch.autograd.grad(vals.sum(), xd)
            scale = (model.upper - model.lower).to(torch.float64)
            # kernel on box-normalised coordinates; gradients w.r.t. the normalised coordinates
            u = (xd.detach() - model.lower.to(torch.float64)) / scale
            phi_u = _svgd_direction(u, g * scale, svgd_alpha, svgd_bandwidth)
            x.backward((-phi_u * scale).to(x.dtype))
        else:
            vals.mean().backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def evaluate_psl(model: ParetoSetModel, problem: Problem | str, n: int = 100) -> Tensor:
    """Objective values ``(n, n_obj)`` (float64, on the model's device) of the model's solutions for ``n``
    :func:`evaluation_preferences`."""
    prob = _make_problem(problem) if isinstance(problem, str) else problem
    if model.n_obj != prob.n_obj or model.n_var != prob.n_var:
        raise ValueError("model and problem disagree on n_obj / n_var")
    p = evaluation_preferences(n, prob.n_obj).to(device=model.lower.device, dtype=model.lower.dtype)
    return prob.evaluate(model._forward(p).to(torch.float64))
