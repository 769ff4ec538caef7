from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from molearn.methods import EPO, PBI, STCH, Inputs, Method, ModifiedTchebycheff, Tchebycheff
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

F64 = torch.float64
CLASSES: list[type[Method]] = [Tchebycheff, ModifiedTchebycheff, PBI, EPO]


def w_of(m: Method, losses: list[float] | torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
    out = m.combine(Inputs(losses=torch.as_tensor(losses, dtype=F64), gramian=gram))
    assert out.weights is not None
    return out.weights


# ---------------------------------------------------------------- bad preferences


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("pref", "match"),
    [([0.5, -0.1], "negative"), ([0.0, 0.0], "sum to zero|positive"), ([[0.5, 0.5]], "1-D"),
     ([float("nan"), 1.0], "finite")],
)
def test_bad_pref_is_a_clear_error(cls: type[Method], pref: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(pref=pref)  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", CLASSES)
def test_wrong_length_is_a_clear_error(cls: type[Method]) -> None:
    m = cls(pref=[0.2, 0.3, 0.5])  # type: ignore[call-arg]
    gram = torch.eye(2, dtype=F64)
    with pytest.raises(ValueError, match="3 entries but received 2"):
        w_of(m, [1.0, 2.0], gram)


@pytest.mark.parametrize("cls", [ModifiedTchebycheff, EPO])
def test_zero_entry_rejected_where_the_method_divides(cls: type[Method]) -> None:
    with pytest.raises(ValueError, match="positive"):
        cls(pref=[0.0, 1.0])  # type: ignore[call-arg]


def test_zero_entry_allowed_for_tchebycheff_and_pbi_and_normalised() -> None:
    t = Tchebycheff(pref=torch.tensor([0.0, 3.0]))
    assert t.pref is not None
    torch.testing.assert_close(t.pref, torch.tensor([0.0, 1.0], dtype=F64))
    p = PBI(pref=[2.0, 6.0])
    assert p.pref is not None
    torch.testing.assert_close(p.pref, torch.tensor([0.25, 0.75], dtype=F64))


def test_stch_already_rejects_bad_prefs() -> None:
    for bad in ([0.5, -0.1], [0.0, 0.0], [0.0, 1.0]):
        with pytest.raises(ValueError, match="positive"):
            STCH(pref=bad)


# ---------------------------------------------------------------- golden values


def test_tchebycheff_golden() -> None:
    losses = [1.0, 2.0, 1.5]
    pref = [0.6, 0.1, 0.3]
    ideal = [0.2, 0.0, 0.1]
    # p(f - z) = [0.48, 0.2, 0.42] -> objective 0
    torch.testing.assert_close(w_of(Tchebycheff(pref, ideal), losses), torch.tensor([1.0, 0, 0], dtype=F64))
    # (f - z)/p = [1.33, 20, 4.67] -> objective 1
    torch.testing.assert_close(
        w_of(ModifiedTchebycheff(pref, ideal), losses), torch.tensor([0, 1.0, 0], dtype=F64)
    )
    # uniform default: the largest loss
    torch.testing.assert_close(w_of(Tchebycheff(), losses), torch.tensor([0, 1.0, 0], dtype=F64))
    # scalar ideal, ties shared
    torch.testing.assert_close(
        w_of(Tchebycheff(ideal=1.0), [3.0, 1.0, 3.0]), torch.tensor([0.5, 0, 0.5], dtype=F64)
    )


def test_tchebycheff_matches_libmoon_definitions_by_autograd() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        f = torch.rand(4, generator=gen, dtype=F64) + 0.1
        p = torch.rand(4, generator=gen, dtype=F64) + 0.05
        z = torch.rand(4, generator=gen, dtype=F64) * 0.1
        for cls, score in ((Tchebycheff, p * (f - z)), (ModifiedTchebycheff, (f - z) / p)):
            v = f.clone().requires_grad_(True)
            # LibMOON tche/mtche: the loss at the argmax of the (weighted) score
            v[torch.argmax(score)].backward()
            torch.testing.assert_close(w_of(cls(p, z), f), v.grad)


def test_pbi_matches_autograd_and_hand_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    for theta in (0.0, 1.0, 5.0):
        for _ in range(10):
            f = torch.rand(3, generator=gen, dtype=F64) + 0.1
            p = torch.rand(3, generator=gen, dtype=F64) + 0.05
            z = torch.rand(3, generator=gen, dtype=F64) * 0.1
            v = f.clone().requires_grad_(True)
            u = p / p.norm()
            d1 = ((v - z) * u).sum()
            d2 = (v - z - d1 * u).norm()
            (d1 + theta * d2).backward()
            torch.testing.assert_close(w_of(PBI(p, theta, z), f), v.grad)
    # hand-computed: p = (1, 1), f = (1, 0): u = (1,1)/√2, d1 = 1/√2, r = (1/2, -1/2), d2 = 1/√2
    s = 2**-0.5
    torch.testing.assert_close(
        w_of(PBI([1.0, 1.0], theta=2.0), [1.0, 0.0]), torch.tensor([s + 2 * s, s - 2 * s], dtype=F64)
    )
    # on the ray: d2 = 0 -> weight u
    on_ray = torch.tensor([1.0, 3.0], dtype=F64)
    torch.testing.assert_close(w_of(PBI([1.0, 3.0]), on_ray), on_ray / 10**0.5)


# ---------------------------------------------------------------- EPO against the official LP (cvxpy)


def official_epo_alpha(losses: np.ndarray, gram: np.ndarray, r: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """The official ``EPO_LP.get_alpha`` (C=True), written out with cvxpy/HiGHS (LibMOON's log clip)."""
    m = len(losses)
    rl = r * losses
    lhat = rl / rl.sum()
    mu = float(np.sum(lhat * np.log(lhat * m)))
    a = r * (np.log(np.clip(lhat * m, 1e-3, None)) - mu)
    ca = gram @ a
    alpha = cp.Variable(m)
    simplex = [alpha >= 0, cp.sum(alpha) == 1]
    if mu > eps:
        rhs = ca.copy()
        if (ca > 0).any():
            rhs[ca > 0] = -np.inf
            rhs[rl == rl.max()] = 0
        else:
            rhs = np.zeros(m)
        rows = np.isfinite(rhs)
        cons = simplex + ([gram[rows] @ alpha >= rhs[rows]] if rows.any() else [])
        cp.Problem(cp.Maximize(alpha @ ca), cons).solve(solver=cp.HIGHS)
    else:
        cons = [*simplex, alpha @ ca >= min(ca.max(), 0.0), gram @ alpha >= 0]
        cp.Problem(cp.Maximize(cp.sum(gram @ alpha)), cons).solve(solver=cp.HIGHS)
    return np.asarray(alpha.value)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_epo_matches_official_lp(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    checked = {"bal": 0, "dom": 0}
    for trial in range(12):
        jac = torch.randn(k, 6, generator=gen, dtype=F64)
        r = torch.rand(k, generator=gen, dtype=F64) + 0.2
        r = r / r.sum()
        if trial % 3 == 0:  # on the ray: descent LP
            losses = (1.0 / r) * (1 + 1e-4 * torch.rand(k, generator=gen, dtype=F64))
        else:
            losses = torch.rand(k, generator=gen, dtype=F64) + 0.1
        gram = jac @ jac.T
        out = EPO(r).combine(Inputs(losses=losses, gramian=gram))
        assert out.weights is not None
        ref = official_epo_alpha(losses.numpy(), gram.numpy(), r.numpy())
        checked["bal" if bool(out.info["balance"]) else "dom"] += 1
        assert bool(out.info["feasible"])
        # compare the LP objective value (alpha may be non-unique) and alpha itself where unique
        torch.testing.assert_close(out.weights / k, torch.as_tensor(ref), atol=1e-6, rtol=1e-6)
    assert checked["bal"] > 0 and checked["dom"] > 0


def test_epo_infeasible_falls_back_to_pref() -> None:
    # two opposite gradients, balance LP with a constraint that cannot hold: official patch r / sum(r)
    jac = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    gram = jac @ jac.T
    r = torch.tensor([0.25, 0.75], dtype=F64)
    losses = torch.tensor([1.0, 5.0], dtype=F64)
    out = EPO(r).combine(Inputs(losses=losses, gramian=gram))
    ref = official_epo_alpha(losses.numpy(), gram.numpy(), r.numpy())
    assert out.weights is not None
    torch.testing.assert_close(out.weights / 2, torch.as_tensor(ref), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("pref", [[0.5, 0.5], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
@pytest.mark.parametrize("x0", [[0.2, 0.1], [0.9, 0.6], [-0.3, 0.2]])
def test_epo_reaches_the_preference_ray_on_a_convex_quadratic(pref: list[float], x0: list[float]) -> None:
    """f_i(x) = ‖x - c_i‖², front = segment c1-c2; EPO must end on the front with r_1 f_1 ≈ r_2 f_2
    (to EPO's own tolerance: non-uniformity μ ≤ eps = 1e-4, i.e. r_i f_i equal to a few percent).
    Starts where the gradients conflict: from far away (aligned gradients) the official LP, which
    molearn matches, may descend one objective to its minimum first."""
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    x = torch.tensor(x0, dtype=F64)
    m = EPO(pref)
    for _ in range(400):
        f = ((x - c) ** 2).sum(1)
        jac = 2 * (x - c)
        d = direction(m, jac, f)
        x = x - 0.02 * d
    f = ((x - c) ** 2).sum(1)
    r = torch.tensor(pref, dtype=F64)
    rf = r * f
    assert (rf[0] - rf[1]).abs() / rf.mean() < 0.05, f"not on the ray: r*f = {rf}"
    assert (x.sum() - 1).abs() < 1e-6 and bool((x >= 0).all()), f"not Pareto optimal: x = {x}"
    out = m.combine(Inputs(losses=f, gramian=4 * (x - c) @ (x - c).T))
    assert not bool(out.info["balance"]) and bool(out.info["mu"] <= 1e-4)
    # the point is not the linear-scalarisation optimum with weights r (which has f ∝ r², not 1/r)
    if pref != [0.5, 0.5]:
        x_ls = r  # minimiser of Σ r_i ‖x - c_i‖² is Σ r_i c_i = r
        assert (x - x_ls).norm() > 0.05


def test_epo_rejects_large_k() -> None:
    with pytest.raises(ValueError, match="K <= 8"):
        EPO().combine(Inputs(losses=torch.ones(9, dtype=F64), gramian=torch.eye(9, dtype=F64)))


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(cls: type[Method], k: int) -> None:
    if cls is EPO and k > 8:
        pytest.skip("EPO enumerates vertices: K <= 8")
    for family, jac in jacobian_families(k):
        m = cls()
        assert_finite(direction(m, jac))
        if family in ("normal", "conflicting", "scaled_1e-07", "scaled_1e+07"):
            assert_permutation_equivariant(m, jac)
    assert_k1_passthrough(cls(), exact=True)
    assert_zero_gives_zero(cls(), k=min(k, 5))


def test_epo_scale_invariance() -> None:
    jac = torch.randn(3, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    m = EPO([0.2, 0.3, 0.5])
    w = w_of(m, losses, jac @ jac.T)
    for s in (1e-7, 1e7):
        torch.testing.assert_close(w_of(m, losses, s**2 * jac @ jac.T), w)


def test_dtype_and_device_follow_losses() -> None:
    for m in (Tchebycheff(), ModifiedTchebycheff(), PBI()):
        out = m.combine(Inputs(losses=torch.tensor([1.0, 2.0])))
        assert out.weights is not None and out.weights.dtype == torch.float32
    g = torch.eye(2)
    out = EPO().combine(Inputs(losses=torch.tensor([1.0, 2.0]), gramian=g))
    assert out.weights is not None and out.weights.dtype == torch.float32


@pytest.mark.parametrize("cls", CLASSES)
def test_through_the_balancer(cls: type[Method]) -> None:
    """Through molearn.Balancer, the shared gradient equals Σ w_i ∇L_i with the method's own weights."""
    import molearn

    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2).double()
    x = torch.randn(8, 3, dtype=F64)
    target = torch.randn(8, 2, dtype=F64)

    def losses() -> torch.Tensor:
        out = lin(x)
        return ((out - target) ** 2).mean(0)

    pref = [0.3, 0.7]
    bal = molearn.Balancer(cls(pref), lin.parameters())  # type: ignore[call-arg]
    bal.backward(losses())
    got = torch.cat([p.grad.flatten() for p in lin.parameters()])  # type: ignore[union-attr]
    ls = losses()
    params = list(lin.parameters())
    rows = [torch.autograd.grad(ls[i], params, retain_graph=True) for i in range(2)]
    jac = torch.stack([torch.cat([g.flatten() for g in row]) for row in rows])
    w = w_of(cls(pref), ls.detach(), jac @ jac.T)  # type: ignore[call-arg]
    torch.testing.assert_close(got, w @ jac)
