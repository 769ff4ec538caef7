"""Mixture-of-experts multi-task models: MMoE, CGC, PLE and DSelect-k.

- :class:`MMoE`: Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in Multi-task Learning with
  Multi-gate Mixture-of-Experts", KDD 2018.
- :class:`CGC` and :class:`PLE`: Tang, Liu, Zhao & Gong, "Progressive Layered Extraction (PLE): A Novel
  Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020.
- :class:`DSelectK`: Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong & Chi, "DSelect-k:
  Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning",
  NeurIPS 2021 (official code: google-research ``dselect_k_moe``).

Experts map the input (any shape) to a representation; gates read the flattened input, ``in_features``
numbers per example. By default an expert is the MLP ``Linear -> ReLU`` over ``expert_widths``; pass
``expert=`` (a factory of modules) for anything else. Every gate is a softmax-normalised (or, for
DSelect-k, smooth-step) linear function of the input, one per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import MultiTaskModule, mlp, sub
from ._sharing import _heads

__all__ = ["CGC", "PLE", "DSelectK", "MMoE", "smooth_step"]

ExpertFactory = Callable[[], nn.Module]


def _experts(
    count: int, in_features: int, expert: ExpertFactory | None, widths: Sequence[int]
) -> nn.ModuleList:
    if count < 0:
        raise ValueError(f"the number of experts must be >= 0, got {count}")
    return nn.ModuleList(expert() if expert is not None else mlp(in_features, widths) for _ in range(count))


def _mix(experts: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``Σ_e weights[:, e] · experts[e]`` for experts of shape (N, ...) and weights (N, E)."""
    stacked = torch.stack(list(experts), dim=1)  # (N, E, ...)
    w = weights.reshape(*weights.shape, *([1] * (stacked.dim() - 2)))
    return (w * stacked).sum(dim=1)


class MMoE(MultiTaskModule):
    """Multi-gate mixture of experts: ``y_t = head_t(Σ_e g_t(x)_e · expert_e(x))`` with one softmax gate
    ``g_t(x) = softmax(W_t x + b_t)`` per task over the same experts.

    Args:
        in_features: numbers per example of the flattened input (what the gates read).
        heads: one tower per task, reading the mixed expert output.
        num_experts: number of experts.
        expert: factory of one expert module (called ``num_experts`` times); default an MLP.
        expert_widths: the default MLP's widths (``in_features -> widths[0] -> ...``).

    ``forward(x)`` -> list of the towers' outputs; :meth:`gate_weights` -> the K gates' (N, E) weights.
    Shared: the experts (used by every task). Task-specific: the gates and the towers (LibMTL's ``MMoE``
    shares exactly the experts too). The gates have a bias, as LibMTL's.
    """

    def __init__(
        self,
        in_features: int,
        heads: Sequence[nn.Module],
        *,
        num_experts: int = 8,
        expert: ExpertFactory | None = None,
        expert_widths: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.in_features = int(in_features)
        self.heads = _heads(heads)
        self.experts = _experts(num_experts, in_features, expert, expert_widths)
        self.gates = nn.ModuleList(nn.Linear(in_features, num_experts) for _ in self.heads)

    def gate_weights(self, x: Tensor) -> list[Tensor]:
        """Each task's expert weights, (N, num_experts), rows summing to 1."""
        flat = x.flatten(1)
        return [F.softmax(gate(flat), dim=-1) for gate in self.gates]

    def forward(self, x: Tensor) -> list[Tensor]:
        experts = [e(x) for e in self.experts]
        return [head(_mix(experts, w)) for head, w in zip(self.heads, self.gate_weights(x))]

    def shared_modules(self) -> Iterable[nn.Module]:
        return [self.experts]

    def task_modules(self) -> Iterable[nn.Module]:
        return [self.gates, self.heads]


class CGC(MultiTaskModule):
    """Customized Gate Control (the single-level PLE, Tang et al. 2020): shared experts and, per task,
    its own experts; task ``t``'s gate mixes its own and the shared experts,
    ``y_t = head_t(Σ g_t(x) · [experts_t(x); shared(x)])``.

    Args:
        in_features: numbers per example of the flattened input (what the gates read).
        heads: one tower per task.
        num_shared: number of shared experts.
        num_specific: number of experts of each task.
        expert: factory of one expert module; default an MLP.
        expert_widths: the default MLP's widths.

    Shared: the shared experts. Task-specific: each task's experts, gate and tower.
    """

    def __init__(
        self,
        in_features: int,
        heads: Sequence[nn.Module],
        *,
        num_shared: int = 1,
        num_specific: int = 1,
        expert: ExpertFactory | None = None,
        expert_widths: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        if num_shared < 1 or num_specific < 0:
            raise ValueError(f"need num_shared >= 1 and num_specific >= 0, got {num_shared}, {num_specific}")
        self.heads = _heads(heads)
        self.shared_experts = _experts(num_shared, in_features, expert, expert_widths)
        self.task_experts = nn.ModuleList(
            _experts(num_specific, in_features, expert, expert_widths) for _ in self.heads
        )
        self.gates = nn.ModuleList(nn.Linear(in_features, num_specific + num_shared) for _ in self.heads)

    def gate_weights(self, x: Tensor) -> list[Tensor]:
        """Each task's weights (N, num_specific + num_shared): its own experts first, then the shared."""
        flat = x.flatten(1)
        return [F.softmax(gate(flat), dim=-1) for gate in self.gates]

    def forward(self, x: Tensor) -> list[Tensor]:
        shared = [e(x) for e in self.shared_experts]
        out = []
        for t, (head, w) in enumerate(zip(self.heads, self.gate_weights(x))):
            out.append(head(_mix([e(x) for e in sub(self.task_experts, t)] + shared, w)))
        return out

    def shared_modules(self) -> Iterable[nn.Module]:
        return [self.shared_experts]

    def task_modules(self) -> Iterable[nn.Module]:
        return [self.task_experts, self.gates, self.heads]


class PLE(MultiTaskModule):
    """Progressive Layered Extraction (Tang et al., RecSys 2020): L stacked extraction levels.

    At level ``j`` (inputs ``q_t^{j-1}`` per task and ``q_s^{j-1}`` for the shared path, all ``x`` at the
    first level), task ``t``'s experts read ``q_t^{j-1}``, the shared experts read ``q_s^{j-1}``;
    task ``t``'s gate (on ``q_t^{j-1}``) mixes its own and the shared experts into ``q_t^j``, and, below
    the last level, the shared gate (on ``q_s^{j-1}``) mixes *all* experts of the level into ``q_s^j``.
    ``y_t = head_t(q_t^L)``. Level ``j``'s experts are ``expert(d_{j-1}, widths[j])`` modules mapping
    (N, d_{j-1}) to (N, widths[j]) with ``d_0 = in_features``; default ``Linear -> ReLU``.

    Args:
        in_features: input features (N, in_features).
        heads: one tower per task, reading (N, widths[-1]).
        num_shared: shared experts per level.
        num_specific: experts per level of each task.
        widths: each level's expert output width (its length is the number of levels; one level is
            :class:`CGC`).
        expert: factory ``expert(in_features, out_features)`` of one expert.

    Shared parameters — those more than one task's output depends on: the shared experts and shared
    gates of every level and, below the last level, the task experts too (the shared gate mixes them
    into the shared path), as well as the task gates below level L-1. Task-specific: the towers, the last
    level's task experts and task gates, and the task gates of level L-1 (which feed only their task's
    last-level experts). LibMTL's ``PLE`` omits the shared gates (each task runs the shared experts on its
    own path), which makes every task expert task-specific; this is the paper's version.
    """

    def __init__(
        self,
        in_features: int,
        heads: Sequence[nn.Module],
        *,
        num_shared: int = 1,
        num_specific: int = 1,
        widths: Sequence[int] = (64, 64),
        expert: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if num_shared < 1 or num_specific < 0:
            raise ValueError(f"need num_shared >= 1 and num_specific >= 0, got {num_shared}, {num_specific}")
        dims = [int(in_features)] + [int(w) for w in widths]
        if len(dims) < 2:
            raise ValueError("widths must name at least one level")
        self.heads = _heads(heads)
        k, levels = len(self.heads), len(dims) - 1

        def make(d_in: int, d_out: int) -> nn.Module:
            return expert(d_in, d_out) if expert is not None else mlp(d_in, [d_out])

        self.shared_experts = nn.ModuleList(
            nn.ModuleList(make(dims[j], dims[j + 1]) for _ in range(num_shared)) for j in range(levels)
        )
        self.task_experts = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleList(make(dims[j], dims[j + 1]) for _ in range(num_specific)) for _ in range(k)
            )
            for j in range(levels)
        )
        self.task_gates = nn.ModuleList(
            nn.ModuleList(nn.Linear(dims[j], num_specific + num_shared) for _ in range(k))
            for j in range(levels)
        )
        self.shared_gates = nn.ModuleList(
            nn.Linear(dims[j], k * num_specific + num_shared) for j in range(levels - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x.flatten(1)
        levels, k = len(self.shared_experts), len(self.heads)
        q_tasks, q_shared = [x] * k, x
        for j in range(levels):
            shared = [e(q_shared) for e in sub(self.shared_experts, j)]
            own = [[e(q) for e in sub(self.task_experts, j, t)] for t, q in enumerate(q_tasks)]
            new_tasks = [
                _mix(own[t] + shared, F.softmax(sub(self.task_gates, j)[t](q_tasks[t]), dim=-1))
                for t in range(k)
            ]
            if j < levels - 1:
                everything = [e for t in range(k) for e in own[t]] + shared
                q_shared = _mix(everything, F.softmax(self.shared_gates[j](q_shared), dim=-1))
            q_tasks = new_tasks
        return [head(q) for head, q in zip(self.heads, q_tasks)]

    def _task_specific(self) -> list[nn.Module]:
        last = len(self.shared_experts) - 1
        mods: list[nn.Module] = [self.heads, self.task_experts[last], self.task_gates[last]]
        if last >= 1:
            mods.append(self.task_gates[last - 1])
        return mods

    def shared_modules(self) -> Iterable[nn.Parameter]:
        own = {id(p) for m in self._task_specific() for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in own]

    def task_modules(self) -> Iterable[nn.Module]:
        return self._task_specific()


def smooth_step(t: Tensor, gamma: float = 1.0) -> Tensor:
    """The cubic smooth-step of DSelect-k (Hazimeh et al. 2021, Eq. 3): 0 for ``t <= -γ/2``, 1 for
    ``t >= γ/2``, ``-2t³/γ³ + 3t/(2γ) + 1/2`` in between (continuously differentiable)."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(
        t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic)
    )


class DSelectK(MultiTaskModule):
    """Mixture of experts with one DSelect-k gate per task (Hazimeh et al., NeurIPS 2021).

    A gate has ``k`` single-expert selectors. Selector ``i`` holds ``m = ⌈log2 E⌉`` logits ``z_i``; with
    ``s = smooth_step(z_i)`` its weight on expert ``e`` (binary code ``b(e)`` of ``e`` in ``m`` bits, most
    significant first) is ``Π_b (s_b if b(e)_b else 1 - s_b)`` — a point of the simplex when E is a power of
    2, one-hot once every ``s_b`` is 0 or 1. The expert weights are ``Σ_i softmax(w)_i · selector_i``: at
    most ``k`` non-zeros once the selectors are binary. ``per_example=True`` computes ``z`` and ``w`` from
    the input by linear maps (example-conditioned gate), otherwise they are free parameters
    (task-only routing). Initialisation as the official code: ``z`` (weights and biases) uniform in
    ``±γ/100``, ``w`` uniform in ``±0.05``.

    Args:
        in_features: numbers per example of the flattened input (what the gates read).
        heads: one tower per task.
        num_experts: E, the number of experts (>= 2).
        k: selectors per gate (the bound on the number of selected experts).
        gamma: the smooth-step width.
        expert: factory of one expert module; default an MLP.
        expert_widths: the default MLP's widths.
        per_example: example-conditioned (default) or task-only gates.

    :meth:`regularization` returns, per task, the official training penalties of the last training-mode
    forward (for E not a power of 2, ``Σ 1/Σ_e selector_e`` keeps the selectors on reachable experts;
    plus, with ``entropy_weight > 0``, the entropy of the selectors, which speeds up their convergence to
    one-hot); add them to the task losses. Shared: the experts; task-specific: the gates and towers (as
    LibMTL's ``DSelect_k``).
    """

    codes: Tensor

    def __init__(
        self,
        in_features: int,
        heads: Sequence[nn.Module],
        *,
        num_experts: int = 8,
        k: int = 2,
        gamma: float = 1.0,
        expert: ExpertFactory | None = None,
        expert_widths: Sequence[int] = (64,),
        per_example: bool = True,
    ) -> None:
        super().__init__()
        if num_experts < 2:
            raise ValueError(f"DSelect-k needs num_experts >= 2, got {num_experts}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.num_experts, self.k, self.gamma, self.per_example = num_experts, k, float(gamma), per_example
        self.num_binary = math.ceil(math.log2(num_experts))
        self.heads = _heads(heads)
        self.experts = _experts(num_experts, in_features, expert, expert_widths)
        codes = [
            [(e >> (self.num_binary - 1 - b)) & 1 for b in range(self.num_binary)] for e in range(num_experts)
        ]
        self.register_buffer("codes", torch.tensor(codes, dtype=torch.float32), persistent=False)  # (E, m)
        bound = self.gamma / 100
        self.z_logits: nn.ModuleList | nn.ParameterList
        self.w_logits: nn.ModuleList | nn.ParameterList
        if per_example:
            self.z_logits = nn.ModuleList(nn.Linear(in_features, k * self.num_binary) for _ in self.heads)
            self.w_logits = nn.ModuleList(nn.Linear(in_features, k) for _ in self.heads)
        else:
            self.z_logits = nn.ParameterList(
                nn.Parameter(torch.empty(k, self.num_binary)) for _ in self.heads
            )
            self.w_logits = nn.ParameterList(nn.Parameter(torch.empty(k)) for _ in self.heads)
        for p in self.z_logits.parameters():
            nn.init.uniform_(p, -bound, bound)
        for p in self.w_logits.parameters():
            nn.init.uniform_(p, -0.05, 0.05)
        self._selectors: list[Tensor] = []

    def selectors(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per task ``(selector_outputs (N, k, E), selector_weights (N, k))``."""
        flat = x.flatten(1)
        n = flat.shape[0]
        out = []
        for z_map, w_map in zip(self.z_logits, self.w_logits):
            if self.per_example:
                z = z_map(flat).reshape(n, self.k, 1, self.num_binary)
                w = F.softmax(w_map(flat), dim=-1)
            else:
                z = z_map.reshape(1, self.k, 1, self.num_binary).expand(n, -1, -1, -1)
                w = F.softmax(w_map, dim=-1).expand(n, -1)
            s = smooth_step(z, self.gamma)  # (N, k, 1, m)
            sel = (self.codes * s + (1 - self.codes) * (1 - s)).prod(dim=-1)  # (N, k, E)
            out.append((sel, w))
        return out

    def gate_weights(self, x: Tensor) -> list[Tensor]:
        """Each task's expert weights (N, E): ``Σ_i w_i · selector_i``."""
        return [torch.einsum("nk,nke->ne", w, sel) for sel, w in self.selectors(x)]

    def forward(self, x: Tensor) -> list[Tensor]:
        experts = [e(x) for e in self.experts]
        out = []
        selectors = self.selectors(x)
        for head, (sel, w) in zip(self.heads, selectors):
            out.append(head(_mix(experts, torch.einsum("nk,nke->ne", w, sel))))
        self._selectors = [sel for sel, _ in selectors] if self.training else []
        return out

    def regularization(self, entropy_weight: float = 0.0) -> list[Tensor]:
        """Per task, the gate penalty of the last training-mode forward (zeros before any)."""
        if not self._selectors:
            zero = next(self.parameters()).new_zeros(())
            return [zero for _ in self.heads]
        out = []
        power_of_2 = self.num_experts == 2**self.num_binary
        for sel in self._selectors:
            reg = sel.new_zeros(())
            if entropy_weight:
                reg = reg - entropy_weight * (sel * torch.log(sel + 1e-6)).sum()
            if not power_of_2:
                reg = reg + (1 / sel.sum(dim=-1)).sum()
            out.append(reg)
        return out

    def shared_modules(self) -> Iterable[nn.Module]:
        return [self.experts]

    def task_modules(self) -> Iterable[nn.Module]:
        return [self.z_logits, self.w_logits, self.heads]
