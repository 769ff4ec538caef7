r"""Merging methods on task vectors: task arithmetic, TIES-Merging and FW-Merging (hard Frank-Wolfe).

All three take the base state dict :math:`\theta_0` and the task vectors :math:`\tau_i = \theta_i - \theta_0`
(:func:`~molearn.merging.task_vectors`) and return a state dict; integer buffers are copied from the base.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._vectors import StateDict, as_coefficients, check_vectors, combine, task_vectors

__all__ = ["MergeResult", "frank_wolfe_merge", "task_arithmetic", "ties"]


# ----------------------------------------------------------------------------------------- task arithmetic
def task_arithmetic(
    base: Mapping[str, Tensor], vectors: Sequence[Mapping[str, Tensor]], scale: float | Sequence[float] = 0.3
) -> StateDict:
    r"""Task arithmetic (Ilharco, Ribeiro, Wortsman, Gururangan, Schmidt, Hajishirzi, Farhadi, "Editing Models
    with Task Arithmetic", ICLR 2023, `arXiv:2212.04089 <https://arxiv.org/abs/2212.04089>`_).

    .. math:: \theta = \theta_0 + \lambda \sum_{i=1}^K \tau_i

    or, with one scale per task, :math:`\theta_0 + \sum_i \lambda_i \tau_i`.

    Args:
        base: the base state dict :math:`\theta_0`.
        vectors: the K task vectors :math:`\tau_i`.
        scale: :math:`\lambda` (one number) or K numbers. The paper picks :math:`\lambda` on held-out
            validation data (the TIES repository's task-arithmetic baseline scans 0.1 to 1.0 in steps of
            0.1). The default 0.3 is a common choice without validation data: FusionBench
            (tanganke/fusion_bench) starts its FW-Merging from task arithmetic with ``scaling_factor: 0.3``
            (``fw_hard.yaml``); its ``task_arithmetic.yaml`` has used 0.3 or 0.5 depending on the version.
    """
    vecs, floating = check_vectors(base, vectors)
    c = as_coefficients(scale, len(vecs), "scale")
    return combine(base, vecs, c.tolist(), floating)


# --------------------------------------------------------------------------------------------------- TIES
def _n_keep(density: float, d: int) -> int:
    # round first: 0.6 * 5 is 3.0000000000000004 in some orders of evaluation
    return min(d, math.ceil(round(density * d, 9)))


def _trim(flat: Tensor, density: float) -> Tensor:
    """Zero all but the ``ceil(density * d)`` largest magnitudes of each row of ``flat`` (ties at the
    threshold are kept, as the official ``topk_values_mask``)."""
    d = flat.shape[-1]
    keep = _n_keep(density, d)
    if keep >= d:
        return flat
    if keep == 0:
        return torch.zeros_like(flat)
    mag = flat.abs()
    threshold = mag.kthvalue(d - keep + 1, dim=-1, keepdim=True).values  # the keep-th largest magnitude
    return flat * (mag >= threshold)


def _elect_and_mean(trimmed: Tensor) -> Tensor:
    """Steps 2 and 3 of TIES on a (K, d) block: elected sign per column, mean of the agreeing entries."""
    sign = torch.sign(trimmed.sum(dim=0))
    # official resolve_zero_signs(…, "majority"): a column whose sum is exactly 0 takes the sign that won
    # the most columns of the block (positive on a tie, as sign(0) = 0 leaves it 0 and it keeps nothing)
    majority = torch.sign(sign.sum())
    sign = torch.where(sign == 0, majority, sign)
    agree = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    kept = trimmed * agree
    count = agree.sum(dim=0).clamp(min=1)
    return kept.sum(dim=0) / count


def ties(
    base: Mapping[str, Tensor],
    vectors: Sequence[Mapping[str, Tensor]],
    density: float = 0.2,
    scale: float = 1.0,
    *,
    scope: Literal["global", "tensor"] = "global",
) -> StateDict:
    r"""TIES-Merging (Yadav, Tam, Choshen, Raffel, Bansal, "TIES-Merging: Resolving Interference When Merging
    Models", NeurIPS 2023, `arXiv:2306.01708 <https://arxiv.org/abs/2306.01708>`_; official code
    prateeky2806/ties-merging).

    1. **Trim**: keep in each :math:`\tau_i` its :math:`\lceil k\,d \rceil` entries of largest magnitude
       (``density`` :math:`= k`), zero the rest: :math:`\hat\tau_i`.
    2. **Elect** the sign of every entry: :math:`\gamma^p = \operatorname{sgn}\big(\sum_i \hat\tau_i^p\big)`.
       An entry whose sum is exactly 0 takes the sign that won the most entries (the official
       ``resolve_zero_signs(..., "majority")``).
    3. **Disjoint mean** over the agreeing tasks :math:`A^p = \{i : \operatorname{sgn}(\hat\tau_i^p) =
       \gamma^p\}`: :math:`\tau_m^p = \frac{1}{|A^p|}\sum_{i \in A^p} \hat\tau_i^p` (0 where :math:`A^p` is
       empty).
    4. :math:`\theta = \theta_0 + \lambda\,\tau_m`.

    The official code flattens each task vector over **all** its parameters (``state_dict_to_vector``) and
    trims it as one vector (``topk_values_mask`` on the (K, P) matrix, row by row), and elects the zero-sum
    signs over that whole vector: that is ``scope="global"`` (the default; entries of different dtypes or
    devices form separate vectors). ``scope="tensor"`` trims and
    elects each parameter tensor on its own, as several other libraries do. The official ``topk_values_mask``
    keeps the magnitudes at or above the :math:`(d - \lfloor k d \rfloor)`-th smallest, i.e.
    :math:`\lfloor k d \rfloor + 1` entries; here exactly the paper's top-:math:`k` fraction,
    :math:`\lceil k d \rceil` (plus ties at the threshold, as there).

    Defaults: :math:`k = 0.2` (``topk20`` in the official README and notebook) and :math:`\lambda = 1` (the
    official notebook ``ties_minimal.ipynb``, the setting without a validation set; with validation data the
    README scans :math:`\lambda` from 0.8 to 2.5).

    Args:
        base: the base state dict :math:`\theta_0`.
        vectors: the K task vectors.
        density: :math:`k \in [0, 1]`, the fraction of entries kept per task vector.
        scale: :math:`\lambda`.
        scope: ``"global"`` (one top-k over all merged entries of a task vector) or ``"tensor"``.
    """
    vecs, floating = check_vectors(base, vectors)
    if not (isinstance(density, (int, float)) and 0.0 <= density <= 1.0):
        raise ValueError(f"density must be a number in [0, 1], got {density!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    if scope not in ("global", "tensor"):
        raise ValueError(f"scope must be 'global' or 'tensor', got {scope!r}")
    merged: dict[str, Tensor] = {}
    if scope == "global":
        groups: dict[tuple[torch.dtype, torch.device], list[str]] = {}
        for key in floating:  # one (K, P) block per (dtype, device): the official flat vector
            groups.setdefault((base[key].dtype, base[key].device), []).append(key)
        for keys in groups.values():
            flat = torch.stack([torch.cat([v[k].detach().reshape(-1) for k in keys]) for v in vecs])
            dtype = _work_dtype(flat.dtype)
            tau = _elect_and_mean(_trim(flat.to(dtype), density))
            sizes = [base[k].numel() for k in keys]
            for key, part in zip(keys, tau.split(sizes)):
                merged[key] = part.reshape(base[key].shape)
    else:
        for key in floating:
            flat = torch.stack([v[key].detach().reshape(-1) for v in vecs])
            merged[key] = _elect_and_mean(_trim(flat.to(_work_dtype(flat.dtype)), density)).reshape(
                base[key].shape
            )
    out: StateDict = {}
    for key, value in base.items():
        value = value.detach()
        if key in merged:
            acc = value.to(merged[key].dtype) + scale * merged[key]
            out[key] = acc.to(value.dtype)
        else:
            out[key] = value.clone()
    return out


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype.is_complex:
        raise TypeError("TIES needs real task vectors (it compares magnitudes and signs), got complex ones")
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------------------------- FW-Merging
@dataclass
class MergeResult:
    r"""Outcome of :func:`frank_wolfe_merge`.

    Attributes:
        state_dict: the merged state dict :math:`\theta_0 + \sum_i c_i \tau_i` (every key of the base).
        coefficients: :math:`c`, shape (K,), float64: the merged model is exactly this point of the span.
        objective: the summed loss :math:`\sum_j L_j` at every iterate, shape (steps + 1,): entry t is the
            objective at :math:`\theta_t` (entry 0 at the start point, the last at the returned model).
        losses: the per-task losses at every iterate, shape (steps + 1, T).
        selected: the pool vertex chosen at each step: ``i`` for the fine-tuned model :math:`\theta_i`,
            ``-1`` for the start point.
        n_loss_evals: calls of ``losses`` (forward passes): ``steps + 1``.
        n_grad_evals: backward passes: ``steps``.
    """

    state_dict: StateDict
    coefficients: Tensor
    objective: Tensor
    losses: Tensor
    selected: list[int] = field(default_factory=list)
    n_loss_evals: int = 0
    n_grad_evals: int = 0


def _as_loss_vector(value: Any, t: int | None) -> Tensor:
    if isinstance(value, Tensor):
        vals = [value] if value.dim() == 0 else list(value.reshape(-1)) if value.numel() > 0 else []
    elif isinstance(value, Sequence):
        vals = list(value)
    else:
        raise TypeError(f"losses(model) must return a tensor or a sequence of scalar tensors, got "
                        f"{type(value).__name__}")
    if not vals:
        raise ValueError("losses(model) returned no loss")
    for j, v in enumerate(vals):
        if not isinstance(v, Tensor) or v.numel() != 1:
            raise TypeError(f"losses(model)[{j}] must be a scalar tensor, got {type(v).__name__}"
                            + (f" of shape {tuple(v.shape)}" if isinstance(v, Tensor) else ""))
    out = torch.stack([v.reshape(()) for v in vals])
    if t is not None and out.numel() != t:
        raise ValueError(f"losses(model) returned {out.numel()} losses, earlier {t}")
    return out


def frank_wolfe_merge(
    model: nn.Module,
    base: Mapping[str, Tensor],
    pool: Sequence[Mapping[str, Tensor]],
    losses: Callable[[nn.Module], Sequence[Tensor] | Tensor],
    steps: int = 10,
    *,
    as_vectors: bool = False,
    init: float | Sequence[float] | Tensor = 0.0,
    step_size: float = 1.0,
    alignment: Literal["inner", "cosine"] = "inner",
    include_init: bool = True,
) -> MergeResult:
    r"""FW-Merging, hard variant (Chen, Hu, Luk, Hospedales, Fan, "FW-Merging: Scaling Model Merging with
    Frank-Wolfe Optimization", ICCV 2025, `arXiv:2503.12649 <https://arxiv.org/abs/2503.12649>`_; official
    code hmarkc/FW-Merging and ``FrankWolfeHardAlgorithm`` in tanganke/fusion_bench).

    Model merging as constrained minimisation of :math:`f(\theta) = \sum_j L_j(\theta)` (the task losses of
    the merged model, computed by ``losses(model)``) over the convex hull of the pool of models. The pool is
    the K fine-tuned models :math:`\theta_i = \theta_0 + \tau_i` and, as in the official code, the start point
    :math:`\theta_{\text{init}}` itself (``include_init``). Each iteration :math:`t = 0, 1, \dots`:

    1. one forward and one backward pass give :math:`g_t = \nabla f(\theta_t)`;
    2. the linear-minimisation oracle picks the pool model :math:`s_t` most aligned with :math:`-g_t`:
       ``alignment="inner"`` is the exact Frank-Wolfe oracle over the hull,
       :math:`s_t = \arg\min_s \langle g_t, s \rangle` (for a fine-tuned model
       :math:`\langle g_t, \theta_i\rangle = \langle g_t, \theta_0\rangle + \langle g_t, \tau_i\rangle`:
       the task vector most aligned with :math:`-g_t` wins); ``"cosine"`` is the official code's task-wise
       rule, :math:`\arg\min_s \sum_p \cos(g_{t,p}, s_p)`, a sum over the parameter tensors :math:`p` of the
       cosine between the gradient and the model's weights;
    3. the Frank-Wolfe step :math:`\theta_{t+1} = \theta_t + \gamma_t (s_t - \theta_t)` with
       :math:`\gamma_t = \eta\,\frac{2}{t + 2}` (``step_size`` :math:`\eta`; the official code's
       ``step_size``, 1 in hmarkc/FW-Merging, and its ``scaling_factor`` multiply to this :math:`\eta`).

    Every iterate stays in the span: with :math:`\theta_t = \theta_0 + \sum_i c_{t,i}\tau_i`, the step is
    :math:`c_{t+1} = (1-\gamma_t) c_t + \gamma_t v_t` with :math:`v_t = e_i` (or :math:`c_{\text{init}}`), so
    the coefficients are tracked exactly and :math:`\theta_{t+1}` is rebuilt from them (no drift).

    The paper's **soft** variant (``FrankWolfeSoftAlgorithm``) instead merges the selected models with
    coefficients learned AdaMerging-style (entropy minimisation on unlabelled data) at each step, and its
    **layer-wise** oracle picks a model per parameter tensor; neither is implemented here (the soft step
    needs an inner optimisation at every step, the layer-wise oracle one coefficient per task and tensor).

    Args:
        model: the network the losses are computed on. Its parameters and buffers named in ``base`` are
            overwritten (``load_state_dict(..., strict=False)``) with each iterate; at return it holds the
            merged model. Keys of ``base`` must be keys of ``model.state_dict()``; model entries that ``base``
            lacks (e.g. frozen base weights when merging LoRA adapter state dicts) are left as they are.
        base: :math:`\theta_0`.
        pool: the K fine-tuned state dicts, or their task vectors with ``as_vectors=True``.
        losses: ``losses(model)`` returns the T task losses (a sequence of scalar tensors or a 1-D tensor);
            the objective is their sum. T need not be K (a pool may hold irrelevant models).
        steps: Frank-Wolfe iterations (10 in the official configurations).
        init: :math:`c_{\text{init}}` (one number for all tasks, or K). Default 0: start at the base model
            (fusion_bench ``init_weight: base``); ``init=0.3`` starts at task arithmetic with
            :math:`\lambda = 0.3` (fusion_bench's default start).
        step_size: :math:`\eta \in (0, 1]`.
        alignment: ``"inner"`` (Frank-Wolfe's oracle) or ``"cosine"`` (the official code's).
        include_init: whether the start point is a pool vertex (official code: yes).

    Returns:
        A :class:`MergeResult`; ``n_loss_evals = steps + 1`` (one forward per step and one at the end) and
        ``n_grad_evals = steps``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(losses):
        raise TypeError(f"losses must be callable as losses(model), got {type(losses).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not (isinstance(step_size, (int, float)) and 0.0 < step_size <= 1.0):
        raise ValueError(f"step_size must be in (0, 1], got {step_size!r}")
    if alignment not in ("inner", "cosine"):
        raise ValueError(f"alignment must be 'inner' or 'cosine', got {alignment!r}")
    vectors = list(pool) if as_vectors else task_vectors(base, pool)
    vecs, floating = check_vectors(base, vectors)
    k = len(vecs)
    c = as_coefficients(init, k, "init")
    c_init = c.clone()

    state_keys = set(model.state_dict().keys())
    for key in base:
        if key not in state_keys:
            raise ValueError(f"base has the key {key!r}, which model.state_dict() lacks")
    params = dict(model.named_parameters(remove_duplicate=False))
    grad_keys = [key for key in floating if key in params]

    # the pool's vertices in coefficient space: e_1..e_K and (optionally) the start point
    vertices = [torch.eye(k, dtype=torch.float64)[i] for i in range(k)]
    labels = list(range(k))
    if include_init:
        vertices.append(c_init)
        labels.append(-1)

    def load(coeffs: Tensor) -> StateDict:
        sd = combine(base, vecs, coeffs.tolist(), floating)
        model.load_state_dict(sd, strict=False)
        return sd

    def scores(grads: dict[str, Tensor]) -> Tensor:
        """The oracle's score of every pool vertex (the lowest is picked), summed on the gradients' device
        (the caller's argmin is the only host read)."""
        dev = grads[grad_keys[0]].device if grad_keys else torch.device("cpu")
        if alignment == "inner":
            # <g, theta_i> - <g, theta_0> = <g, tau_i>; the start point: sum_i c_init_i <g, tau_i>
            gt = torch.zeros(k, dtype=torch.float64, device=dev)
            for key in grad_keys:
                g = grads[key].double()
                for i, v in enumerate(vecs):
                    gt[i] += (g * v[key].detach().to(dev, torch.float64)).sum()
            return torch.stack(vertices).to(dev) @ gt
        out = torch.zeros(len(vertices), dtype=torch.float64, device=dev)
        tiny = torch.finfo(torch.float64).tiny  # a zero norm has a zero inner product: the cosine counts 0
        for key in grad_keys:
            g = grads[key].double()
            g_norm = g.norm()
            for j, vert in enumerate(vertices):  # cos(g_p, s_p) with s the vertex's weights
                w = base[key].detach().to(dev, torch.float64, copy=True)
                for i, cj in enumerate(vert.tolist()):
                    if cj != 0.0:
                        w.add_(vecs[i][key].detach().to(dev, torch.float64), alpha=cj)
                out[j] += (g * w).sum() / (g_norm * w.norm()).clamp_min(tiny)
        return out

    flags = {key: params[key].requires_grad for key in grad_keys}
    objective: list[Tensor] = []
    per_task: list[Tensor] = []
    selected: list[int] = []
    t_count: int | None = None
    try:
        for key in grad_keys:
            params[key].requires_grad_(True)
        for t in range(steps):
            load(c)
            with torch.enable_grad():
                lv = _as_loss_vector(losses(model), t_count)
                t_count = lv.numel()
                total = lv.sum()
                if not bool(torch.isfinite(total.detach())):
                    raise ValueError(f"the summed loss is not finite at step {t}: {lv.detach().tolist()}")
                gs: Sequence[Tensor | None] = [None] * len(grad_keys)
                if grad_keys and total.requires_grad:
                    gs = torch.autograd.grad(total, [params[key] for key in grad_keys], allow_unused=True)
            grads = {key: (g if g is not None else torch.zeros_like(params[key])).detach()
                     for key, g in zip(grad_keys, gs)}
            objective.append(total.detach().double().cpu())
            per_task.append(lv.detach().double().cpu())
            j = int(torch.argmin(scores(grads)))
            gamma = step_size * 2.0 / (t + 2.0)
            c = (1.0 - gamma) * c + gamma * vertices[j]
            selected.append(labels[j])
        sd = load(c)
        with torch.no_grad():
            lv = _as_loss_vector(losses(model), t_count)
        objective.append(lv.sum().double().cpu())
        per_task.append(lv.double().cpu())
    finally:
        for key, flag in flags.items():
            params[key].requires_grad_(flag)
    return MergeResult(
        state_dict=sd,
        coefficients=c,
        objective=torch.stack(objective),
        losses=torch.stack(per_task),
        selected=selected,
        n_loss_evals=steps + 1,
        n_grad_evals=steps,
    )
