"""SAMO: sharpness-aware multi-task optimisation with a joint global-local perturbation."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad, get

# added to the norms before dividing, as in the official code (a zero norm gives a zero perturbation)
_NORM_EPS = 1e-12


class _Probe(Protocol):  # the part of molearn.engine.Probe that SAMO uses
    num_shared: int

    @property
    def num_objectives(self) -> int: ...

    def shared_sizes(self) -> list[int]: ...

    def task_columns(self, i: int) -> Tensor: ...

    def mean_gradient(self) -> Tensor: ...

    def losses_at(self, offset: Tensor | None) -> Tensor: ...

    def gradient_at(self, i: int, offset: Tensor | None) -> Tensor: ...


class SAMO(Method):
    r"""SAMO (Ban, Subramani & Ji, ICCV 2025, "SAMO: A Lightweight Sharpness-Aware Approach for Multi-Task
    Optimization with Joint Global-Local Perturbation", https://arxiv.org/abs/2507.07883, official code
    OptMN-Lab/SAMO): every objective's gradient is taken at its own SAM-perturbed point, then ``method``
    (default FairGrad, α = 2) combines them.

    With :math:`\bar g` the gradient of :math:`\frac1K\sum_i L_i` (all parameters), :math:`z_i \sim N(0, I)`
    over the shared parameters, and the layer index :math:`l` running over the shared tensors:

    .. math::
        \hat g_i = \frac{L_i(\theta + \epsilon z_i) - L_i(\theta - \epsilon z_i)}{2\epsilon}\, z_i,\qquad
        m_{i,l} = (1-\beta)\,\bar g_l + \beta\, \|\bar g_l\|\, \frac{\hat g_{i,l}}{\|\hat g_{i,l}\|},

        \varepsilon_i = \rho \frac{m_i}{\|m_i\|} \ \text{(shared)},\qquad
        \varepsilon_i^{h} = \rho \frac{\bar g_{h_i}}{\|\bar g_{h_i}\|} \ \text{(heads of } i\text{)},\qquad
        g_i^{\mathrm{SAM}} = \nabla L_i(\theta + \varepsilon_i + \varepsilon_i^h)

    (all norms :math:`+10^{-12}`, as in the official code). The shared parameters get ``method``'s
    combination of the :math:`g_i^{\mathrm{SAM}}` (weights from their Gramian); the heads of objective
    :math:`i` get its gradient at the perturbed point (``task_grad = "own"``), as in the official code.
    ``layerwise=False`` mixes without the rescaling, :math:`m_i = (1-\beta)\bar g + \beta \hat g_i` — what
    the official NYUv2 trainer does (CelebA, Cityscapes, QM9, Office-Home rescale). The paper's α is
    :math:`1-\beta`.

    Cost per step: K + 1 backward and 3K + 1 forward passes (the global pass, 2K forward-only
    zeroth-order passes, K perturbed forward/backward passes). Needs :meth:`molearn.Balancer.step`, and
    ``Balancer(module=model)`` for models with BatchNorm or dropout: the zeroth-order passes then run in
    eval mode (as the official code's model copy does), the perturbed passes in train mode, and only the
    global pass updates the running statistics (the official code sets the BatchNorm momentum to 0).

    Official ``run.sh`` values (inner method ``fairgradwithsamo``, α = 2, combined gradient ×K then
    clipped to norm 1 — use ``SAMO(scale="K")`` and clip in the training loop for that magnitude):

    ============  ========  =====  ======  ==========================================================
    benchmark     ρ         β      zo_eps  notes
    ============  ========  =====  ======  ==========================================================
    NYUv2         0.001     0.5    0.01    ``layerwise=False`` (trainer); parser defaults ρ 0.003, β 0.1
    CelebA        0.001     0.5    0.01
    Office-Home   0.001     0.5    0.01    one batch per task
    QM9           1e-5      0.9    0.01    head perturbation left unnormalised (see below)
    Cityscapes    (0.003)   (0.1)  (0.01)  no ``run.sh``: trainer parser defaults
    ============  ========  =====  ======  ==========================================================

    Differences from the official code (molearn follows the first variant of each):

    * random directions come from ``generator`` (or torch's global generator), one flat draw over the
      shared parameters per objective; the official code reseeds torch's global generator per task from
      NumPy and draws per tensor. The zeroth-order passes evaluate all K losses and keep :math:`L_i` (as
      the official code does); the estimate of objective :math:`i` is computed right before its perturbed
      gradient (the official code does all K estimates first): equal unless dropout and the random
      directions share the global generator.
    * a shared tensor whose zeroth-order estimate is exactly 0 (e.g. the loss does not depend on the
      shared parameters) gets :math:`(1-\beta)\bar g_l` instead of the official NaN; shared tensors with
      :math:`\bar g_l = 0` are not perturbed (official: those with no ``.grad``).
    * the QM9 trainer perturbs the heads by the raw :math:`\bar g_{h_i}` (its normalisation is commented
      out); the Office-Home trainer never restores the shared parameters before the optimiser step; the
      official ``num_batches_tracked`` grows by K + 1 per step, molearn's by 1 (running means/variances
      agree). The adaptive (ASAM) option, off in every script, is not implemented.
    * with K = 1 the Balancer passes the plain gradient through (no perturbation).
    * the heads of objective :math:`i` are the task parameters its graph reaches
      (``Probe.task_columns``); losses computed by one vectorised expression reach every head, and then
      :math:`\varepsilon_i^h` is normalised over all of them.

    Args:
        method: the inner method (instance or registry name; ``**method_kwargs`` go to it by name).
            Single-batch methods that use all objectives; ``needs.jacobian`` and ``after_step`` pass
            through. :meth:`combine`, the state and :meth:`reset` are the inner method's.
        rho: perturbation radius ρ. beta: weight β of the local (zeroth-order) direction.
        zo_eps: finite-difference step ε. layerwise: rescale the local direction per shared tensor.
        generator: for the random directions (on the parameters' device); its state is in
            :meth:`state_dict`.
    """

    task_grad: ClassVar[TaskGrad] = "own"

    def __init__(
        self,
        method: Method | str = "fairgrad",
        rho: float = 0.001,
        beta: float = 0.5,
        zo_eps: float = 0.01,
        layerwise: bool = True,
        generator: torch.Generator | None = None,
        **method_kwargs: Any,
    ) -> None:
        if isinstance(method, str):
            if method.lower().replace("-", "").replace("_", "") == "fairgrad":
                method_kwargs.setdefault("alpha", 2.0)  # the SAMO code's default (experiments/utils.py)
            method = get(method, **method_kwargs)
        elif method_kwargs:
            raise TypeError(f"keyword arguments {sorted(method_kwargs)} need the inner method given by name")
        if not isinstance(method, Method):
            raise TypeError(f"method must be a Method or a method name, got {type(method).__name__}")
        inner = method.needs
        if inner.closure or inner.batches != 1:
            raise ValueError(f"SAMO wraps single-batch gradient methods, not {type(method).__name__}")
        if type(method).select is not Method.select:
            raise ValueError(
                f"SAMO computes every objective's gradient; {type(method).__name__} samples them"
            )
        if not rho >= 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if not zo_eps > 0:
            raise ValueError(f"zo_eps must be positive, got {zo_eps}")
        self.method = method
        self.rho = float(rho)
        self.beta = float(beta)
        self.zo_eps = float(zo_eps)
        self.layerwise = layerwise
        self.generator = generator
        self._layers: tuple[tuple[tuple[int, ...], torch.device], Tensor] | None = None

    @property  # type: ignore[override]
    def needs(self) -> Needs:  # type: ignore[override]
        inner = self.method.needs
        return Needs(gramian=True, jacobian=inner.jacobian, after_step=inner.after_step, closure=True)

    # --- the perturbed gradients ---------------------------------------------------------------

    def _layer_index(self, sizes: list[int], device: torch.device) -> Tensor:
        """For each shared column, the index of its tensor (cached per shapes and device)."""
        key = (tuple(sizes), device)
        if self._layers is None or self._layers[0] != key:
            # sync: built on the host once per parameter layout (cached), then copied to the device
            index = torch.repeat_interleave(
                torch.arange(len(sizes)),
                torch.tensor(sizes, dtype=torch.long),  # sync: once per layout
            )  # sync: see above
            self._layers = (key, index.to(device))
        return self._layers[1]

    def jacobian(self, probe: _Probe) -> Tensor:
        k = probe.num_objectives
        ns = probe.num_shared
        sizes = probe.shared_sizes()
        columns = [probe.task_columns(i) + ns for i in range(k)]
        gbar = probe.mean_gradient()
        dtype, device = gbar.dtype, gbar.device
        layer = self._layer_index(sizes, device)
        num_layers = len(sizes)

        def layer_norms(x: Tensor) -> Tensor:
            return torch.zeros(num_layers, dtype=x.dtype, device=x.device).index_add_(0, layer, x * x).sqrt()

        g_shared = gbar[:ns]
        norms_global = layer_norms(g_shared)
        used = (norms_global > 0).to(dtype)[layer]  # official: only tensors with a .grad are perturbed
        tiny = torch.finfo(dtype).tiny
        rows = []
        for i in range(k):
            z = torch.randn(ns, generator=self.generator, device=device, dtype=dtype)
            probe_offset = torch.zeros_like(gbar)
            probe_offset[:ns] = self.zo_eps * z
            plus = probe.losses_at(probe_offset)[i]
            minus = probe.losses_at(-probe_offset)[i]
            g_local = ((plus - minus) / (2 * self.zo_eps)).to(dtype) * z
            if self.layerwise:
                norms_local = layer_norms(g_local)
                ratio = torch.where(norms_local > 0, norms_global / norms_local.clamp_min(tiny), 0.0)
                mixed = (1 - self.beta) * g_shared + self.beta * ratio[layer] * g_local
            else:
                mixed = ((1 - self.beta) * g_shared + self.beta * g_local) * used
            offset = torch.zeros_like(gbar)
            offset[:ns] = mixed * (self.rho / (mixed.norm() + _NORM_EPS))
            cols = columns[i]
            head = gbar[cols]
            offset[cols] = head * (self.rho / (head.norm() + _NORM_EPS))
            rows.append(probe.gradient_at(i, offset))
        return torch.stack(rows)

    # --- Method API (the inner method's) -------------------------------------------------------

    def combine(self, inputs: Inputs) -> Output:
        return self.method.combine(inputs)

    def after_step(self, losses_before: Tensor, losses_after: Tensor) -> None:
        self.method.after_step(losses_before, losses_after)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"method": self.method.state_dict()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state.get("method", {}))
        if "generator" in state:
            if self.generator is None:
                raise ValueError("the state holds a generator state but this SAMO has no generator")
            self.generator.set_state(state["generator"])

    def reset(self) -> None:
        self.method.reset()
