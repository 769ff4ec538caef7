"""The layer-wise Gramian engine: G = J Jᵀ and the written .grad equal autograd's, over a family of models.

Every case builds a model in float64, takes K losses from one forward pass, computes the reference K×P
Jacobian with autograd (``retain_graph``), then lets ``Balancer(mode=LayerwiseGramian(...))`` compute the
Gramian and write ``Σ w_i ∇L_i`` for fixed random weights. Each case runs with the activation form wherever
it applies (``"always"``), by cost (``"auto"``) and never, one objective per pass and batched.
"""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Callable
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.engine import LayerwiseGramian, LoopJacobian
from molearn.methods import Inputs, Method, Needs, Output

F64 = torch.float64
K = 3


class _FixedWeights(Method):
    """A Gramian method returning fixed weights (records the Gramian it saw)."""

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(self, weights: Tensor) -> None:
        self.weights = weights
        self.seen: list[Tensor] = []

    def combine(self, inputs: Inputs) -> Output:
        assert inputs.gramian is not None
        self.seen.append(inputs.gramian)
        return Output(weights=self.weights.to(inputs.losses.dtype).clone())


# ---------------------------------------------------------------------------------------------- models
class Twice(nn.Module):
    """One Linear called twice (its rows add up), and an in-place op on its output."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.inp = nn.Linear(4, 6)

    def forward(self, x: Tensor) -> Tensor:
        h = self.lin(torch.tanh(self.inp(x)))
        return self.lin(torch.tanh(h)).relu_()


class Tied(nn.Module):
    """Two Linear modules sharing one weight Parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.b.weight = self.a.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.tanh(self.a(x)))


class Regularised(nn.Module):
    """A Linear whose weight is also used outside its forward (the activation form alone would miss it)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 5)
        self.out = nn.Linear(5, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.out(torch.tanh(self.lin(x)))
        return h + 0.1 * self.lin.weight.sum() * h.detach().mean() + (self.out.weight**2).sum()


class RawParam(nn.Module):
    """A raw nn.Parameter used in forward and an unused Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 5)
        self.scale = nn.Parameter(torch.rand(5) + 0.5)
        self.unused = nn.Linear(5, 5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.lin(x)) * self.scale


class Seq(nn.Module):
    """Embedding (with a padding index) and Linear layers on B×T×d sequences, LayerNorm, a GRU or LSTM."""

    def __init__(self, rnn: str | None = None) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6, padding_idx=0)
        self.lin = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)
        self.rnn = None if rnn is None else getattr(nn, rnn)(6, 5, batch_first=True)
        self.proj = nn.Linear(6 if rnn is None else 5, 4)

    def forward(self, idx: Tensor) -> Tensor:
        h = self.norm(torch.tanh(self.lin(self.emb(idx))))
        if self.rnn is not None:
            h = self.rnn(h)[0]
        return self.proj(h).mean(1)


def conv_net(dim: int, bn: bool = False) -> nn.Module:
    conv = nn.Conv1d if dim == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d
    layers: list[nn.Module] = [conv(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)]
    if bn:
        layers += [norm(6), nn.ReLU(inplace=True)]
    else:
        layers += [nn.ReLU(inplace=True)]  # in place on the convolution's own output
    layers += [conv(6, 4, 2, stride=1, padding=0, bias=False), nn.Tanh(), nn.Flatten()]
    return nn.Sequential(*layers)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 4))


CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Generator], Tensor]]] = {
    "mlp": (mlp, lambda g: torch.randn(8, 5, generator=g, dtype=F64)),
    "mlp-sequence": (mlp, lambda g: torch.randn(3, 4, 5, generator=g, dtype=F64)),
    "twice": (Twice, lambda g: torch.randn(7, 4, generator=g, dtype=F64)),
    "tied": (Tied, lambda g: torch.randn(6, 5, generator=g, dtype=F64)),
    "regularised": (Regularised, lambda g: torch.randn(6, 4, generator=g, dtype=F64)),
    "raw-param-unused": (RawParam, lambda g: torch.randn(6, 4, generator=g, dtype=F64)),
    "conv1d": (lambda: conv_net(1), lambda g: torch.randn(3, 4, 11, generator=g, dtype=F64)),
    "conv2d": (lambda: conv_net(2), lambda g: torch.randn(3, 4, 9, 8, generator=g, dtype=F64)),
    "conv2d-bn": (lambda: conv_net(2, bn=True), lambda g: torch.randn(4, 4, 9, 8, generator=g, dtype=F64)),
    "conv1d-bn": (lambda: conv_net(1, bn=True), lambda g: torch.randn(4, 4, 11, generator=g, dtype=F64)),
    "embedding-layernorm": (Seq, lambda g: torch.randint(0, 11, (4, 5), generator=g)),
    "gru": (lambda: Seq("GRU"), lambda g: torch.randint(0, 11, (3, 4), generator=g)),
    "lstm": (lambda: Seq("LSTM"), lambda g: torch.randint(0, 11, (3, 4), generator=g)),
}


def k_losses(out: Tensor, proj: Tensor) -> Tensor:
    """K nonlinear losses of the model's output."""
    flat = out.reshape(out.shape[0], -1)
    return (torch.tanh(flat @ proj) ** 2).mean(0) + (flat @ proj).mean(0)


def setup(name: str, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(seed)
    factory, make_x = CASES[name]
    model = factory().to(F64).train()
    gen = torch.Generator().manual_seed(seed + 1)
    x = make_x(gen)
    with torch.no_grad():
        width = model(x).reshape(x.shape[0], -1).shape[1]
    proj = torch.randn(width, K, generator=gen, dtype=F64)
    return model, x, proj


def jacobian(losses: Tensor, params: list[Tensor]) -> Tensor:
    rows = []
    for i in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])
        )
    return torch.stack(rows)


def flat_grad(params: list[Tensor]) -> Tensor:
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params])


@pytest.mark.parametrize("per_pass", [1, 2, K])
@pytest.mark.parametrize("form", ["always", "auto", "never"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_gramian_and_grad_equal_autograd(name: str, form: str, per_pass: int) -> None:
    model, x, proj = setup(name)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = torch.tensor([0.7, -0.2, 1.3], dtype=F64)
    method = _FixedWeights(weights)
    strategy = LayerwiseGramian(per_pass, activation_form=form)
    stats = [b.clone() for b in model.buffers()]
    with molearn.Balancer(method, model, tasks=[], mode=strategy) as bal:
        losses = k_losses(model(x), proj)
        after_forward = [b.clone() for b in model.buffers()]
        jac = jacobian(losses, params)
        bal.backward(losses)
    torch.testing.assert_close(method.seen[0], jac @ jac.T, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flat_grad(params), weights @ jac, rtol=1e-10, atol=1e-10)
    for b, a in zip(model.buffers(), after_forward):  # BatchNorm statistics: moved by the forward only
        assert torch.equal(b, a)
    if stats and any(s.dtype.is_floating_point for s in stats):
        assert any(not torch.equal(s, a) for s, a in zip(stats, after_forward))
    if form == "always" and name in ("mlp", "conv2d", "conv1d-bn", "embedding-layernorm", "twice"):
        assert strategy.last_activation, "the activation form was not used"
    if name == "tied":
        assert strategy.last_activation == []  # a weight owned by two modules: gradient form
    if name == "regularised" and form == "always":
        assert strategy.last_activation == []  # weights used outside the calls: found by the graph walk


def test_shared_parameter_list_and_module_argument_agree() -> None:
    model, x, proj = setup("conv2d-bn")
    params = list(model.parameters())
    weights = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    grads = []
    for kwargs in ({"shared": model}, {"shared": model.parameters(), "module": model}, {"shared": params}):
        model.zero_grad()
        method = _FixedWeights(weights)
        bal = molearn.Balancer(method, tasks=[], mode="gramian", **kwargs)  # type: ignore[arg-type]
        bal.backward(k_losses(model(x), proj))
        grads.append((method.seen[0], flat_grad(params)))
        bal.close()
    for g, d in grads[1:]:
        torch.testing.assert_close(g, grads[0][0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(d, grads[0][1], rtol=1e-10, atol=1e-10)


def test_non_leaf_shared_tensor() -> None:
    torch.manual_seed(0)
    base = torch.randn(4, 3, dtype=F64, requires_grad=True)
    w = base * 2.0  # non-leaf "parameter"
    x = torch.randn(6, 4, dtype=F64)
    losses = torch.stack([torch.tanh(x @ w[:, i]).pow(2).mean() for i in range(3)])
    jac = jacobian(losses, [w])
    method = _FixedWeights(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    molearn.Balancer(method, [w], tasks=[], mode="gramian").backward(losses)
    torch.testing.assert_close(method.seen[0], jac @ jac.T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading .grad of a non-leaf
        assert w.grad is not None
        torch.testing.assert_close(w.grad.reshape(-1), method.weights @ jac)


def test_selection_and_heads_in_layerwise_mode() -> None:
    class _Pick(_FixedWeights):
        def select(self, num_objectives: int) -> Tensor | None:
            return torch.tensor([0, 2])

    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh()).double()
    heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(3)).double()
    x, y = torch.randn(9, 5, dtype=F64), torch.randn(9, 3, dtype=F64)
    method = _Pick(torch.tensor([0.4, 0.0, 0.6], dtype=F64))
    bal = molearn.Balancer(method, trunk, mode=LayerwiseGramian(activation_form="always"))
    z = trunk(x)
    losses = torch.stack([((h(z).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])
    params = list(trunk.parameters())
    jac = jacobian(losses, params + list(heads.parameters()))
    ns = sum(p.numel() for p in params)
    bal.backward(losses)
    torch.testing.assert_close(method.seen[0], jac[[0, 2], :ns] @ jac[[0, 2], :ns].T)
    torch.testing.assert_close(flat_grad(params), method.weights @ jac[:, :ns])
    assert all(p.grad is None for p in heads[1].parameters())  # unselected head: nothing
    own = jac[0, ns:] + jac[2, ns:]
    torch.testing.assert_close(flat_grad(list(heads.parameters())), own)


# ---------------------------------------------------------------------------------------------- hooks
def test_hooks_are_removed_and_hold_nothing_between_steps() -> None:
    model, x, proj = setup("mlp")
    bal = molearn.Balancer(_FixedWeights(torch.ones(K, dtype=F64)), model, tasks=[])
    hooked = [m for m in model.modules() if m._forward_hooks]
    assert hooked  # auto + Gramian method + module: the layers are hooked
    out_plain = nn.Sequential(*list(model.children()))(x)  # same modules, outputs unchanged by the hooks
    bal.backward(k_losses(model(x), proj))
    assert bal._recorder is not None and all(not c for c in bal._recorder.calls)
    with torch.no_grad():
        model(x)  # evaluation: nothing recorded
    assert all(not c for c in bal._recorder.calls)
    model(x)  # a forward whose losses no step consumes: dropped by the next step
    bal.backward(k_losses(model(x), proj))
    assert all(not c for c in bal._recorder.calls)
    torch.testing.assert_close(model(x), out_plain)
    bal.close()
    assert not any(m._forward_hooks for m in model.modules())
    # dropping a Balancer without close() removes its hooks too
    bal2 = molearn.Balancer(_FixedWeights(torch.ones(K, dtype=F64)), model, tasks=[])
    ref = weakref.ref(bal2)
    del bal2
    gc.collect()
    assert ref() is None
    assert not any(m._forward_hooks for m in model.modules())


def test_deep_copy_of_a_hooked_model_records_nothing() -> None:
    import copy

    model, x, _ = setup("mlp")
    bal = molearn.Balancer(_FixedWeights(torch.ones(K, dtype=F64)), model, tasks=[])
    twin = copy.deepcopy(model)
    twin(x)
    assert bal._recorder is not None and all(not c for c in bal._recorder.calls)
    bal.close()


def test_loss_only_and_jacobian_methods_install_no_hooks() -> None:
    model, _, _ = setup("mlp")
    molearn.Balancer(molearn.methods.EW(), model)
    molearn.Balancer(molearn.methods.DBMTL(), model)
    assert not any(m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------------------------------------- auto
def test_auto_picks_by_needs_and_model() -> None:
    dense, _, _ = setup("mlp")
    conv, _, _ = setup("conv2d-bn")
    cases: list[tuple[nn.Module, Method, str]] = [
        (dense, molearn.methods.EW(), "LossOnly"),
        (dense, molearn.methods.MGDA(), "LayerwiseGramian"),
        (conv, molearn.methods.MGDA(), "LayerwiseGramian"),
        (dense, molearn.methods.DBMTL(), "LoopJacobian"),  # Jacobian methods on the CPU: loop
        (conv, molearn.methods.DBMTL(), "LoopJacobian"),
    ]
    for model, method, expected in cases:
        with molearn.Balancer(method, model) as bal:
            for k in (3, 10, 40):
                assert type(bal.strategy_for(k)).__name__ == expected
    # without a module the structure is unknown: one pass per objective
    assert type(molearn.Balancer(molearn.methods.DBMTL(), dense.parameters()).strategy_for(3)) is LoopJacobian
    from molearn.engine import Situation, choose

    assert choose(Situation("cuda", 40, True, True, 1, False, dense=True)) == "batched"
    assert choose(Situation("cuda", 3, True, True, 1, False, dense=True)) == "loop"
    assert choose(Situation("cuda", 40, True, True, 1, False, dense=False)) == "loop"
    assert choose(Situation("cuda", 40, True, True, 1, False, compiled=True, dense=True)) == "loop"
    assert choose(Situation("cpu", 3, True, True, 1, False, dense=False)) == "loop"
    assert choose(Situation("cuda", 40, True, False, 1, False)) == "gramian"
    assert choose(Situation("cuda", 40, True, True, 1, True)) == "closure"


def test_auto_objectives_per_pass_rule() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for name, batched in (("mlp", True), ("conv2d-bn", False)):
        strategy = LayerwiseGramian()
        model, x, proj = setup(name)
        with molearn.Balancer(_FixedWeights(torch.ones(K, dtype=F64)), model, tasks=[], mode=strategy) as bal:
            losses = k_losses(model(x), proj)
            assert strategy.recorder is not None
            calls = strategy.recorder.take()
            req = molearn.engine.Request(losses, list(losses.unbind()), bal.shared, [], True, False)
            plan = strategy._plan(req, calls)
            for device in (cpu, cuda):
                assert strategy._per_pass(req, plan, calls, device) == (K if batched else 1)
            if batched:
                req40 = molearn.engine.Request(
                    losses, list(losses.unbind()) * 14, bal.shared, [], True, False
                )
                assert strategy._per_pass(req40, plan, calls, cpu) == 42
                small = LayerwiseGramian(max_chunk_bytes=10 * 8 * sum(p.numel() for p in plan.direct))
                small.attach(strategy.recorder)
                assert small._per_pass(req40, plan, calls, cpu) == 10  # memory asks for chunks
                empty = [[] for _ in calls]  # a layer without calls may be compiled: one pass each
                assert strategy._per_pass(req, plan, empty, cpu) == 1


# ---------------------------------------------------------------------------------------------- precision
def _float_model() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(8 * 36, 16),
    )
    x = torch.randn(4, 3, 6, 6)
    proj = torch.randn(16, K)
    return model, x, proj


def test_bf16_autocast_gramian_in_float32() -> None:
    model, x, proj = _float_model()
    params = list(model.parameters())
    method = _FixedWeights(torch.tensor([0.5, 1.0, 1.5]))
    with molearn.Balancer(method, model, tasks=[], mode=LayerwiseGramian(activation_form="always")) as bal:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = k_losses(model(x), proj.bfloat16()).float()
        jac = jacobian(losses, params)
        bal.backward(losses)
    gram = method.seen[0]
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram, jac @ jac.T, rtol=3e-2, atol=1e-3)
    # .grad is written in float32 from the bf16 output-gradients: close to autograd's bf16 products
    ref = method.weights @ jac
    assert (flat_grad(params) - ref).norm() <= 1e-2 * ref.norm()


@pytest.mark.parametrize("mode", ["gramian", "loop", "batched", "auto"])
def test_grad_scaler_sees_unscaled_gramian_and_steps(mode: str) -> None:
    model, x, proj = _float_model()
    params = list(model.parameters())
    method = _FixedWeights(torch.tensor([0.5, 1.0, 1.5]))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    with molearn.Balancer(method, model, tasks=[], mode=mode) as bal:  # type: ignore[arg-type]
        losses = k_losses(model(x), proj)
        jac = jacobian(losses, params)
        info = bal.backward(losses, scaler=scaler)
    assert not info.skipped
    torch.testing.assert_close(method.seen[0], jac @ jac.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(flat_grad(params), 2.0**12 * (method.weights @ jac), rtol=1e-4, atol=1e-3)
    scaler.step(opt)
    scaler.update()
    moved = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, params)])
    torch.testing.assert_close(moved, 0.1 * (method.weights @ jac), rtol=1e-4, atol=1e-6)


def test_grad_scaler_overflow_is_left_to_the_scaler() -> None:
    model, x, proj = _float_model()
    params = list(model.parameters())
    method = _FixedWeights(torch.tensor([0.5, 1.0, 1.5]))
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)  # the scaled gradients overflow
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    with molearn.Balancer(method, model, tasks=[], mode="gramian") as bal:
        info = bal.step(lambda b: k_losses(model(b), proj), lambda: x, opt, scaler=scaler)
    assert info.skipped and bal.skipped_steps == 0
    assert not method.seen  # the method never saw the overflowed Gramian
    assert scaler.get_scale() < 1e38
    for b, p in zip(before, params):
        assert torch.equal(b, p)


def test_fp16_autocast_with_grad_scaler_runs() -> None:
    model, x, proj = _float_model()
    method = molearn.methods.MGDA()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def loss_fn(b: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(b)
        return k_losses(out.float(), proj)

    with molearn.Balancer(method, model) as bal:
        for _ in range(3):
            info = bal.step(loss_fn, lambda: x, opt, scaler=scaler)
    assert info.weights is not None and torch.isfinite(info.weights).all()


# ---------------------------------------------------------------------------------------------- compile
def test_compiled_trunk_falls_back_to_the_gradient_form() -> None:
    pytest.importorskip("torch._dynamo")
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6))
    compiled = torch.compile(trunk)
    x = torch.randn(7, 5)
    proj = torch.randn(6, K)
    method = _FixedWeights(torch.tensor([0.5, 1.0, 1.5]))
    params = list(trunk.parameters())
    bal = molearn.Balancer(method, compiled, tasks=[])
    assert bal._recorder is not None and bal._recorder.compiled
    try:
        losses = k_losses(compiled(x), proj)
    except Exception as exc:  # pragma: no cover - no C compiler
        pytest.skip(f"torch.compile unavailable here: {exc}")
    jac = jacobian(losses, params)
    bal.backward(losses)
    torch.testing.assert_close(method.seen[0], jac @ jac.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(flat_grad(params), method.weights @ jac, rtol=1e-4, atol=1e-5)
    # the batched pass cannot run through a compiled backward: one objective per pass is used
    strategy = bal.strategy_for(K)
    assert isinstance(strategy, LayerwiseGramian)
    bal.close()


# ---------------------------------------------------------------------------------------------- agreement
class _Heads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(6 * 16, 12),
            nn.Tanh(),
        )
        self.heads = nn.ModuleList(nn.Linear(12, 1) for _ in range(4))

    def losses(self, x: Tensor, y: Tensor) -> Tensor:
        z = self.trunk(x)
        return torch.stack([((h(z).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(self.heads)])


MODES: dict[str, Callable[[], object]] = {
    "batched": lambda: "batched",
    "gramian": lambda: "gramian",
    "gramian-always-batched": lambda: LayerwiseGramian(4, activation_form="always"),
    "gramian-always-chunked": lambda: LayerwiseGramian(3, activation_form="always"),
    "gramian-always-loop": lambda: LayerwiseGramian(1, activation_form="always"),
    "auto": lambda: "auto",
}


@pytest.mark.parametrize(
    "method_name", ["MGDA", "UPGrad", "CAGrad", "PCGrad", "NashMTL", "IMTLG", "DBMTL", "UW", "EW"]
)
def test_every_strategy_writes_what_loop_writes(method_name: str) -> None:
    torch.manual_seed(0)
    base = _Heads().double()
    x, y = torch.randn(5, 3, 4, 4, dtype=F64), torch.randn(5, 4, dtype=F64)
    cls = molearn.methods.registry()[method_name.lower()]
    results: dict[str, tuple[Tensor | None, list[Tensor]]] = {}
    for label, make in {"loop": lambda: "loop", **MODES}.items():
        method = cls()
        if method.needs.jacobian and label.startswith("gramian"):
            continue
        model = _copy(base)
        torch.manual_seed(1)  # methods drawing from the global generator (PCGrad) draw the same
        with molearn.Balancer(method, model.trunk, model.heads.parameters(), mode=make()) as bal:  # type: ignore[arg-type]
            info = None
            for _ in range(2):  # two steps: stateful methods see the same sequence
                model.zero_grad()
                info = bal.backward(model.losses(x, y))
        assert info is not None
        results[label] = (
            info.weights,
            [p.grad.clone() if p.grad is not None else None for p in model.parameters()],
        )
    ref_w, ref_g = results.pop("loop")
    for label, (w, grads) in results.items():
        if ref_w is not None:
            assert w is not None
            torch.testing.assert_close(
                w, ref_w, rtol=1e-7, atol=1e-9, msg=lambda m, label=label: f"{label}: {m}"
            )
        for g, r in zip(grads, ref_g):
            assert (g is None) == (r is None)
            if g is not None:
                torch.testing.assert_close(
                    g, r, rtol=1e-7, atol=1e-9, msg=lambda m, label=label: f"{label}: {m}"
                )


def _copy(model: nn.Module) -> _Heads:
    import copy

    out = copy.deepcopy(model)
    assert isinstance(out, _Heads)
    return out


def test_blocked_gramian_of_a_wide_jacobian() -> None:
    from molearn.engine import gramian_of

    gen = torch.Generator().manual_seed(0)
    j = torch.randn(5, 4 * 16384 + 17, generator=gen, dtype=F64)
    torch.testing.assert_close(gramian_of(j), j @ j.T)
    torch.testing.assert_close(gramian_of(j[:, 3:]), j[:, 3:] @ j[:, 3:].T)
    j32 = j.float()
    torch.testing.assert_close(gramian_of(j32), (j @ j.T).float(), rtol=1e-4, atol=1e-2)


def test_docs_print_the_rules_auto_follows() -> None:
    from pathlib import Path

    from molearn.engine import RULES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "engine.md").read_text()
    for rule in RULES:
        assert "| " + " | ".join(rule) + " |" in doc, f"docs/engine.md lacks the auto rule {rule}"
