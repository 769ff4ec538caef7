"""The engine's support for multi-batch methods, objective selection and closure methods (Probe)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from molearn import Balancer
from molearn.engine import Probe, perturbed
from molearn.methods import Inputs, Method, Needs, Output


def _model(k: int = 3) -> tuple[nn.Linear, list[nn.Linear]]:
    torch.manual_seed(0)
    trunk = nn.Linear(4, 5).double()
    heads = [nn.Linear(5, 1).double() for _ in range(k)]
    return trunk, heads


def _loss_fn(trunk: nn.Module, heads: list[nn.Linear]) -> Any:
    def loss_fn(batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        z = torch.tanh(trunk(x))
        return torch.stack([((h(z).squeeze(-1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])

    return loss_fn


def _batches(k: int, n: int = 6, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 4, generator=gen, dtype=torch.float64),
            torch.randn(8, k, generator=gen, dtype=torch.float64),
        )
        for _ in range(n)
    ]


def _jac(loss_fn: Any, batch: Any, params: list[Tensor]) -> Tensor:
    losses = loss_fn(batch)
    rows = []
    for i in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)])
        )
    return torch.stack(rows)


class _TwoBatch(Method):
    """Weights a on the first batch, b on the second; records what it saw."""

    needs: ClassVar[Needs] = Needs(jacobian=True, batches=2)

    def __init__(self, a: list[float], b: list[float]) -> None:
        self.a, self.b = a, b
        self.seen: list[Inputs] = []

    def combine(self, inputs: Inputs) -> Output:
        self.seen.append(inputs)
        w_a = torch.tensor(self.a, dtype=inputs.losses.dtype)
        return Output(weights=torch.tensor(self.b, dtype=inputs.losses.dtype), extra_weights=[w_a])


def test_two_batches_shared_gets_both_weighted_sums_and_heads_the_mean() -> None:
    trunk, heads = _model()
    loss_fn = _loss_fn(trunk, heads)
    data = _batches(3)
    shared = list(trunk.parameters())
    tasks = [p for h in heads for p in h.parameters()]
    method = _TwoBatch([0.5, 0.2, 0.3], [0.1, 0.7, 0.2])
    bal = Balancer(method, shared, tasks)
    bal.step(loss_fn, iter(data))
    j1, j2 = _jac(loss_fn, data[0], shared + tasks), _jac(loss_fn, data[1], shared + tasks)
    ns = sum(p.numel() for p in shared)
    expected_shared = (
        torch.tensor(method.a, dtype=torch.float64) @ j1[:, :ns]
        + torch.tensor(method.b, dtype=torch.float64) @ j2[:, :ns]
    )
    got_shared = torch.cat([p.grad.flatten() for p in shared])
    torch.testing.assert_close(got_shared, expected_shared)
    expected_tasks = 0.5 * (j1[:, ns:].sum(0) + j2[:, ns:].sum(0))
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in tasks]), expected_tasks)
    # the method saw the first batch in extra, and both Jacobians
    seen = method.seen[0]
    assert len(seen.extra) == 1
    torch.testing.assert_close(seen.extra[0].jacobian, j1[:, :ns])
    torch.testing.assert_close(seen.jacobian, j2[:, :ns])


def test_multi_batch_methods_refuse_backward_and_gramian_mode() -> None:
    trunk, heads = _model()
    method = _TwoBatch([1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="Jacobian"):
        Balancer(method, trunk.parameters(), mode="gramian")
    with pytest.raises(ValueError, match="independent batches"):
        Balancer(method, trunk.parameters(), mode="representation")
    bal = Balancer(method, trunk.parameters())
    losses = _loss_fn(trunk, heads)(_batches(3)[0])
    with pytest.raises(TypeError, match=r"Balancer\.step"):
        bal.backward(losses)


def test_wrong_number_of_extra_weights_is_named() -> None:
    class Bad(_TwoBatch):
        def combine(self, inputs: Inputs) -> Output:
            out = super().combine(inputs)
            out.extra_weights = [out.weights, out.weights]
            return out

    trunk, heads = _model()
    bal = Balancer(Bad([1, 1, 1], [1, 1, 1]), trunk.parameters())
    with pytest.raises(ValueError, match="2 extra weight vectors for 1 extra batches"):
        bal.step(_loss_fn(trunk, heads), iter(_batches(3)))


class _Pick(Method):
    """Selects a fixed subset and gives weight 1 to each selected objective."""

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(self, subset: list[int]) -> None:
        self.subset = subset
        self.seen: list[Inputs] = []

    def select(self, num_objectives: int) -> Tensor | None:
        return torch.tensor(self.subset)

    def combine(self, inputs: Inputs) -> Output:
        self.seen.append(inputs)
        w = torch.zeros_like(inputs.losses)
        w[inputs.selected] = 1.0
        return Output(weights=w)


@pytest.mark.parametrize("mode", ["loop", "batched", "gramian"])
def test_selection_differentiates_only_the_selected_objectives(mode: str) -> None:
    trunk, heads = _model(4)
    loss_fn = _loss_fn(trunk, heads)
    batch = _batches(4)[0]
    shared = list(trunk.parameters())
    tasks = [p for h in heads for p in h.parameters()]
    method = _Pick([0, 2])
    Balancer(method, shared, tasks, mode=mode).backward(loss_fn(batch))
    inputs = method.seen[0]
    assert inputs.gramian is not None and inputs.gramian.shape == (2, 2)
    assert inputs.losses.shape == (4,)
    jac = _jac(loss_fn, batch, shared + tasks)
    ns = sum(p.numel() for p in shared)
    torch.testing.assert_close(inputs.gramian, jac[[0, 2], :ns] @ jac[[0, 2], :ns].T)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in shared]), jac[[0, 2], :ns].sum(0))
    for i in (1, 3):  # unselected heads receive nothing (None: momentum optimisers leave them alone)
        assert all(p.grad is None for p in heads[i].parameters())
    for i in (0, 2):
        assert all(p.grad is not None and p.grad.any() for p in heads[i].parameters())


@pytest.mark.parametrize("stacked", [True, False])
def test_selection_leaves_unselected_heads_untouched_by_adam(stacked: bool) -> None:
    trunk, heads = _model(4)
    batch = _batches(4)[0]
    shared = list(trunk.parameters())
    tasks = [p for h in heads for p in h.parameters()]
    opt = torch.optim.Adam([*shared, *tasks], lr=0.1)
    bal = Balancer(_Pick([1, 2]), shared, tasks)

    def loss_fn(b: tuple[Tensor, Tensor]) -> Any:
        x, y = b
        z = torch.tanh(trunk(x))
        items = [((h(z).squeeze(-1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)]
        return torch.stack(items) if stacked else items

    bal.step(loss_fn, lambda: batch, opt)  # heads 1, 2 get Adam state
    bal.method.subset = [0, 3]
    before = [p.detach().clone() for i in (1, 2) for p in heads[i].parameters()]
    bal.step(loss_fn, lambda: batch, opt)
    after = [p.detach() for i in (1, 2) for p in heads[i].parameters()]
    for b, a in zip(before, after):
        assert torch.equal(b, a)  # no momentum step for heads without a gradient


def test_invalid_selection_is_named() -> None:
    trunk, heads = _model(3)
    bal = Balancer(_Pick([0, 5]), trunk.parameters())
    with pytest.raises(ValueError, match="invalid objectives"):
        bal.backward(_loss_fn(trunk, heads)(_batches(3)[0]))


def test_perturbed_restores_parameters_bit_for_bit() -> None:
    trunk, _ = _model()
    params = list(trunk.parameters())
    before = [p.detach().clone() for p in params]
    offset = torch.randn(sum(p.numel() for p in params), dtype=torch.float64) * 1e-3
    with perturbed(params, offset):
        assert not torch.equal(params[0], before[0])
    for p, b in zip(params, before):
        assert torch.equal(p, b)
    with pytest.raises(RuntimeError), perturbed(params, offset):
        raise RuntimeError("boom")
    for p, b in zip(params, before):
        assert torch.equal(p, b)


def test_probe_keeps_batchnorm_statistics_and_uses_eval_mode_for_losses() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 2)).double()
    net.train()
    x = torch.randn(16, 4, dtype=torch.float64)

    def fn() -> Tensor:
        out = net(x)
        return torch.stack([out[:, 0].pow(2).mean(), out[:, 1].pow(2).mean()])

    losses = fn()  # the one training pass: BN statistics move once
    stats = [b.clone() for b in net.buffers()]
    params = list(net.parameters())
    probe = Probe(fn, losses, params[:2], params[2:], module=net)
    probe.mean_gradient()
    a = probe.losses_at(None)
    b = probe.losses_at(None)
    torch.testing.assert_close(a, b)  # eval mode: no dropout noise, running statistics
    assert net.training and all(m.training for m in net.modules())
    offset = torch.full((sum(p.numel() for p in params),), 1e-2, dtype=torch.float64)
    g = probe.gradient_at(1, offset)
    assert g.shape == offset.shape and torch.isfinite(g).all()
    for s, buf in zip(stats, net.buffers()):
        assert torch.equal(s, buf)
    assert probe.forward_passes == 3 and probe.backward_passes == 2


def test_probe_task_columns_follow_the_graph() -> None:
    trunk, heads = _model(3)
    loss_fn = _loss_fn(trunk, heads)
    batch = _batches(3)[0]
    tasks = [p for h in heads for p in h.parameters()]
    probe = Probe(lambda: loss_fn(batch), loss_fn(batch), list(trunk.parameters()), tasks)
    per_head = sum(p.numel() for p in heads[0].parameters())
    assert probe.task_columns(1).tolist() == list(range(per_head, 2 * per_head))


class _ClosureEW(Method):
    """Computes each row at a fixed offset of the parameters; weights 1."""

    needs: ClassVar[Needs] = Needs(closure=True, gramian=True)

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def jacobian(self, probe: Any) -> Tensor:
        probe.mean_gradient()
        width = probe.num_shared + sum(t.numel() for t in probe.tasks)
        offset = torch.full((width,), self.scale, dtype=probe.losses.dtype)
        return torch.stack([probe.gradient_at(i, offset) for i in range(probe.num_objectives)])

    def combine(self, inputs: Inputs) -> Output:
        return Output(weights=torch.ones_like(inputs.losses))


def test_closure_method_rows_reach_shared_and_heads() -> None:
    trunk, heads = _model(2)
    loss_fn = _loss_fn(trunk, heads)
    batch = _batches(2)[0]
    shared = list(trunk.parameters())
    tasks = [p for h in heads for p in h.parameters()]
    Balancer(_ClosureEW(0.05), shared, tasks, module=trunk).step(loss_fn, lambda: batch)
    params = shared + tasks
    with torch.no_grad():
        for p in params:
            p.add_(0.05)
    expected = _jac(loss_fn, batch, params).sum(0)
    got = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(got, expected)


def test_closure_methods_need_step() -> None:
    trunk, heads = _model(2)
    bal = Balancer(_ClosureEW(0.0), trunk.parameters())
    with pytest.raises(TypeError, match="closure"):
        bal.backward(_loss_fn(trunk, heads)(_batches(2)[0]))
