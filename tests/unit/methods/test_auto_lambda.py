"""Auto-Lambda: one Balancer.step against the official algorithm written with plain autograd."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

import molearn
from molearn.methods import AutoLambda, get


class _Net(nn.Module):
    def __init__(self, nonlinear: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 4).double()
        self.heads = nn.ModuleList([nn.Linear(4, 1).double() for _ in range(2)])
        self.nonlinear = nonlinear

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.trunk(x)
        z = torch.tanh(z) if self.nonlinear else z
        return [h(z).squeeze(1) for h in self.heads]


def _batch(seed: int, n: int = 6) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randn(2, n, generator=gen).double()


def _losses_of(net: nn.Module, params: dict[str, Tensor] | None, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    preds = net(x) if params is None else functional_call(net, params, (x,))
    return torch.stack([((p - t) ** 2).mean() for p, t in zip(preds, y)])


def _setup(nonlinear: bool = True) -> tuple[_Net, torch.optim.SGD]:
    """A model and an SGD optimiser with momentum buffers from one plain step (read by the virtual step)."""
    net = _Net(nonlinear)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    _losses_of(net, None, _batch(9)).sum().backward()
    opt.step()
    opt.zero_grad()
    return net, opt


def _official(
    net: nn.Module,
    opt: torch.optim.SGD | None,
    alpha: float,
    lam0: Sequence[float],
    val: tuple[Tensor, Tensor],
    train: tuple[Tensor, Tensor],
    meta_lr: float,
    primary: Sequence[int],
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """lorenmt/auto-lambda ``AutoLambda.unrolled_backward`` + the meta Adam step + the weighted update,
    with torch.func and torch.optim.Adam. Returns (new λ, Adam's first moment, the update's gradients)."""
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    names = list(theta)
    lam = torch.tensor(lam0, dtype=torch.float64)

    def grads(params: dict[str, Tensor], batch: tuple[Tensor, Tensor], w: Tensor) -> list[Tensor]:
        leaves = {n: t.clone().requires_grad_(True) for n, t in params.items()}
        return list(torch.autograd.grad(w @ _losses_of(net, leaves, batch), list(leaves.values())))

    g = grads(theta, train, lam)
    mom = wd = 0.0
    bufs = {n: torch.zeros_like(t) for n, t in theta.items()}
    if opt is not None:
        mom, wd = opt.param_groups[0]["momentum"], opt.param_groups[0]["weight_decay"]
        for n, p in net.named_parameters():
            bufs[n] = opt.state[p]["momentum_buffer"]
    ahead = {n: theta[n] - alpha * (mom * bufs[n] + gi + wd * theta[n]) for n, gi in zip(names, g)}
    pri = torch.zeros(2, dtype=torch.float64)
    pri[list(primary)] = 1.0
    d = grads(ahead, val, pri)
    eps = 0.01 / torch.sqrt(sum((di**2).sum() for di in d))  # type: ignore[arg-type]
    with torch.no_grad():
        plus = _losses_of(net, {n: theta[n] + eps * di for n, di in zip(names, d)}, train)
        minus = _losses_of(net, {n: theta[n] - eps * di for n, di in zip(names, d)}, train)
    meta = lam.clone().requires_grad_(True)
    adam = torch.optim.Adam([meta], lr=meta_lr)
    meta.grad = -alpha * (plus - minus) / (2 * eps)
    adam.step()
    new = meta.detach()
    return new, adam.state[meta]["exp_avg"], grads(theta, train, new)


@pytest.mark.parametrize(("alpha_from", "primary"), [("optimizer", None), ("lr", [1]), ("step", None)])
def test_one_step_matches_the_official_algorithm(alpha_from: str, primary: list[int] | None) -> None:
    """α (and momentum, weight decay) from ``optimizer=``, from ``lr=``, or from the optimiser that
    ``Balancer.step`` is given (how ``Trainer`` and ``molearn compare`` run it)."""
    net, opt = _setup()
    val, train = _batch(1), _batch(2)
    ref_net, ref_opt = copy.deepcopy((net, opt))
    new_lam, first_moment, want = _official(
        net, None if alpha_from == "lr" else opt, 0.1, [0.1, 0.1], val, train, 0.01, primary or [0, 1]
    )

    kwargs = {"optimizer": {"optimizer": opt}, "lr": {"lr": 0.1}, "step": {}}[alpha_from]
    method = get("auto_lambda", meta_lr=0.01, primary=primary, **kwargs)
    assert isinstance(method, AutoLambda)
    bal = molearn.Balancer(method, net.trunk.parameters(), net.heads.parameters())
    info = bal.step(lambda b: _losses_of(net, None, b), iter([val, train]), opt)

    torch.testing.assert_close(method.state_dict()["m"], first_moment, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(info.weights, new_lam)
    torch.testing.assert_close(info.info["lambda"], new_lam)
    torch.testing.assert_close(info.losses, _losses_of(ref_net, None, train).detach())
    for p, g in zip(ref_net.parameters(), want):
        p.grad = g
    ref_opt.step()
    for p, q in zip(net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_exact_product_is_the_limit_of_the_finite_difference() -> None:
    """Central differences are exact on quadratic losses (a linear model without heads): both give the same
    meta-gradient; on the tanh model they agree to the finite-difference error."""
    moments: dict[str, list[Tensor]] = {"quadratic": [], "tanh": []}
    for hessian in ("finite_difference", "exact"):
        torch.manual_seed(0)
        lin = nn.Linear(3, 2).double()
        method = AutoLambda(lr=0.1, hessian=hessian)  # type: ignore[arg-type]
        bal = molearn.Balancer(method, lin.parameters(), [])
        x, y = _batch(1)
        x2, y2 = _batch(2)
        batches = iter([(x, y), (x2, y2)])
        bal.step(lambda b, m=lin: ((m(b[0]) - b[1].T) ** 2).mean(0), batches)
        moments["quadratic"].append(method.state_dict()["m"])

        net, opt = _setup()
        method = AutoLambda(optimizer=opt, hessian=hessian)  # type: ignore[arg-type]
        bal = molearn.Balancer(method, net.trunk.parameters(), net.heads.parameters())
        bal.step(lambda b, n=net: _losses_of(n, None, b), iter([_batch(1), _batch(2)]), opt)
        moments["tanh"].append(method.state_dict()["m"])
    for name, rtol in (("quadratic", 1e-8), ("tanh", 1e-3)):
        fd, exact = moments[name]
        assert fd.abs().min() > 0
        torch.testing.assert_close(fd, exact, rtol=rtol, atol=0.0, msg=name)


def test_state_round_trip_continues_identically() -> None:
    net, opt = _setup()
    first = AutoLambda(optimizer=opt, meta_lr=0.01)
    bal = molearn.Balancer(first, net.trunk.parameters(), net.heads.parameters())
    bal.step(lambda b: _losses_of(net, None, b), iter([_batch(1), _batch(2)]), opt)

    net2, _ = _setup()
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # SGD shares the buffers otherwise
    second = AutoLambda(optimizer=opt2, meta_lr=0.01)
    second.load_state_dict(first.state_dict())
    bal2 = molearn.Balancer(second, net2.trunk.parameters(), net2.heads.parameters())

    a = bal.step(lambda b: _losses_of(net, None, b), iter([_batch(3), _batch(4)]), opt)
    b = bal2.step(lambda b: _losses_of(net2, None, b), iter([_batch(3), _batch(4)]), opt2)
    torch.testing.assert_close(a.weights, b.weights, rtol=0.0, atol=0.0)
    for p, q in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(p, q, rtol=0.0, atol=0.0)
    assert not torch.equal(a.weights, torch.full((2,), 0.1, dtype=torch.float64))


def test_combine_without_a_look_ahead_returns_the_current_weights() -> None:
    from molearn.methods import Inputs

    method = AutoLambda(init=0.3)
    losses = torch.tensor([1.0, 2.0, 3.0])
    out = method.combine(Inputs(losses=losses, extra=[Inputs(losses=losses)]))
    torch.testing.assert_close(out.weights, torch.full((3,), 0.3))
    assert out.extra_weights is not None and float(out.extra_weights[0].abs().sum()) == 0


def test_bad_inputs_give_clear_errors() -> None:
    net, _ = _setup()

    def step(method: AutoLambda) -> None:
        bal = molearn.Balancer(method, net.trunk.parameters(), net.heads.parameters())
        bal.step(lambda b: _losses_of(net, None, b), iter([_batch(1), _batch(2)]), None)

    with pytest.raises(ValueError, match="learning rate"):
        step(AutoLambda())
    with pytest.raises(ValueError, match="out of range"):
        step(AutoLambda(lr=0.1, primary=[2]))
    bal = molearn.Balancer(AutoLambda(lr=0.1), net.trunk.parameters(), net.heads.parameters())
    with pytest.raises(TypeError, match=r"Balancer\.step"):
        bal.backward(_losses_of(net, None, _batch(1)))
    with pytest.raises(ValueError, match="loop"):
        molearn.Balancer(AutoLambda(lr=0.1), net.trunk.parameters(), mode="representation")
    for kwargs in (
        {"hessian": "second"},
        {"fd_scale": 0.0},
        {"primary": []},
        {"primary": [0, 0]},
        {"lr": -1.0},
        {"meta_lr": -1.0},
    ):
        with pytest.raises(ValueError):
            AutoLambda(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer"):
        AutoLambda(optimizer="sgd")  # type: ignore[arg-type]
    method = AutoLambda(lr=0.1)
    with pytest.raises(ValueError, match="unknown state keys"):
        method.load_state_dict({"lambda": torch.ones(2)})
    with pytest.raises(ValueError, match="same length"):
        state = {"param": torch.ones(2), "m": torch.ones(3), "v": torch.ones(2), "t": torch.tensor(1.0)}
        method.load_state_dict(state)
    step(method)
    with pytest.raises(ValueError, match="reset"):
        w = torch.ones(3, requires_grad=True)
        molearn.Balancer(method, [w]).step(lambda b: w * b, iter([torch.ones(3)] * 2))
