"""SDMGrad / SDMGrad-OS: golden tests against transcriptions of the official inner loops (NYUv2/Cityscapes
one-batch code, LibMTL three-batch code, MT10 RL code and its objective sampling), the exact solver against
quadprog, selection statistics, state, properties, and end-to-end steps through ``Balancer.step``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import quadprog
import torch
from torch import Tensor, nn

import molearn
from molearn.methods import Inputs, Method, Needs, Output, SDMGrad, SDMGradOS

from ._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_non_conflicting,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

F64 = torch.float64


# ------------------------------------------------------------------ independent transcriptions
def np_proj_simplex(v: np.ndarray, s: float = 1.0) -> np.ndarray:
    """``euclidean_proj_simplex`` of the official code (Duchi et al.), in numpy."""
    v = v.astype(np.float64)
    (n,) = v.shape
    if v.sum() == s and np.all(v >= 0):
        return v
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, n + 1) > (cssv - s))[0][-1]
    theta = float(cssv[rho] - s) / (rho + 1)
    return (v - theta).clip(min=0)


def official_one_batch(w: Tensor, grads: Tensor, alpha: float, niter: int = 20, lr: float = 10.0) -> Tensor:
    """ml-opt-lab/sdmgrad ``nyuv2/utils.py`` ``sdmgrad`` (grads: P×K there; here K×P, transposed below).
    Updates ``w`` in place (it persists across calls) and returns the direction."""
    grads = grads.T
    GG = torch.mm(grads.t(), grads)
    scale = torch.mean(torch.sqrt(torch.diag(GG) + 1e-4))
    GG = GG / scale.pow(2)
    Gg = torch.mean(GG, dim=1)
    gg = torch.mean(Gg)
    w.requires_grad = True
    optimizer = torch.optim.SGD([w], lr=lr, momentum=0.5)
    for _ in range(niter):
        optimizer.zero_grad()
        obj = torch.dot(w, torch.mv(GG, w)) + 2 * alpha * torch.dot(w, Gg) + alpha**2 * gg
        obj.backward()
        optimizer.step()
        proj = np_proj_simplex(w.data.cpu().numpy())
        w.data.copy_(torch.from_numpy(proj).data)
    w.requires_grad = False
    g0 = torch.mean(grads, dim=1)
    gw = torch.mv(grads, w)
    return (gw + alpha * g0) / (1 + alpha)


def official_libmtl(
    w: Tensor, zeta: Tensor, xi1: Tensor, xi2: Tensor, lamda: float, niter: int = 20
) -> Tensor:
    """median-research-group/LibMTL ``weighting/SDMGrad.py`` (K×P gradients); ``w`` persists."""
    GG = torch.mm(xi1, xi2.t())
    GG_diag = torch.diag(GG)
    GG_diag = torch.where(GG_diag < 0, torch.zeros_like(GG_diag), GG_diag)
    scale = torch.mean(torch.sqrt(GG_diag))
    GG = GG / (scale.pow(2) + 1e-8)
    Gg = torch.mean(GG, dim=1)
    w.requires_grad = True
    optimizer = torch.optim.SGD([w], lr=5, momentum=0.5)
    for _ in range(niter):
        optimizer.zero_grad()
        w.grad = torch.mv(GG, w.detach()) + lamda * Gg
        optimizer.step()
        proj = np_proj_simplex(w.data.cpu().numpy())
        w.data.copy_(torch.from_numpy(proj).data)
    w.requires_grad = False
    g0 = torch.mean(zeta, dim=0)
    gw = (zeta * w.view(-1, 1)).sum(0)
    return (gw + lamda * g0) / (1 + lamda)


def official_rl(grads: Tensor, lmbda: float, lr: float) -> Tensor:
    """ml-opt-lab/sdmgrad ``mtrl/mtrl_files/sdmgrad.py`` ``sdmgrad`` / ``sdmgrad_os`` (K×P): w from
    uniform every call, best objective of 21 evaluations."""
    n = grads.size(0)
    GG = torch.mm(grads, grads.t())
    scale = (torch.diag(GG) + 1e-4).sqrt().mean()
    GG = GG / scale.pow(2)
    Gg = torch.mean(GG, dim=1)
    gg = torch.mean(Gg)
    w = torch.ones(n, dtype=grads.dtype) / n
    w.requires_grad = True
    w_opt = torch.optim.SGD([w], lr=lr, momentum=0.5)
    w_best = None
    obj_best = np.inf
    for i in range(21):
        w_opt.zero_grad()
        obj = torch.dot(w, torch.mv(GG, w)) + 2 * lmbda * torch.dot(w, Gg) + lmbda**2 * gg
        if obj.item() < obj_best:
            obj_best = obj.item()
            w_best = w.clone()
        if i < 20:
            obj.backward()
            w_opt.step()
            proj = np_proj_simplex(w.data.cpu().numpy())
            w.data.copy_(torch.from_numpy(proj).data)
    assert w_best is not None
    g0 = torch.mean(grads, dim=0)
    gw = torch.mv(grads.t(), w_best.detach())
    return (gw + lmbda * g0) / (1 + lmbda)


# ------------------------------------------------------------------ helpers
def sequence(seed: int, steps: int, batches: int, k: int = 4, p: int = 10) -> list[list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(k, p, generator=gen, dtype=F64)
    return [
        [base + 0.8 * torch.randn(k, p, generator=gen, dtype=F64) for _ in range(batches)]
        for _ in range(steps)
    ]


def inputs_of(jacs: list[Tensor], selected: Tensor | None = None, k: int | None = None) -> Inputs:
    kk = jacs[0].shape[0] if k is None else k
    losses = torch.linspace(1.0, 2.0, kk, dtype=F64)
    parts = [Inputs(losses=losses, gramian=j @ j.T, jacobian=j, selected=selected) for j in jacs]
    parts[-1].extra = parts[:-1]
    return parts[-1]


def run(method: Method, jacs: list[Tensor]) -> tuple[Tensor, Output]:
    out = method.combine(inputs_of(jacs))
    assert out.weights is not None and out.extra_weights is None
    return out.weights @ jacs[-1], out


class _Fresh(Method):
    """Runs a stateful method from its initial state on every call (for the one-call property helpers)."""

    def __init__(self, method: Method) -> None:
        self.method = method

    @property  # type: ignore[override]
    def needs(self) -> Needs:  # type: ignore[override]
        return self.method.needs

    def select(self, num_objectives: int) -> Tensor | None:
        return self.method.select(num_objectives)

    def combine(self, inputs: Inputs) -> Output:
        self.method.reset()
        return self.method.combine(inputs)


# ------------------------------------------------------------------ golden tests
@pytest.mark.parametrize("scale", [1.0, "K"])
def test_golden_one_batch_matches_nyuv2_code(scale: Any) -> None:
    lamda = 0.3
    method = SDMGrad(lamda=lamda, batches=1, scale=scale)
    assert method.lr == 10.0 and method.needs == Needs(gramian=True)
    w_ref = torch.full((4,), 0.25, dtype=F64)
    for (jac,) in sequence(0, steps=4, batches=1):
        expected = official_one_batch(w_ref, jac, lamda)
        if scale == "K":
            expected = expected * 4  # overwrite_grad: "newgrad * 3 (NYUv2) / * 2 (Cityscapes)", i.e. K
        d, out = run(method, [jac])
        torch.testing.assert_close(out.info["w"], w_ref, atol=1e-10, rtol=0)
        torch.testing.assert_close(d, expected, atol=1e-10, rtol=0)
    assert (w_ref - 0.25).abs().max() > 1e-2, "w never moved"


def test_golden_three_batches_matches_libmtl() -> None:
    lamda = 0.3
    method = SDMGrad(lamda=lamda, batches=3)
    assert method.lr == 5.0 and method.needs == Needs(jacobian=True, batches=3)
    w_ref = torch.full((4,), 0.25, dtype=F64)
    for xi1, xi2, zeta in sequence(1, steps=4, batches=3):
        # LibMTL calls its first batch ζ; molearn uses the last one for the direction (i.i.d. batches)
        expected = official_libmtl(w_ref, zeta, xi1, xi2, lamda)
        d, out = run(method, [xi1, xi2, zeta])
        torch.testing.assert_close(out.info["w"], w_ref, atol=1e-10, rtol=0)
        torch.testing.assert_close(d, expected, atol=1e-10, rtol=0)
    assert (w_ref - 0.25).abs().max() > 1e-2, "w never moved"


def test_golden_three_batches_negative_diagonal_clamped() -> None:
    """A cross Gramian with a negative diagonal entry (batches disagreeing on one objective)."""
    xi1, xi2, zeta = sequence(2, steps=1, batches=3)[0]
    xi2 = xi2.clone()
    xi2[1] = -xi1[1]
    assert (xi1 @ xi2.T).diagonal()[1] < 0
    w_ref = torch.full((4,), 0.25, dtype=F64)
    expected = official_libmtl(w_ref, zeta, xi1, xi2, 0.3)
    d, _ = run(SDMGrad(lamda=0.3, batches=3), [xi1, xi2, zeta])
    torch.testing.assert_close(d, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("lr", [25.0, 50.0])
def test_golden_rl_code_no_warm_start_keep_best(lr: float) -> None:
    lamda = 0.6
    method = SDMGrad(lamda=lamda, batches=1, lr=lr, warm_start=False)
    assert method.keep_best
    for (jac,) in sequence(3, steps=3, batches=1, k=6):
        d, _ = run(method, [jac])
        torch.testing.assert_close(d, official_rl(jac, lamda, lr), atol=1e-10, rtol=0)
    assert method.state_dict() == {}


def test_keep_best_differs_from_last_iterate() -> None:
    """Guards the keep-best branch: on this instance the last iterate is not the best one."""
    found = False
    for (jac,) in sequence(4, steps=20, batches=1, k=6):
        last = SDMGrad(lamda=0.6, batches=1, lr=50.0, warm_start=False, keep_best=False)
        best = SDMGrad(lamda=0.6, batches=1, lr=50.0, warm_start=False)
        d_last, d_best = run(last, [jac])[0], run(best, [jac])[0]
        torch.testing.assert_close(d_best, official_rl(jac, 0.6, 50.0), atol=1e-10, rtol=0)
        found |= bool((d_last - d_best).abs().max() > 1e-6)
    assert found


def test_golden_objective_sampling_matches_rl_code() -> None:
    k, n, lamda = 10, 4, 0.6
    gen = torch.Generator().manual_seed(11)
    method = SDMGradOS(n=n, lamda=lamda, generator=gen)
    assert method.lr == 50.0 and not method.warm_start and method.keep_best
    mirror = torch.Generator().manual_seed(11)
    for (jac,) in sequence(5, steps=5, batches=1, k=k):
        sel = method.select(k)
        assert sel is not None
        while True:  # the same draws, redone here: Bernoulli(n/K) per objective, again if empty
            mask = torch.rand(k, generator=mirror, dtype=F64) < n / k
            if mask.any():
                break
        assert sel.tolist() == mask.nonzero().flatten().tolist()
        sub = jac[sel]
        out = method.combine(inputs_of([sub], selected=sel, k=k))
        assert out.weights is not None and out.weights.shape == (k,)
        outside = torch.ones(k, dtype=torch.bool)
        outside[sel] = False
        assert (out.weights[outside] == 0).all()
        assert (out.weights[sel] > 0).all()
        torch.testing.assert_close(out.weights @ jac, official_rl(sub, lamda, 50.0), atol=1e-10, rtol=0)
        # the same as SDMGrad on the sub-Jacobian
        plain = SDMGrad(lamda=lamda, batches=1, lr=50.0, warm_start=False).combine(inputs_of([sub]))
        assert plain.weights is not None
        torch.testing.assert_close(out.weights[sel], plain.weights, atol=1e-14, rtol=0)


# ------------------------------------------------------------------ exact solver
def qp_reference(m: np.ndarray) -> np.ndarray:
    """argmin_{w ∈ Δ} wᵀ M w by quadprog (M positive definite)."""
    k = m.shape[0]
    c = np.hstack([np.ones((k, 1)), np.eye(k)])
    b = np.hstack([[1.0], np.zeros(k)])
    return quadprog.solve_qp(2 * m, np.zeros(k), c, b, meq=1)[0]


@pytest.mark.parametrize("lamda", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_exact_one_batch_solves_the_qp(lamda: float, k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    jac = torch.randn(k, 12, generator=gen, dtype=F64) - 0.6 * torch.randn(1, 12, generator=gen, dtype=F64)
    g0 = jac.mean(0)
    h = (jac + lamda * g0).numpy()  # rows g_i + λ g0: ‖Gᵀw + λg0‖² = ‖Hᵀw‖² on the simplex
    w_ref = qp_reference(h @ h.T)
    out = SDMGrad(lamda=lamda, batches=1, solver="exact").combine(inputs_of([jac]))
    torch.testing.assert_close(out.info["w"], torch.from_numpy(w_ref), atol=1e-8, rtol=0)
    assert out.info["residual"] < 1e-10
    d = out.weights @ jac  # type: ignore[operator]
    expected = (torch.from_numpy(w_ref) @ jac + lamda * g0) / (1 + lamda)
    torch.testing.assert_close(d, expected, atol=1e-8, rtol=0)


def test_exact_three_batches_uses_psd_part_of_symmetrised_cross_gramian() -> None:
    xi1, xi2, zeta = sequence(6, steps=1, batches=3, k=4)[0]
    xi2 = xi2.clone()
    xi2[2] = -xi1[2]  # makes the symmetrised cross Gramian indefinite
    a = (xi1 @ xi2.T).numpy()
    sym = 0.5 * (a + a.T)
    evals, evecs = np.linalg.eigh(sym)
    assert evals.min() < -1e-3
    psd = (evecs * evals.clip(min=0)) @ evecs.T
    lamda = 0.3
    c = psd.mean(1)
    m = psd + lamda * (c[:, None] + c[None, :]) + lamda**2 * c.mean()
    w_ref = qp_reference(m + 1e-12 * np.eye(4))
    out = SDMGrad(lamda=lamda, batches=3, solver="exact").combine(inputs_of([xi1, xi2, zeta]))
    w = out.info["w"].numpy()
    assert abs(w @ m @ w - w_ref @ m @ w_ref) < 1e-9 * max(1.0, float(np.abs(m).max()))
    expected = (torch.from_numpy(w) @ zeta + lamda * zeta.mean(0)) / (1 + lamda)
    torch.testing.assert_close(out.weights @ zeta, expected, atol=1e-12, rtol=0)  # type: ignore[operator]


def test_official_solver_with_small_lr_converges_to_exact() -> None:
    (jac,) = sequence(7, steps=1, batches=1, k=4)[0]
    exact = SDMGrad(lamda=0.3, batches=1, solver="exact").combine(inputs_of([jac]))
    slow = SDMGrad(lamda=0.3, batches=1, lr=0.1, niter=3000).combine(inputs_of([jac]))
    torch.testing.assert_close(slow.info["w"], exact.info["w"], atol=1e-7, rtol=0)
    assert slow.info["residual"] < 1e-8


def test_lambda_zero_exact_is_mgda_and_non_conflicting() -> None:
    for k in (2, 3, 5, 10):
        for _, jac in jacobian_families(k):
            d = direction(SDMGrad(lamda=0.0, batches=1, solver="exact"), jac)
            assert_non_conflicting(d, jac, rtol=1e-5)


# ------------------------------------------------------------------ objective sampling
def test_selection_frequency_and_never_empty() -> None:
    k, n, draws = 10, 3, 3000
    method = SDMGradOS(n=n, generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(k)
    for _ in range(draws):
        sel = method.select(k)
        assert sel is not None and sel.numel() >= 1 and sel.dtype == torch.long
        assert sel.device.type == "cpu" and (sel[1:] > sel[:-1]).all()  # sorted, unique
        counts[sel] += 1
    freq = counts / draws
    # P(i ∈ S) = p / (1 − (1 − p)^K) with redraws of the empty set: 0.3 / (1 − 0.7^10) ≈ 0.3085
    assert ((freq - 0.3085).abs() < 0.04).all(), freq
    rare = SDMGradOS(n=1, generator=torch.Generator().manual_seed(1))
    sizes = [rare.select(50).numel() for _ in range(300)]  # type: ignore[union-attr]
    assert min(sizes) >= 1 and 0.7 < sum(sizes) / len(sizes) < 1.6
    full = SDMGradOS(n=8)
    assert full.select(5).tolist() == [0, 1, 2, 3, 4]  # type: ignore[union-attr]


def test_os_state_dict_restores_the_draws() -> None:
    torch.manual_seed(0)
    a = SDMGradOS(n=2)
    for _ in range(3):
        a.select(7)
    state = a.state_dict()
    assert set(state) == {"rng"}
    b = SDMGradOS(n=2)
    b.load_state_dict(state)
    for _ in range(10):
        assert a.select(7).tolist() == b.select(7).tolist()  # type: ignore[union-attr]
    c = SDMGradOS(n=2, generator=torch.Generator().manual_seed(3))
    c.select(7)
    d = SDMGradOS(n=2, generator=torch.Generator())
    d.load_state_dict(c.state_dict())
    assert c.select(7).tolist() == d.select(7).tolist()  # type: ignore[union-attr]


def test_os_rejects_warm_start_and_three_batches() -> None:
    with pytest.raises(ValueError):
        SDMGradOS(warm_start=True)
    with pytest.raises(ValueError):
        SDMGradOS(batches=3)
    assert SDMGradOS(lr=10.0).lr == 10.0
    assert SDMGradOS(lr=None).lr == 50.0


# ------------------------------------------------------------------ state and properties
def test_warm_start_state_round_trip() -> None:
    seq = sequence(8, steps=6, batches=3)
    a = SDMGrad(batches=3)
    for jacs in seq[:3]:
        run(a, jacs)
    assert set(a.state_dict()) == {"w"}
    b = SDMGrad(batches=3)
    b.load_state_dict(a.state_dict())
    for jacs in seq[3:]:
        torch.testing.assert_close(run(a, jacs)[0], run(b, jacs)[0], atol=0, rtol=0)
    # warm start matters: a fresh method gives another w on the same batches
    assert (run(SDMGrad(batches=3), seq[3])[1].info["w"] - run(a, seq[3])[1].info["w"]).abs().max() > 1e-6
    a.reset()
    assert a.state_dict() == {}
    with pytest.raises(ValueError, match="unknown state"):
        a.load_state_dict({"lambd": torch.zeros(3)})


def test_wrong_number_of_batches_raises() -> None:
    g = torch.randn(3, 5, dtype=F64)
    with pytest.raises(ValueError, match="3 independent batches"):
        SDMGrad(batches=3).combine(inputs_of([g]))


def test_invalid_arguments() -> None:
    for kwargs in ({"batches": 2}, {"solver": "fw"}, {"lamda": -1.0}, {"lr": 0.0}, {"momentum": 1.0}):
        with pytest.raises(ValueError):
            SDMGrad(**kwargs)


METHODS = {
    "one_official": lambda: SDMGrad(batches=1),
    "one_exact": lambda: SDMGrad(batches=1, solver="exact"),
    "three_official": lambda: SDMGrad(batches=3),
    "three_exact": lambda: SDMGrad(batches=3, solver="exact"),
    "os": lambda: SDMGradOS(n=100),  # n ≥ K: every objective, so permutations compare like with like
}


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(name: str, k: int) -> None:
    for _, jac in jacobian_families(k):
        method = METHODS[name]()
        for _ in range(3):
            assert_finite(direction(method, jac))
        assert_permutation_equivariant(_Fresh(METHODS[name]()), jac, atol=1e-9, rtol=1e-7)
    assert_zero_gives_zero(METHODS[name](), k)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_k1_passthrough(name: str) -> None:
    assert_k1_passthrough(METHODS[name]())


def test_os_properties_with_sampling() -> None:
    gen = torch.Generator().manual_seed(2)
    for _, jac in jacobian_families(10):
        method = SDMGradOS(n=3, generator=gen)
        for _ in range(3):
            sel = method.select(10)
            assert sel is not None
            out = method.combine(inputs_of([jac[sel]], selected=sel, k=10))
            assert out.weights is not None and torch.isfinite(out.weights).all()
            torch.testing.assert_close(out.weights.sum(), torch.tensor(1.0, dtype=F64))


# ------------------------------------------------------------------ end to end through Balancer.step
class Net(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 4), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(k))
        self.calls = [0] * k  # backward passes through each head's output

    def losses(self, batch: tuple[Tensor, Tensor], count: bool = True) -> list[Tensor]:
        """One scalar per head (a list: no stack/cat whose backward would visit every head)."""
        x, y = batch
        z = self.trunk(x)
        out = []
        for i, h in enumerate(self.heads):
            o = h(z)
            if count and o.requires_grad:
                o.register_hook(lambda g, i=i: self._count(i, g))
            out.append(((o[:, 0] - y[:, i]) ** 2).mean())
        return out

    def _count(self, i: int, g: Tensor) -> Tensor:
        self.calls[i] += 1
        return g


def grads_of(net: Net, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, list[Tensor]]:
    """(K×P_shared Jacobian, each head's own gradient), by plain autograd."""
    shared = list(net.trunk.parameters())
    losses = net.losses(batch, count=False)
    rows, heads = [], []
    for i, li in enumerate(losses):
        hp = list(net.heads[i].parameters())
        gs = torch.autograd.grad(li, shared + hp, retain_graph=True)
        rows.append(torch.cat([g.flatten() for g in gs[: len(shared)]]))
        heads.append(torch.cat([g.flatten() for g in gs[len(shared) :]]))
    return torch.stack(rows), heads


def make_batches(k: int, n: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 5, generator=gen, dtype=F64), torch.randn(8, k, generator=gen, dtype=F64))
        for _ in range(n)
    ]


def flat_grad(params: Any) -> Tensor:
    return torch.cat([p.grad.flatten() for p in params])


def test_balancer_step_three_batches_end_to_end() -> None:
    torch.manual_seed(0)
    k = 3
    net = Net(k).double()
    batches = make_batches(k, 3, seed=1)
    per = [grads_of(net, b) for b in batches]
    w_ref = torch.full((k,), 1.0 / k, dtype=F64)
    expected = official_libmtl(w_ref, per[2][0], per[0][0], per[1][0], 0.3)
    bal = molearn.Balancer(SDMGrad(batches=3), net.trunk.parameters(), net.heads.parameters(), mode="loop")
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    bal.step(net.losses, iter(batches), opt)
    torch.testing.assert_close(flat_grad(net.trunk.parameters()), expected, atol=1e-12, rtol=1e-10)
    for i, head in enumerate(net.heads):  # each head: the mean over the 3 batches of its own gradient
        mean = torch.stack([p[1][i] for p in per]).mean(0)
        torch.testing.assert_close(flat_grad(head.parameters()), mean, atol=1e-12, rtol=1e-10)
    assert net.calls == [3] * k


def test_balancer_step_objective_sampling_end_to_end() -> None:
    torch.manual_seed(0)
    k, n = 6, 2
    net = Net(k).double()
    (batch,) = make_batches(k, 1, seed=2)
    jac, heads = grads_of(net, batch)
    method = SDMGradOS(n=n, generator=torch.Generator().manual_seed(4))
    mirror = SDMGradOS(n=n, generator=torch.Generator().manual_seed(4))
    sel = mirror.select(k)
    assert sel is not None and 0 < sel.numel() < k, "pick another seed: the test needs a strict subset"
    bal = molearn.Balancer(method, net.trunk.parameters(), net.heads.parameters(), mode="loop")
    info = bal.step(net.losses, iter([batch]))
    assert info.weights is not None
    chosen = set(sel.tolist())
    assert net.calls == [1 if i in chosen else 0 for i in range(k)]  # no backward for the others
    torch.testing.assert_close(
        flat_grad(net.trunk.parameters()), official_rl(jac[sel], 0.6, 50.0), atol=1e-12, rtol=1e-10
    )
    for i, head in enumerate(net.heads):
        g = [p.grad for p in head.parameters()]
        if i in chosen:
            torch.testing.assert_close(flat_grad(head.parameters()), heads[i], atol=1e-12, rtol=1e-10)
        else:
            assert all(x is None or (x == 0).all() for x in g)
            assert info.weights[i] == 0
