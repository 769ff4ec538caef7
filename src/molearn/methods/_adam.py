"""Adam on a method's own small parameter vector (FAMO logits, UW/IMTL-L log-scales, GradNorm logits).

The official codes step these parameters with ``torch.optim.Adam``; this is the same update in float64,
held as plain tensors so that it is sync-free and checkpointable. Every tensor, the step count
included, lives on the parameter's device and is updated in place, so a captured CUDA graph replays the
same sequence of steps as eager calls.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import state_tensor


class Adam:
    """Adam (Kingma & Ba, 2015) with ``torch.optim.Adam`` semantics, including L2 ``weight_decay``."""

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be non-negative, got {lr}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.param: Tensor | None = None
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.t: Tensor | None = None  # the step count, a 0-d float64 tensor on the parameter's device

    def init(self, value: Tensor) -> Tensor:
        """Start from ``value`` (moments zero); returns the parameter."""
        self.param = value.to(torch.float64).clone()
        self.m = torch.zeros_like(self.param)
        self.v = torch.zeros_like(self.param)
        self.t = torch.zeros((), dtype=torch.float64, device=self.param.device)
        return self.param

    def to(self, device: torch.device) -> Tensor:
        """Move the state to ``device`` (new tensors only when the device changes); returns the parameter."""
        assert self.param is not None and self.m is not None and self.v is not None and self.t is not None
        if self.param.device != device:
            self.param, self.m, self.v = self.param.to(device), self.m.to(device), self.v.to(device)
            self.t = self.t.to(device)
        return self.param

    def step(self, grad: Tensor) -> Tensor:
        """One descent step along ``grad``, in place; returns the parameter."""
        assert self.param is not None and self.m is not None and self.v is not None and self.t is not None
        b1, b2 = self.betas
        self.t.add_(1.0)
        grad = grad.to(torch.float64) + self.weight_decay * self.param
        self.m.mul_(b1).add_(grad, alpha=1.0 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denom = self.v.sqrt() / (1.0 - torch.pow(b2, self.t)).sqrt() + self.eps
        self.param.sub_(self.lr / (1.0 - torch.pow(b1, self.t)) * self.m / denom)
        return self.param

    def state_dict(self) -> dict[str, Any]:
        if self.param is None:
            return {}
        assert self.m is not None and self.v is not None and self.t is not None
        return {"param": self.param.clone(), "m": self.m.clone(), "v": self.v.clone(), "t": self.t.clone()}

    def load_state_dict(self, state: dict[str, Any], owner: str = "Adam") -> None:
        """Restore :meth:`state_dict`: ``param``, ``m``, ``v`` 1-D floating tensors of one shape, ``v ≥ 0``,
        ``t`` a non-negative count (an int in older checkpoints, or a 0-d tensor); nothing changes on
        error."""
        if not state:
            self.param = self.m = self.v = self.t = None
            return
        unknown = set(state) - {"param", "m", "v", "t"}
        if unknown:
            raise ValueError(f"{owner} got unknown state keys {sorted(unknown)}")
        param, m, v = (state_tensor(owner, state, key, ndim=1) for key in ("param", "m", "v"))
        t = state_tensor(owner, state, "t", integral=True)
        if m.shape != param.shape or v.shape != param.shape:
            shapes = [tuple(x.shape) for x in (param, m, v)]
            raise ValueError(f"{owner} state: 'param', 'm' and 'v' must have one shape, got {shapes}")
        if bool((v < 0).any()):  # sync: loading a state
            raise ValueError(f"{owner} state 'v' (Adam's second moment) has negative entries")
        self.param = param.detach().to(torch.float64).clone()
        self.m = m.detach().to(torch.float64).clone()
        self.v = v.detach().to(torch.float64).clone()
        self.t = t.detach().to(dtype=torch.float64, device=self.param.device).reshape(()).clone()
