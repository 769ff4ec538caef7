"""LogLosses: any method applied to the log-losses (FairGrad's "α-fair loss transform": log-MGDA, ...)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad, get

# Floor of the shifted losses when check_positive=False (no validation, no host sync).
_FLOOR = 1e-12


class LogLosses(Method):
    r"""Run ``method`` on the objectives :math:`\log(L_i + \epsilon)` instead of :math:`L_i` (Ban & Ji,
    ICML 2024, "Fair Resource Allocation in Multi-Task Learning", https://arxiv.org/abs/2402.15638, the
    "α-fair loss transform" behind log-MGDA, log-CAGrad and log-IMTL).

    .. math:: \tilde L_i = L_i + \epsilon,\quad \tilde g_i = \nabla \log \tilde L_i = g_i / \tilde L_i,
        \quad \tilde G_{ij} = G_{ij} / (\tilde L_i \tilde L_j),\quad w_i = w'_i / \tilde L_i

    The inner method sees the Gramian/Jacobian rows :math:`\tilde g_i` and the losses :math:`\log\tilde L_i`
    (also in ``after_step``, and for each extra batch with that batch's own losses); its weights
    :math:`w'` on the log-losses become weights :math:`w_i = w'_i/\tilde L_i` on the raw gradients (the
    same update :math:`\sum_i w'_i \tilde g_i`); a direction (Jacobian methods) passes through unchanged.
    ``needs``, ``task_grad``, ``select``, ``jacobian`` and the state (``state_dict``, ``reset``) are the
    inner method's. ``LogLosses("ew")`` is the official ``scaleinvls`` baseline (:math:`\sum_i \log L_i`).

    Options: ``log_eps`` (:math:`\epsilon`, default ``1e-8``); ``sum_to_one`` divides the mapped weights
    by :math:`|\sum_i w_i|` (official log-MGDA; meant for inner methods with non-negative weights; not
    allowed with a direction); ``check_positive=True`` raises a :class:`ValueError` naming the
    objectives whose :math:`\tilde L_i \le 0` (or NaN) — one host synchronisation per step on a GPU;
    with ``check_positive=False`` the shifted losses are floored at ``1e-12`` instead (no sync; a loss at
    0 then gets a huge weight); the default ``None`` checks CPU losses and floors the others (a GPU step
    never syncs). ``**kwargs`` go to the inner method when it is given by name.

    The official classes (OptMN-Lab/fairgrad ``methods/weight_methods.py``) and their molearn equivalents:

    * ``LOG_MGDA``: MinNormSolver on the gradients of :math:`\log(L_i + 10^{-8})`; the weights ``sol``
      are *not* multiplied by K (unlike their ``MGDA``); it back-propagates
      :math:`\sum_i \log(L_i+\epsilon)\,\mathrm{sol}_i / c` with
      :math:`c = \sum_i \mathrm{sol}_i/(L_i+\epsilon)`,
      i.e. raw weights :math:`w_i = \mathrm{sol}_i/((L_i+\epsilon)c)` summing to 1:
      ``LogLosses("mgda", sum_to_one=True)``. Its optional ``loss``/``loss+`` gradient normalisations
      use the raw losses (molearn's inner MGDA sees the log-losses; unused in the official scripts).
    * ``LOG_CAGrad``: CAGrad (c = 0.4, rescale 1, SLSQP) on the gradients of :math:`\log L_i` (no
      :math:`\epsilon`), result ×K: ``LogLosses("cagrad", c=0.4, scale="K", log_eps=0.0)``.
    * ``LOG_IMTLG``: IMTL-G on the gradients of :math:`\log(L_i + 10^{-8})`, back-propagates
      :math:`\sum_i \alpha_i \log(L_i+\epsilon)`, no rescaling: ``LogLosses("imtlg")``.

    Task-specific parameters: ``task_grad`` follows the inner method (molearn's MGDA/CAGrad/IMTLG:
    ``"own"``, heads get :math:`\nabla L_i`). The official ``LOG_MGDA``/``LOG_IMTLG`` back-propagate the
    weighted log-loss (heads get :math:`w_i \nabla L_i`: ``Balancer(task_grad="weighted")``); the official
    ``LOG_CAGrad`` leaves :math:`\sum_i \nabla L_i / L_i` in the heads, which no ``task_grad`` reproduces.

    K = 1: the inner method's pass-through, divided by :math:`\tilde L_1` (a positive multiple). Inner
    methods that need positive objectives themselves (GLS, FAMO: they take logs again) need
    :math:`\tilde L_i > 1` here.
    """

    def __init__(
        self,
        method: Method | str = "mgda",
        *,
        log_eps: float = 1e-8,
        sum_to_one: bool = False,
        check_positive: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(method, str):
            method = get(method, **kwargs)
        elif kwargs:
            raise TypeError(f"keyword arguments {sorted(kwargs)} need the inner method given by name")
        if not isinstance(method, Method):
            raise TypeError(f"method must be a Method or a method name, got {type(method).__name__}")
        if not log_eps >= 0:
            raise ValueError(f"log_eps must be non-negative, got {log_eps}")
        self.method = method
        self.log_eps = float(log_eps)
        self.sum_to_one = sum_to_one
        self.check_positive = check_positive

    @property  # type: ignore[override]
    def needs(self) -> Needs:  # type: ignore[override]
        return self.method.needs

    @property  # type: ignore[override]
    def task_grad(self) -> TaskGrad:  # type: ignore[override]
        return self.method.task_grad

    # --- the transform -------------------------------------------------------------------------

    def _shifted(self, losses: list[Tensor], labels: list[str] | None = None) -> list[Tensor]:
        """``L + eps`` in float64, validated (one sync for all batches) or floored."""
        shifted = [x.detach().to(torch.float64) + self.log_eps for x in losses]
        check = shifted[0].device.type == "cpu" if self.check_positive is None else self.check_positive
        if not check:
            return [s.clamp_min(_FLOOR) for s in shifted]
        flat = torch.cat(shifted)
        if not bool((flat > 0).all()):  # sync: opt-in validation (check_positive; CPU losses by default)
            k = shifted[0].shape[0]
            bad = (~(flat > 0)).nonzero().flatten().tolist()  # sync: error path only
            raw = torch.cat([x.detach().flatten() for x in losses])[bad].tolist()  # sync: error path only
            names = labels or [f" (batch {b})" for b in range(len(shifted))]
            where = [f"{i % k}" + (names[i // k] if len(shifted) > 1 else "") for i in bad]
            raise ValueError(
                f"LogLosses needs positive losses (L_i + log_eps > 0, log_eps={self.log_eps:g}); "
                f"objective(s) [{', '.join(where)}] have {raw} (use check_positive=False to floor them "
                "at 1e-12 instead)"
            )
        return shifted

    @staticmethod
    def _transform(inputs: Inputs, shifted: Tensor) -> Inputs:
        rows = shifted if inputs.selected is None else shifted[inputs.selected.to(shifted.device)]
        gramian = inputs.gramian
        if gramian is not None:
            gramian = (gramian.to(torch.float64) / torch.outer(rows, rows)).to(gramian.dtype)
        jacobian = inputs.jacobian
        if jacobian is not None:
            jacobian = jacobian / rows.to(jacobian.dtype).unsqueeze(-1)
        return Inputs(
            losses=shifted.log().to(inputs.losses.dtype),
            gramian=gramian,
            jacobian=jacobian,
            selected=inputs.selected,
        )

    def _map(self, w: Tensor, shifted: Tensor, dtype: torch.dtype) -> Tensor:
        out = w.to(torch.float64) / shifted
        if self.sum_to_one:
            total = out.sum().abs()
            out = torch.where(total > torch.finfo(torch.float64).tiny, out / total, out)
        return out.to(dtype)

    # --- Method API ----------------------------------------------------------------------------

    def combine(self, inputs: Inputs) -> Output:
        batches = [*inputs.extra, inputs]
        shifted = self._shifted([b.losses for b in batches])
        inner_inputs = self._transform(inputs, shifted[-1])
        inner_inputs.extra = [self._transform(b, s) for b, s in zip(inputs.extra, shifted[:-1])]
        out = self.method.combine(inner_inputs)
        if out.direction is not None:
            if self.sum_to_one:
                raise ValueError(
                    f"LogLosses(sum_to_one=True) needs weights, but {type(self.method).__name__} "
                    "returned a direction"
                )
            weights = None
        else:
            assert out.weights is not None, f"{type(self.method).__name__} returned no weights"
            weights = self._map(out.weights, shifted[-1], out.weights.dtype)
        extra = None
        if out.extra_weights is not None:
            extra = [self._map(w, s, w.dtype) for w, s in zip(out.extra_weights, shifted[:-1])]
        return Output(weights=weights, direction=out.direction, extra_weights=extra, info=out.info)

    def select(self, num_objectives: int) -> Tensor | None:
        return self.method.select(num_objectives)

    def jacobian(self, probe: Any) -> Tensor:
        return self.method.jacobian(probe)

    def after_step(self, losses_before: Tensor, losses_after: Tensor) -> None:
        before, after = self._shifted([losses_before, losses_after], [" (before the step)", " (after)"])
        self.method.after_step(before.log().to(losses_before.dtype), after.log().to(losses_after.dtype))

    def state_dict(self) -> dict[str, Any]:
        return self.method.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state)

    def reset(self) -> None:
        self.method.reset()
