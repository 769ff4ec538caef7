"""MoCo: stochastic multi-objective gradient correction with a tracked Jacobian."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..solvers import project_simplex
from ..solvers.consts import device_scalar
from ._base import Inputs, Method, Needs, Output, check_jacobian, check_lengths, state_tensor

Variant = Literal["libmtl", "tradeoff", "tracking", "cagrad"]
Normalization = Literal["none", "l2", "loss", "loss+"]

# per variant: beta, beta_sigma, gamma, gamma_sigma, rho, raw_loss, lambda update, factor c
_DEFAULTS: dict[str, dict[str, Any]] = {
    "libmtl": dict(beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0, raw_loss=True),
    "tradeoff": dict(beta=0.1, beta_sigma=0.0, gamma=0.1, gamma_sigma=0.0, rho=0.1, raw_loss=False),
    "tracking": dict(beta=0.1, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0, raw_loss=False),
    "cagrad": dict(beta=0.05, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0, raw_loss=False),
}
_UPDATE = {"libmtl": "softmax", "tradeoff": "project", "tracking": "project", "cagrad": "softmax"}
_FACTOR = {"libmtl": 1.0, "tradeoff": 1.0, "tracking": 2.0, "cagrad": 1.0}


class MoCo(Method):
    r"""MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, "Mitigating Gradient Bias in Multi-objective
    Learning: A Provably Convergent Approach", ICLR 2023, https://openreview.net/forum?id=dLAYGdKTi2).

    A tracking matrix :math:`Y` (K×P, initialised to 0) follows the stochastic Jacobian :math:`G` and one
    step on the MGDA weights :math:`\lambda` (initialised to :math:`\mathbb 1/K`) is taken per iteration:

    .. math::
        Y \leftarrow Y - \beta_n (Y - \tilde G), \qquad
        \lambda \leftarrow P\big(\lambda - \gamma_n (c\,\hat Y \hat Y^\top \lambda + \rho \lambda)\big),
        \qquad d = s\,\hat Y^\top \lambda,

    with :math:`\beta_n = \beta / n^{\sigma_\beta}`, :math:`\gamma_n = \gamma / n^{\sigma_\gamma}`, the
    counter :math:`n = 1, 2, \dots` (the step, or the epoch ``1 + (t-1) // steps_per_epoch`` when
    ``steps_per_epoch`` is given), :math:`\tilde G` the Jacobian (``raw_loss``: row i rescaled to norm
    :math:`L_i`, :math:`g_i L_i / (\|g_i\| + 10^{-8})`; ``avg_reg``: the mean row appended, so Y and λ have
    K+1 rows), :math:`\hat Y = \operatorname{diag}(1/n_i) Y` (``normalization``: :math:`n_i` = 1,
    :math:`\|y_i\|`, :math:`L_i` or :math:`L_i\|y_i\|`), :math:`P` the projection onto the simplex
    (:func:`molearn.solvers.project_simplex`) or a softmax, and :math:`s` = ``scale``. The direction
    :math:`d` is not a combination of the current gradients: ``Output(direction=d)``, in the Jacobian's
    dtype; ``info["lambda"]`` holds λ.

    ``variant`` picks one of the four official implementations and its defaults (every default can be
    overridden by keyword):

    - ``"libmtl"`` (default; median-research-group/LibMTL ``weighting/MoCo.py``, written with the
      author): ``raw_loss``, softmax, :math:`c=1`; β 0.5, σβ 0.5, γ 0.1, σγ 0.5, ρ 0 (``config.py``).
      Counter: the step.
    - ``"tradeoff"`` (heshandevaka/Trade-Off-MOL ``LibMTL/weighting/MoCo.py``, closest to the paper's
      algorithm): projection, :math:`c=1`, constant β = γ = ρ = 0.1 (σ = 0; docstring defaults, its
      Toy-MNIST script uses ρ 0), ``normalization`` (``moco_gn``) applied
      to Y before the λ step and to the direction (the official code updates the model with the
      normalised Y). Its toy (``Toy/toy-stochastic-moco-iclr23.py``) solves the 2-task MGDA on Y exactly
      instead of the λ step; that is not reproduced.
    - ``"tracking"`` (heshandevaka/MoCo ``LibMTL/weighting/Tracking.py``, Office-31/Home): projection,
      :math:`c=2` (the gradient of :math:`\|Y^\top\lambda\|^2`), no ρ; β 0.1, δ = γ 0.1, σ2 = σβ 0.5,
      σ3 = σγ 0.5. Counter: the step.
    - ``"cagrad"`` (heshandevaka/MoCo ``CAGrad/utils.py``, Cityscapes): softmax, :math:`c=1`; β 0.05
      (``run_moco.sh``), δ = γ 0.1, σ 0.5/0.5, ``scale="K"`` (``overwrite_grad`` doubles the 2-task
      direction "to match the sum loss"). Its counter is the **epoch** (0-based e, decay
      :math:`(1+e)^{-\sigma}`): pass ``steps_per_epoch=len(loader)`` to reproduce it; by default (None)
      every step counts as an epoch. Options ``raw_loss``, ``avg_reg`` and ``step_wise`` (β becomes
      :math:`0.75\beta/(1+e-100)^{\sigma_\beta}` from epoch 100 and :math:`0.5\beta/(1+e-150)^{\sigma_\beta}`
      from epoch 150), as its ``smgdc_method``. Its NYUv2 script (β 0.99, σ 0, ``raw_loss``) never
      reaches the method (the NYUv2 trainer does not call it).

    ``rho`` is added after the factor :math:`c` (the official ``"tracking"`` code has no ρ). A zero
    normaliser (zero row of Y, zero loss) counts as 1 where the official code divides by zero. Everything
    is elementwise or a K×K/ K×P product, so the method is permutation-equivariant; K = 1 gives a positive
    multiple of the gradient at the first step (``"libmtl"``: ``0.5·L/(‖g‖+1e-8)·g``, for a positive loss).
    TorchJD has no MoCo.

    Cost and state: one Jacobian (K backward passes) per step; Y is **K model-sized buffers** (K×P, kept
    in the Jacobian's dtype and device and updated in place), plus one K×K product :math:`YY^\top` and one
    P-vector :math:`Y^\top\lambda` per step; λ (float64) and the step counter. All created lazily and
    recreated (reset) when K changes; ``state_dict()`` holds ``y``, ``lambd`` and ``step``.
    """

    needs: ClassVar[Needs] = Needs(jacobian=True)
    _step: Tensor | int

    def __init__(
        self,
        variant: Variant = "libmtl",
        *,
        beta: float | None = None,
        beta_sigma: float | None = None,
        gamma: float | None = None,
        gamma_sigma: float | None = None,
        rho: float | None = None,
        normalization: Normalization = "none",
        raw_loss: bool | None = None,
        avg_reg: bool = False,
        step_wise: bool = False,
        steps_per_epoch: int | None = None,
        scale: float | Literal["K"] | None = None,
    ) -> None:
        if variant not in _DEFAULTS:
            raise ValueError(f"unknown variant {variant!r}; known: {', '.join(_DEFAULTS)}")
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ValueError(f"unknown normalization {normalization!r}")
        if avg_reg and normalization in ("loss", "loss+"):
            raise ValueError("avg_reg has no loss for its extra row: use normalization 'none' or 'l2'")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        d = _DEFAULTS[variant]
        self.variant = variant
        self.beta = float(d["beta"] if beta is None else beta)
        self.beta_sigma = float(d["beta_sigma"] if beta_sigma is None else beta_sigma)
        self.gamma = float(d["gamma"] if gamma is None else gamma)
        self.gamma_sigma = float(d["gamma_sigma"] if gamma_sigma is None else gamma_sigma)
        self.rho = float(d["rho"] if rho is None else rho)
        self.normalization = normalization
        self.raw_loss = bool(d["raw_loss"] if raw_loss is None else raw_loss)
        self.avg_reg = avg_reg
        self.step_wise = step_wise
        self.steps_per_epoch = steps_per_epoch
        self.scale: float | Literal["K"] = ("K" if variant == "cagrad" else 1.0) if scale is None else scale
        self._update = _UPDATE[variant]
        self._factor = _FACTOR[variant]
        self._y: Tensor | None = None
        self._lambd: Tensor | None = None
        self._step = 0

    def _beta_at(self, n: Tensor) -> Tensor:
        """β at epoch ``n`` (a float64 tensor: the schedule runs on the device)."""
        beta = self.beta / n.pow(self.beta_sigma)
        if self.step_wise:
            e = n - 1
            beta = torch.where(
                e >= 100, 0.75 * self.beta / (1 + e - 100).clamp_min(1).pow(self.beta_sigma), beta
            )
            beta = torch.where(
                e >= 150, 0.5 * self.beta / (1 + e - 150).clamp_min(1).pow(self.beta_sigma), beta
            )
        return beta

    def combine(self, inputs: Inputs) -> Output:
        jac = check_jacobian(inputs.jacobian, "MoCo")
        k, p = jac.shape
        rows = k + 1 if self.avg_reg else k
        y, lambd = self._y, self._lambd
        if y is None or lambd is None or y.shape != (rows, p) or lambd.shape != (rows,):
            y = torch.zeros(rows, p, dtype=jac.dtype, device=jac.device)
            lambd = torch.full((rows,), 1.0 / rows, dtype=torch.float64, device=jac.device)
            self._step = 0
        elif y.device != jac.device or y.dtype != jac.dtype or lambd.device != jac.device:
            y = y.to(device=jac.device, dtype=jac.dtype)
            lambd = lambd.to(device=jac.device, dtype=torch.float64)
        # the step count lives on the device and is updated in place, as Y and λ (CUDA-graph friendly)
        step = device_scalar(self._step, jac.device)
        self._step = step.add_(1.0)
        n = 1 + torch.div(self._step - 1, self.steps_per_epoch or 1, rounding_mode="floor")
        beta = self._beta_at(n).to(jac.dtype)
        gamma = self.gamma / n.pow(self.gamma_sigma)
        losses = inputs.losses.to(device=jac.device, dtype=jac.dtype)

        # Y ← (1 − β) Y + β diag(s) G (+ the mean row), in place: no K×P temporary
        s = losses / (jac.norm(dim=1) + 1e-8) if self.raw_loss else torch.ones_like(losses)
        y.mul_(1.0 - beta)
        y[:k].addcmul_(jac, (beta * s).unsqueeze(1))
        if self.avg_reg:
            y[k].add_((s @ jac) * (beta / k))

        gram = (y @ y.T).to(torch.float64)
        norm = torch.ones(rows, dtype=torch.float64, device=jac.device)
        if self.normalization in ("l2", "loss+"):
            norm = norm * gram.diagonal().clamp_min(0).sqrt()
        if self.normalization in ("loss", "loss+"):
            norm = norm * losses.to(torch.float64)
        norm = torch.where(norm.abs() > torch.finfo(torch.float64).tiny, norm, 1.0)
        gram_hat = gram / torch.outer(norm, norm)
        lambd_state = lambd
        step = lambd - gamma * (self._factor * (gram_hat @ lambd) + self.rho * lambd)
        lambd = project_simplex(step) if self._update == "project" else torch.softmax(step, dim=-1)

        scale = float(k) if self.scale == "K" else float(self.scale)
        direction = y.T @ (lambd * (scale / norm)).to(y.dtype)
        if self._lambd is lambd_state:
            lambd_state.copy_(lambd)  # in place: the state stays the same tensor
        else:
            self._lambd = lambd.clone()
        self._y = y
        return Output(direction=direction, info={"lambda": lambd})

    def state_dict(self) -> dict[str, Any]:
        if self._y is None or self._lambd is None:
            return {}
        return {
            "y": self._y.clone(),
            "lambd": self._lambd.clone(),
            "step": torch.as_tensor(self._step).clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"y", "lambd", "step"}
        if unknown:
            raise ValueError(f"MoCo got unknown state keys {sorted(unknown)}")
        if not state:
            self.reset()
            return
        if not {"y", "lambd", "step"} <= set(state):
            raise ValueError("MoCo state needs 'y', 'lambd' and 'step'")
        y = state_tensor("MoCo", state, "y", ndim=2)
        lambd = state_tensor("MoCo", state, "lambd", ndim=1)
        step = state_tensor("MoCo", state, "step", integral=True)  # an int or a 0-d tensor
        check_lengths("MoCo", y=y.shape[0], lambd=lambd.shape[0])
        self._y = y.detach().clone()
        self._lambd = lambd.detach().to(torch.float64).clone()
        self._step = step.detach().to(torch.float64).reshape(()).clone()

    def reset(self) -> None:
        self._y = None
        self._lambd = None
        self._step = 0
