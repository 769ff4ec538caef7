"""Per-layer quantities for the Gramian ``G = J Jᵀ``: forward hooks, the activation form, its cost.

For a layer ``y = x Wᵀ + b`` seen on N rows, objective ``i``'s weight gradient is ``δ_iᵀ A`` (``δ_i``: the
N×out gradient of objective ``i`` w.r.t. the output ``y``; ``A``: the N×in input, plus a column of ones for
the bias), so its contribution to the Gramian is ``G[i, j] = ⟨δ_i, (A Aᵀ) δ_j⟩`` (the *activation form*):
it needs the K output-gradients and the N×N matrix ``A Aᵀ``, never the K weight gradients. When the
gradients themselves are cheaper (``K·N·in·out`` against ``N²·(in + K·out)``: wide batches, convolutions
with large feature maps), the layer's parameters are differentiated directly (the *gradient form*) like
every module this file does not know (BatchNorm, LayerNorm, RNNs, custom modules, raw parameters).

A :class:`LayerRecorder` hooks the modules that may use the activation form (``nn.Linear``,
``nn.Conv1d``, ``nn.Conv2d``, ``nn.Embedding`` whose trainable parameters are all shared): at each call
made with grad enabled it keeps the input and ``get_gradient_edge(output)`` (which survives in-place
operations on the output, e.g. a following ``ReLU(inplace=True)``, and does not keep the output alive).
Public torch API only.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.nn import grad as nn_grad

__all__ = ["Call", "Layer", "LayerRecorder", "describe_modules", "external_uses"]

# Above this many rows the N×N matrix A Aᵀ is not formed (256 MiB in float32): gradient form.
MAX_ROWS = 8192
# The activation form runs as a few separate operations where the gradient form is one GEMM inside the
# backward pass: it is chosen only when it saves at least a quarter of the multiply-adds.
MARGIN = 0.75


def _not_compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return not (is_compiling is not None and is_compiling())


@dataclass
class Call:
    """One call of a hooked module: its input (detached alias) and the gradient edge of its output."""

    inp: Tensor
    edge: GradientEdge
    shape: torch.Size
    dtype: torch.dtype


class Layer:
    """A module that may use the activation form, and the shared parameters it owns."""

    def __init__(self, module: nn.Module, weight: Tensor | None, bias: Tensor | None) -> None:
        self.module = module
        self.kind = type(module).__name__
        self.weight = weight
        self.bias = bias
        self.params = [p for p in (weight, bias) if p is not None]
        self.numel = sum(p.numel() for p in self.params)

    # ------------------------------------------------------------------ sizes and costs
    def rows(self, calls: Sequence[Call]) -> int:
        """N: the rows summed over the calls (tokens × batch for Linear, batch × positions for Conv)."""
        m = self.module
        if isinstance(m, nn.Linear):
            return sum(c.inp.numel() // m.in_features for c in calls)
        if isinstance(m, nn.Embedding):
            return sum(c.inp.numel() for c in calls)
        # convolution: the output's batch × positions
        out_channels = int(m.out_channels)  # type: ignore[arg-type]
        return sum(c.shape.numel() // out_channels for c in calls)

    def output_numel(self, calls: Sequence[Call]) -> int:
        return sum(c.shape.numel() for c in calls)

    def fits(self, calls: Sequence[Call]) -> bool:
        """Whether the N×N matrix of the activation form is small enough to form."""
        return 0 < self.rows(calls) <= MAX_ROWS

    def activation_cheaper(self, calls: Sequence[Call], k: int) -> bool:
        """Whether the activation form costs fewer multiply-adds than the gradient form for K objectives."""
        n = self.rows(calls)
        if not 0 < n <= MAX_ROWS:
            return False
        m = self.module
        p = self.numel
        if isinstance(m, nn.Linear):
            d_in, d_out = m.in_features, m.out_features
            act = n * n * (d_in + k * d_out) + k * k * n * d_out + n * d_in * d_out
            grad = k * n * d_in * d_out + k * k * p
        elif isinstance(m, nn.Embedding):
            d = m.embedding_dim
            act = n * n * (1 + k * d) + k * k * n * d + n * d
            grad = k * n * d + k * k * p + k * p
        else:
            assert isinstance(m, (nn.Conv1d, nn.Conv2d))
            groups = m.groups
            ksize = 1
            for s in m.kernel_size:
                ksize *= s
            cin_g = m.in_channels // groups * ksize
            cout_g = m.out_channels // groups
            act = groups * n * n * (cin_g + k * cout_g) + k * k * n * m.out_channels
            act += n * cin_g * m.out_channels + n * m.in_channels * ksize  # the write, the unfolding
            grad = k * n * cin_g * m.out_channels + k * k * p
        return act < MARGIN * grad

    # ------------------------------------------------------------------ activation form
    def _rows_and_deltas(
        self, calls: Sequence[Call], deltas: Sequence[Tensor], dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """The N×in input rows (unfolded for a convolution; indices for an embedding) and the K×N×out
        output-gradients, concatenated over the calls (a module called twice adds its rows)."""
        m = self.module
        k = deltas[0].shape[0]
        rows: list[Tensor] = []
        ds: list[Tensor] = []
        for call, d in zip(calls, deltas, strict=True):
            if isinstance(m, nn.Linear):
                rows.append(call.inp.reshape(-1, m.in_features).to(dtype))
                ds.append(d.reshape(k, -1, m.out_features).to(dtype))
            elif isinstance(m, nn.Embedding):
                rows.append(call.inp.reshape(-1))
                ds.append(d.reshape(k, -1, m.embedding_dim).to(dtype))
            else:
                x, dd = _as_2d_conv(m, call.inp, d)
                u = F.unfold(x.to(dtype), **_unfold_args(m))  # (B, C·kh·kw, L)
                rows.append(u.transpose(1, 2).reshape(-1, u.shape[1]))
                c_out = dd.shape[2]
                ds.append(
                    dd.reshape(k, dd.shape[1], c_out, -1).transpose(2, 3).reshape(k, -1, c_out).to(dtype)
                )
        a = rows[0] if len(rows) == 1 else torch.cat(rows)
        delta = ds[0] if len(ds) == 1 else torch.cat(ds, dim=1)
        return a, delta

    def gramian(self, calls: Sequence[Call], deltas: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
        """This layer's K×K contribution ``⟨δ_i, (A Aᵀ + 1 1ᵀ) δ_j⟩`` (summed over groups), in ``dtype``."""
        m = self.module
        a, delta = self._rows_and_deltas(calls, deltas, dtype)
        k = delta.shape[0]
        if isinstance(m, nn.Embedding):
            if m.padding_idx is not None:
                delta = delta * (a != m.padding_idx).to(dtype)[None, :, None]
            gram = (a[:, None] == a[None, :]).to(dtype)
            return _quadratic(delta, gram)
        groups = m.groups if isinstance(m, (nn.Conv1d, nn.Conv2d)) else 1
        total = torch.zeros(k, k, dtype=dtype, device=delta.device)
        cin_g = a.shape[1] // groups
        cout_g = delta.shape[2] // groups
        for g in range(groups):
            dg = delta[:, :, g * cout_g : (g + 1) * cout_g] if groups > 1 else delta
            if self.weight is not None:
                ag = a[:, g * cin_g : (g + 1) * cin_g] if groups > 1 else a
                gram = ag @ ag.T
                if self.bias is not None:
                    gram += 1.0
                total += _quadratic(dg, gram)
            else:  # bias only: the bias gradient is the column sum of δ
                s = dg.sum(1)
                total += s @ s.T
        return total

    def write(
        self,
        calls: Sequence[Call],
        deltas: Sequence[Tensor],
        weights: Tensor,
        add: Callable[[Tensor, Tensor], None] | None = None,
    ) -> None:
        """Add ``Σ_i w_i ∇_θ L_i`` to this layer's ``.grad``, from the K output-gradients and the inputs
        (through ``add(param, grad)`` when given: the Balancer stages the write until its finite check)."""
        add_to = add or _add_grad_now
        m = self.module
        for call, d in zip(calls, deltas, strict=True):
            ref = self.params[0]
            dw = (weights.to(ref.dtype) @ d.reshape(d.shape[0], -1).to(ref.dtype)).reshape(d.shape[1:])
            if isinstance(m, nn.Linear):
                d2 = dw.reshape(-1, m.out_features)
                if self.weight is not None:
                    add_to(self.weight, d2.T @ call.inp.reshape(-1, m.in_features).to(ref.dtype))
                if self.bias is not None:
                    add_to(self.bias, d2.sum(0))
            elif isinstance(m, nn.Embedding):
                assert self.weight is not None
                idx = call.inp.reshape(-1)
                d2 = dw.reshape(-1, m.embedding_dim)
                if m.padding_idx is not None:
                    d2 = d2 * (idx != m.padding_idx).to(d2.dtype)[:, None]
                add_to(self.weight, torch.zeros_like(self.weight).index_add_(0, idx, d2))
            else:
                assert isinstance(m, (nn.Conv1d, nn.Conv2d))
                x, dd = _as_2d_conv(m, call.inp, dw[None])
                if self.weight is not None:
                    args = _unfold_args(m)
                    gw = nn_grad.conv2d_weight(
                        x.to(ref.dtype),
                        (m.out_channels, m.in_channels // m.groups, *args["kernel_size"]),
                        dd[0],
                        stride=args["stride"],
                        padding=args["padding"],
                        dilation=args["dilation"],
                        groups=m.groups,
                    )
                    add_to(self.weight, gw.reshape(self.weight.shape))
                if self.bias is not None:
                    add_to(self.bias, dd[0].sum((0, 2, 3)))


def _quadratic(delta: Tensor, gram: Tensor) -> Tensor:
    """``[⟨δ_i, M δ_j⟩]_{ij}`` for δ of shape (K, N, out) and a symmetric N×N matrix M."""
    k = delta.shape[0]
    md = torch.matmul(gram, delta)  # (K, N, out)
    return delta.reshape(k, -1) @ md.reshape(k, -1).T


def _add_grad_now(p: Tensor, g: Tensor) -> None:
    """Accumulate a freshly computed gradient into ``p.grad`` (as ``Tensor.backward`` does)."""
    if p.grad is None:
        p.grad = g.to(p.dtype)
    else:
        p.grad.add_(g.to(p.dtype))


def _as_2d_conv(m: nn.Module, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """A Conv1d call as a Conv2d call of height 1 (input and K output-gradients), batch dimension added."""
    spatial = 1 if isinstance(m, nn.Conv1d) else 2
    if x.dim() == spatial + 1:  # unbatched input
        x = x.unsqueeze(0)
        d = d.unsqueeze(1)
    if spatial == 1:
        x = x.unsqueeze(2)
        d = d.unsqueeze(3)
    return x, d


def _unfold_args(m: nn.Module) -> dict[str, Any]:
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    pad = (0,) * len(m.kernel_size) if isinstance(m.padding, str) else tuple(m.padding)
    if isinstance(m, nn.Conv1d):
        return {
            "kernel_size": (1, m.kernel_size[0]),
            "dilation": (1, m.dilation[0]),
            "padding": (0, pad[0]),
            "stride": (1, m.stride[0]),
        }
    return {"kernel_size": m.kernel_size, "dilation": m.dilation, "padding": pad, "stride": m.stride}


def _eligible(module: nn.Module, shared_ids: set[int], owners: dict[int, int]) -> Layer | None:
    """The module as a :class:`Layer` if the activation form applies to it exactly, else ``None``."""
    if type(module) not in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding):
        return None  # exact types: subclasses may change forward
    own = dict(module.named_parameters(recurse=False))
    if not own or set(own) - {"weight", "bias"}:
        return None
    trainable = [p for p in own.values() if p.requires_grad]
    if not trainable or any(id(p) not in shared_ids or owners.get(id(p), 0) > 1 for p in trainable):
        return None
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and (
        module.padding_mode != "zeros" or module.padding == "same"
    ):
        return None
    if isinstance(module, nn.Embedding) and (
        module.max_norm is not None or module.scale_grad_by_freq or module.sparse
    ):
        return None
    weight = own.get("weight")
    bias = own.get("bias")
    return Layer(
        module,
        weight if weight is not None and weight.requires_grad else None,
        bias if bias is not None and bias.requires_grad else None,
    )


class LayerRecorder:
    """Forward hooks on the modules that may use the activation form; the calls of the current step.

    Only calls made with grad enabled whose output requires grad are kept, and none while
    ``torch.compile`` traces (a compiled module's layers then use the gradient form). :meth:`take`
    hands the calls to the step and forgets them; :meth:`clear` drops them (after each step, so a
    forward that no step consumed holds its graph at most until the next step); :meth:`close`
    removes the hooks. The hooks hold the recorder weakly and ignore deep copies of the model.
    """

    def __init__(self, roots: Iterable[nn.Module], shared: Sequence[Tensor]) -> None:
        roots_list = list(roots)
        shared_ids = {id(p) for p in shared}
        modules: list[nn.Module] = []
        seen: set[int] = set()
        for root in roots_list:
            for m in root.modules():
                if id(m) not in seen:
                    seen.add(id(m))
                    modules.append(m)
        owners: dict[int, int] = {}
        for m in modules:
            for p in m.parameters(recurse=False):
                owners[id(p)] = owners.get(id(p), 0) + 1
        self.modules = modules
        self.layers: list[Layer] = []
        self.calls: list[list[Call]] = []
        self._handles: list[Any] = []
        self.dense, self.compiled = describe_modules(roots_list, shared)
        ref = weakref.ref(self)
        for m in modules:
            layer = _eligible(m, shared_ids, owners)
            if layer is None:
                continue
            self.layers.append(layer)
            self.calls.append([])
            self._handles.append(
                m.register_forward_hook(_make_hook(ref, len(self.layers) - 1), with_kwargs=True)
            )
        self.validated: dict[tuple[int, ...], frozenset[int]] = {}

    def take(self) -> list[list[Call]]:
        calls = self.calls
        self.calls = [[] for _ in self.layers]
        return calls

    def clear(self) -> None:
        for c in self.calls:
            c.clear()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    @property
    def closed(self) -> bool:
        return not self._handles and bool(self.layers)


_DENSE = (
    nn.Linear,
    nn.Bilinear,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
)


def describe_modules(roots: Iterable[nn.Module], shared: Sequence[Tensor]) -> tuple[bool, bool]:
    """``(dense, compiled)``: whether every module owning a shared parameter is a dense layer (Linear,
    Embedding, a norm layer; ``False`` if some shared parameter has no known owner) and whether a
    module is compiled."""
    shared_ids = {id(p) for p in shared}
    owned: set[int] = set()
    dense = True
    compiled = False
    for root in roots:
        for m in root.modules():
            compiled = compiled or _is_compiled(m)
            mine = [p for p in m.parameters(recurse=False) if id(p) in shared_ids]
            if mine:
                owned.update(id(p) for p in mine)
                dense = dense and isinstance(m, _DENSE)
    return dense and owned == shared_ids, compiled


def _is_compiled(m: nn.Module) -> bool:
    """``torch.compile(module)`` wraps it (``_orig_mod``); ``module.compile()`` sets a compiled call."""
    return hasattr(m, "_orig_mod") or getattr(m, "_compiled_call_impl", None) is not None


def _make_hook(ref: weakref.ref[LayerRecorder], index: int) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not _not_compiling():
            return None
        rec = ref()
        if rec is None or not torch.is_grad_enabled() or not isinstance(output, Tensor):
            return None
        if not output.requires_grad or module is not rec.layers[index].module:
            return None
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, Tensor):
            return None
        rec.calls[index].append(Call(x.detach(), get_gradient_edge(output), output.shape, output.dtype))
        return None

    return hook


def external_uses(roots: Sequence[Any], layers: Sequence[Layer], calls: Sequence[Sequence[Call]]) -> set[int]:
    """Indices of the layers whose parameters the graph of ``roots`` uses outside the recorded calls.

    The activation form sees a parameter only through its module's calls; a use anywhere else (a
    regulariser on ``layer.weight``, ``x @ emb.weight.T`` for a tied output layer, a call made while
    compiling) would be missed. Walks the graph once: every node on a path from a call's output to the
    parameter must be consumed only by nodes on such paths. (Python walk over the graph: run once per
    structure of the calls, not every step.)
    """
    consumers: dict[Any, list[Any]] = {}
    acc_of: dict[int, Any] = {}
    stack = [r for r in roots if r is not None]
    visited: set[Any] = set(stack)
    while stack:
        node = stack.pop()
        var = getattr(node, "variable", None)
        if var is not None:
            acc_of[id(var)] = node
        for child, _ in node.next_functions:
            if child is None:
                continue
            consumers.setdefault(child, []).append(node)
            if child not in visited:
                visited.add(child)
                stack.append(child)
    bad: set[int] = set()
    for li, (layer, cs) in enumerate(zip(layers, calls, strict=True)):
        targets = {acc_of[id(p)] for p in layer.params if id(p) in acc_of}
        if not targets:
            continue
        tops = {c.edge.node for c in cs}
        on_path: dict[Any, bool] = {}

        def reaches(node: Any, targets: set[Any] = targets, on_path: dict[Any, bool] = on_path) -> bool:
            todo = [(node, False)]
            while todo:
                n, done = todo.pop()
                if n in on_path and not done:
                    continue
                if n in targets:
                    on_path[n] = True
                    continue
                if done:
                    on_path[n] = any(on_path.get(c, False) for c, _ in n.next_functions if c is not None)
                    continue
                on_path[n] = False  # provisional (a graph has no cycles)
                todo.append((n, True))
                todo.extend((c, False) for c, _ in n.next_functions if c is not None and c not in on_path)
            return on_path.get(node, False)

        for t in tops:
            reaches(t)
        path = {n for n, ok in on_path.items() if ok}
        inner = (path - tops) | targets
        if any(c not in path for n in inner for c in consumers.get(n, [])):
            bad.add(li)
    return bad
