"""LogLosses (log-MGDA, log-CAGrad, log-IMTL, ...): golden against the official log_* classes, the weight
map back to the raw gradients, extra batches, selection, validation and delegation."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import molearn
from molearn.methods import (
    DBMTL,
    EW,
    FAMO,
    IMTLG,
    MGDA,
    CAGrad,
    GradDrop,
    Inputs,
    LogLosses,
    Method,
    Needs,
    Output,
    PCGrad,
    get,
)

from ._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    make_inputs,
)

quadprog = pytest.importorskip("quadprog")
scipy_optimize = pytest.importorskip("scipy.optimize")

EPS = 1e-8  # official EPS of LOG_MGDA / LOG_IMTLG


def case(k: int, seed: int, p: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(k, p, generator=gen, dtype=torch.float64)
    jac = jac - 0.5 * jac.mean(0)
    losses = torch.rand(k, generator=gen, dtype=torch.float64) * 3 + 0.05
    return jac, losses


def update(method: Method, jac: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    return direction(method, jac, losses)


# ---- independent transcriptions of the official classes (OptMN-Lab/fairgrad methods/weight_methods.py)


def min_norm_k2_official(gram: np.ndarray) -> np.ndarray:
    """MinNormSolver for two vectors (closed form, clamped to [0.001, 0.999])."""
    v11, v12, v22 = gram[0, 0], gram[0, 1], gram[1, 1]
    if v12 >= v11:
        gamma = 0.999
    elif v12 >= v22:
        gamma = 0.001
    else:
        gamma = -1.0 * ((v12 - v22) / (v11 + v22 - 2 * v12))
    return np.array([gamma, 1 - gamma])


def min_norm_exact(gram: np.ndarray) -> np.ndarray:
    k = gram.shape[0]
    c = np.concatenate([np.ones((k, 1)), np.eye(k)], axis=1)
    b = np.concatenate([[1.0], np.zeros(k)])
    return quadprog.solve_qp(gram, np.zeros(k), c, b, meq=1)[0]


def official_log_mgda(jac: torch.Tensor, losses: torch.Tensor, solve: Any) -> torch.Tensor:
    """LOG_MGDA: min-norm weights ``sol`` of the gradients of log(L + 1e-8); back-propagates
    Σ log(L_i + 1e-8) sol_i / c, c = Σ sol_i / (L_i + 1e-8) (detached). Returns the shared update."""
    grads = [jac[i] / (losses[i] + EPS) for i in range(len(losses))]  # ∇ log(L + eps)
    gram = torch.stack(grads) @ torch.stack(grads).T
    sol = solve(gram.numpy())
    c = sum(sol[i] / (losses[i] + EPS) for i in range(len(sol)))
    return sum(sol[i] / c * grads[i] for i in range(len(sol)))  # type: ignore[return-value]


def _polish_official_cagrad(a: np.ndarray, b: np.ndarray, c: float, x: np.ndarray) -> np.ndarray:
    """The exact minimiser of the official objective ``x·a·b + c·sqrt(x·a·x + 1e-8)`` on the simplex, from
    SLSQP's point: Newton (``scipy.optimize.root``) on the KKT equations of the support SLSQP found
    (gradient equal on the support, weights summing to 1), checked against the KKT inequalities.

    SLSQP stalls short of the minimiser: on ``case(5, 1)`` it stops (also with ftol 1e-16, also when
    restarted from its own result) at a point whose objective is 8.3e-9 above this one's, with
    stationarity violated by 1.4e-4 on the support and weights 5e-6 away."""
    support = x > 1e-9
    idx = np.flatnonzero(support)

    def grad(w: np.ndarray) -> np.ndarray:
        return a @ b + c * (a @ w) / np.sqrt(w @ a @ w + 1e-8)

    def kkt(z: np.ndarray) -> np.ndarray:
        w = np.zeros_like(x)
        w[idx] = z[:-1]
        return np.concatenate([grad(w)[idx] - z[-1], [w.sum() - 1.0]])

    start = np.concatenate([x[idx], [grad(x)[idx] @ x[idx]]])
    sol = scipy_optimize.root(kkt, start, method="hybr", options={"xtol": 1e-15})
    w = np.zeros_like(x)
    w[idx] = sol.x[:-1]
    assert (w >= 0).all() and np.abs(kkt(sol.x)).max() < 1e-12, "polished point is not a KKT point"
    assert (grad(w)[~support] >= sol.x[-1] - 1e-12).all(), "SLSQP's support is not optimal"
    return w


def official_log_cagrad(
    jac: torch.Tensor, losses: torch.Tensor, alpha: float = 0.4, ftol: float = 1e-6, polish: bool = False
) -> torch.Tensor:
    """LOG_CAGrad: CAGrad (SLSQP, rescale 1) on the gradients of log(L) (no eps); ×K in overwrite_grad.
    ``ftol``: SLSQP's stopping tolerance (official: scipy's default 1e-6); ``polish``: replace SLSQP's
    point by the exact minimiser of the same objective (:func:`_polish_official_cagrad`)."""
    k = len(losses)
    grads = (jac / losses.unsqueeze(1)).T  # [dim, K]
    gg = grads.T @ grads
    g0_norm = float((gg.mean() + 1e-8).sqrt())
    x_start = np.ones(k) / k
    a = gg.numpy()
    b = x_start.copy()
    c = alpha * g0_norm + 1e-8

    def objfn(x: np.ndarray) -> float:
        return float(x @ a @ b + c * np.sqrt(x @ a @ x + 1e-8))

    res = scipy_optimize.minimize(
        objfn,
        x_start,
        bounds=tuple((0, 1) for _ in x_start),
        constraints={"type": "eq", "fun": lambda x: 1 - sum(x)},
        options={"ftol": ftol, "maxiter": 1000},
    )
    x = res.x if not polish else _polish_official_cagrad(a, b, c, res.x)
    ww = torch.from_numpy(x)
    gw = (grads * ww.view(1, -1)).sum(1)
    lmbda = c / (gw.norm() + 1e-8)
    g = grads.mean(1) + lmbda * gw
    return g / (1 + alpha**2) * k


def official_log_imtlg(jac: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """LOG_IMTLG: IMTL-G closed form on the gradients of log(L + 1e-8); back-propagates Σ α_i log(L_i+eps)."""
    grads = jac / (losses + EPS).unsqueeze(1)
    units = grads / grads.norm(dim=1, keepdim=True)
    d = grads[0] - grads[1:]
    u = units[0] - units[1:]
    alpha_ = (grads[0] @ u.T) @ torch.inverse(d @ u.T)
    alpha = torch.cat([(1 - alpha_.sum()).unsqueeze(-1), alpha_])
    return (alpha / (losses + EPS)) @ jac  # ∇ Σ α_i log(L_i + eps) on the shared parameters


# ---- golden tests


def test_golden_log_mgda_k2_official_solver() -> None:
    for seed in range(4):
        jac, losses = case(2, seed)
        expected = official_log_mgda(jac, losses, min_norm_k2_official)
        method = LogLosses("mgda", solver="frank_wolfe", sum_to_one=True)
        torch.testing.assert_close(update(method, jac, losses), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("k", [3, 5])
def test_golden_log_mgda_exact_solver(k: int) -> None:
    for seed in range(3):
        jac, losses = case(k, seed)
        expected = official_log_mgda(jac, losses, min_norm_exact)
        method = LogLosses("mgda", sum_to_one=True)
        torch.testing.assert_close(update(method, jac, losses), expected, rtol=1e-8, atol=1e-10)
        # the raw weights sum to one (the official 1/c normalisation)
        out = method.combine(make_inputs(method, jac, losses))
        assert out.weights is not None
        torch.testing.assert_close(out.weights.sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_golden_log_cagrad(k: int) -> None:
    """The official formula with SLSQP run to ftol 1e-12 and then polished to the exact minimiser of the
    official objective (SLSQP's default ftol 1e-6 stops early: relative differences up to ~5e-4 in the
    direction here; even at 1e-12 it stalls 3.5e-6 away on case(5, 1), on the official side: see
    ``_polish_official_cagrad``)."""
    for seed in range(3):
        jac, losses = case(k, seed)
        expected = official_log_cagrad(jac, losses, ftol=1e-12, polish=True)
        method = LogLosses("cagrad", c=0.4, scale="K", log_eps=0.0)
        got = update(method, jac, losses)
        assert (got - expected).norm() <= 1e-6 * expected.norm()


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_golden_log_imtlg(k: int) -> None:
    for seed in range(3):
        jac, losses = case(k, seed)
        expected = official_log_imtlg(jac, losses)
        torch.testing.assert_close(update(LogLosses("imtlg"), jac, losses), expected, rtol=1e-9, atol=1e-10)


def _inner_on_transformed(inner: Method, jac: torch.Tensor, losses: torch.Tensor, eps: float) -> torch.Tensor:
    """The inner method run by hand on the rows g_i / (L_i + eps) and the losses log(L_i + eps)."""
    shifted = losses + eps
    return direction(inner, jac / shifted.unsqueeze(1), shifted.log())


INNER: dict[str, Any] = {
    "mgda": lambda: MGDA(),
    "mgda_fw": lambda: MGDA(solver="frank_wolfe"),
    "cagrad": lambda: CAGrad(c=0.4),
    "imtlg": lambda: IMTLG(),
    "fairgrad": lambda: get("fairgrad"),
    "fairgrad_sgd": lambda: get("fairgrad", solver="sgd", alpha=1.0),
    "nashmtl": lambda: get("nashmtl"),
    "upgrad": lambda: get("upgrad"),
    "alignedmtl": lambda: get("alignedmtl"),
    "pcgrad": lambda: PCGrad(generator=torch.Generator().manual_seed(0)),
    "ew": lambda: EW(),
    "gls": lambda: get("gls"),
    "dbmtl": lambda: DBMTL(),  # returns a direction
    "graddrop": lambda: GradDrop(generator=torch.Generator().manual_seed(0)),  # a direction, random
}


@pytest.mark.parametrize("name", sorted(INNER))
@pytest.mark.parametrize("eps", [0.0, 1e-8, 0.5])
def test_update_equals_inner_method_on_log_loss_gradients(name: str, eps: float) -> None:
    """The engine's update Σ w_i g_i (or the passed-through direction) is the inner method's update on
    the transformed Jacobian, and the weights map back as w_i = w'_i / (L_i + eps)."""
    for k in (2, 4):
        jac, losses = case(k, seed=k)
        losses = losses + 1.0  # log-losses > 0 (GLS needs positive objectives)
        wrapped = LogLosses(INNER[name](), log_eps=eps)
        expected = _inner_on_transformed(INNER[name](), jac, losses, eps)
        torch.testing.assert_close(update(wrapped, jac, losses), expected, rtol=1e-10, atol=1e-12)
        out = LogLosses(INNER[name](), log_eps=eps).combine(make_inputs(wrapped, jac, losses))
        inner_inputs = make_inputs(INNER[name](), jac / (losses + eps).unsqueeze(1), (losses + eps).log())
        inner_out = INNER[name]().combine(inner_inputs)
        if inner_out.weights is not None:
            assert out.weights is not None
            torch.testing.assert_close(out.weights, inner_out.weights / (losses + eps), rtol=1e-10, atol=0)
        else:
            assert out.weights is None and out.direction is not None


def test_log_ew_is_the_scale_invariant_baseline() -> None:
    """LogLosses("ew"): ∇ Σ log L_i = Σ g_i / L_i (the official ``scaleinvls``)."""
    jac, losses = case(3, 1)
    method = LogLosses("ew", log_eps=0.0)
    torch.testing.assert_close(update(method, jac, losses), (1 / losses) @ jac)
    assert method.task_grad == "weighted"


def test_loss_scale_invariance_of_log_mgda() -> None:
    """Scaling one loss (and its gradient) by s > 0 leaves log-MGDA's direction unchanged (log L + log s)."""
    jac, losses = case(3, 2)
    s = torch.tensor([1.0, 1e3, 1e-2], dtype=torch.float64)
    a = update(LogLosses("mgda", log_eps=0.0), jac, losses)
    b = update(LogLosses("mgda", log_eps=0.0), jac * s.unsqueeze(1), losses * s)
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    # plain MGDA is not invariant
    assert not torch.allclose(update(MGDA(), jac, losses), update(MGDA(), jac * s.unsqueeze(1), losses * s))


# ---- extra batches, selection, after_step, state


class _TwoBatch(Method):
    """Test double: a 2-batch Gramian method returning (diag(G_b))^{-1/2}-weights for both batches."""

    needs: ClassVar[Needs] = Needs(gramian=True, batches=2)

    def __init__(self) -> None:
        self.seen: list[Inputs] = []
        self.after: list[tuple[torch.Tensor, torch.Tensor]] = []

    def combine(self, inputs: Inputs) -> Output:
        self.seen.append(inputs)
        assert inputs.gramian is not None and inputs.extra[0].gramian is not None
        w = inputs.gramian.diagonal().rsqrt() + inputs.losses
        w_extra = inputs.extra[0].gramian.diagonal().rsqrt() + inputs.extra[0].losses
        return Output(weights=w, extra_weights=[w_extra], info={"tag": torch.tensor(1.0)})

    def after_step(self, losses_before: torch.Tensor, losses_after: torch.Tensor) -> None:
        self.after.append((losses_before, losses_after))


class _Select(Method):
    """Test double: selects objectives [0, 2] and returns the transformed diagonal as weights."""

    needs: ClassVar[Needs] = Needs(gramian=True)

    def select(self, num_objectives: int) -> torch.Tensor | None:
        return torch.tensor([0, 2])

    def combine(self, inputs: Inputs) -> Output:
        assert inputs.gramian is not None and inputs.selected is not None
        w = torch.zeros_like(inputs.losses)
        w[inputs.selected] = inputs.gramian.diagonal() + inputs.losses[inputs.selected]
        return Output(weights=w)


def test_extra_batches_use_their_own_losses() -> None:
    jac_a, losses_a = case(3, 1)  # drawn first (extra)
    jac_b, losses_b = case(3, 2)  # this batch
    inner = _TwoBatch()
    method = LogLosses(inner, log_eps=0.0)
    assert method.needs == Needs(gramian=True, batches=2)
    extra = Inputs(losses=losses_a, gramian=jac_a @ jac_a.T)
    out = method.combine(Inputs(losses=losses_b, gramian=jac_b @ jac_b.T, extra=[extra]))
    seen = inner.seen[-1]
    assert seen.gramian is not None and seen.extra[0].gramian is not None
    tb, ta = jac_b / losses_b.unsqueeze(1), jac_a / losses_a.unsqueeze(1)
    torch.testing.assert_close(seen.gramian, tb @ tb.T)
    torch.testing.assert_close(seen.extra[0].gramian, ta @ ta.T)
    torch.testing.assert_close(seen.losses, losses_b.log())
    torch.testing.assert_close(seen.extra[0].losses, losses_a.log())
    assert out.weights is not None and out.extra_weights is not None
    torch.testing.assert_close(out.weights, (tb.norm(dim=1).reciprocal() + losses_b.log()) / losses_b)
    w_extra = (ta.norm(dim=1).reciprocal() + losses_a.log()) / losses_a
    torch.testing.assert_close(out.extra_weights[0], w_extra)
    assert "tag" in out.info
    # a non-positive loss in the extra batch is named with its batch
    bad = Inputs(losses=losses_a * torch.tensor([1.0, -1.0, 1.0]), gramian=jac_a @ jac_a.T)
    with pytest.raises(ValueError, match=r"objective\(s\) \[1 \(batch 0\)\]"):
        method.combine(Inputs(losses=losses_b, gramian=jac_b @ jac_b.T, extra=[bad]))


def test_selection_transforms_the_selected_rows() -> None:
    jac, losses = case(4, 3)
    method = LogLosses(_Select(), log_eps=0.0)
    sel = method.select(4)
    assert sel is not None and sel.tolist() == [0, 2]
    rows = jac[sel]
    out = method.combine(Inputs(losses=losses, gramian=rows @ rows.T, selected=sel))
    assert out.weights is not None
    expected = torch.zeros(4, dtype=torch.float64)
    expected[sel] = ((rows.norm(dim=1) / losses[sel]) ** 2 + losses[sel].log()) / losses[sel]
    torch.testing.assert_close(out.weights, expected)


def test_after_step_gets_log_losses_and_state_delegates() -> None:
    inner = _TwoBatch()
    method = LogLosses(inner, log_eps=0.5)
    before = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    method.after_step(before, before * 0.5)
    torch.testing.assert_close(inner.after[-1][0], (before + 0.5).log())
    torch.testing.assert_close(inner.after[-1][1], (before * 0.5 + 0.5).log())
    with pytest.raises(ValueError, match="after"):
        LogLosses(_TwoBatch(), log_eps=0.0).after_step(before, before * 0.0)

    famo = LogLosses("famo")
    assert famo.needs.after_step and famo.task_grad == FAMO.task_grad
    jac, losses = case(3, 4)
    losses = losses + 1.5  # FAMO takes the log of its objectives: log L must be positive
    for _ in range(2):
        update(famo, jac, losses)
        famo.after_step(losses, losses * 0.8)
    state = famo.state_dict()
    assert state.keys() == famo.method.state_dict().keys() and state
    restored = LogLosses("famo")
    restored.load_state_dict(state)
    torch.testing.assert_close(update(restored, jac, losses), update(famo, jac, losses))
    famo.reset()
    torch.testing.assert_close(update(famo, jac, losses), update(LogLosses("famo"), jac, losses))


# ---- validation, registry, properties


def test_non_positive_loss_raises_naming_the_objective() -> None:
    jac, _ = case(3, 5)
    for bad in (0.0, -0.3, float("nan")):
        losses = torch.tensor([1.0, bad, 2.0], dtype=torch.float64)
        with pytest.raises(ValueError, match=r"objective\(s\) \[1\]"):
            update(LogLosses("mgda", log_eps=0.0), jac, losses)
    # log_eps shifts the admissible range (official LOG_MGDA accepts a zero loss)
    zero = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    assert torch.isfinite(update(LogLosses("mgda"), jac, zero)).all()
    # without the check, the shifted losses are floored at 1e-12: finite, and a huge weight on objective 1
    out = LogLosses("ew", log_eps=0.0, check_positive=False).combine(Inputs(losses=zero))
    assert out.weights is not None and torch.isfinite(out.weights).all() and out.weights[1] == 1e12


def test_construction_and_registry() -> None:
    m = get("loglosses", method="cagrad", c=0.4)
    assert isinstance(m, LogLosses) and isinstance(m.method, CAGrad) and m.method.c == 0.4
    assert isinstance(get("log_losses").method, MGDA)  # default inner: log-MGDA
    assert isinstance(LogLosses().method, MGDA)
    assert LogLosses("dbmtl").needs == DBMTL.needs and LogLosses("mgda").needs == MGDA.needs
    assert LogLosses("mgda").task_grad == "own" and LogLosses("gls").task_grad == "weighted"
    with pytest.raises(TypeError):
        LogLosses(MGDA(), c=0.4)
    with pytest.raises(ValueError, match="log_eps"):
        LogLosses(log_eps=-1.0)
    with pytest.raises(ValueError, match="direction"):
        jac, losses = case(3, 6)
        update(LogLosses("dbmtl", sum_to_one=True), jac, losses)
    assert "LogLosses(method=MGDA(" in repr(LogLosses())


def test_balancer_uses_inner_needs_and_task_grad() -> None:
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 5).double(), nn.Linear(5, 3).double()
    x = torch.randn(8, 4, dtype=torch.float64)

    def losses() -> torch.Tensor:
        return heads(torch.tanh(trunk(x))).pow(2).mean(0) + 0.1

    ls = losses()

    def grads(module: nn.Module) -> torch.Tensor:
        params = list(module.parameters())
        rows = [torch.autograd.grad(li, params, retain_graph=True) for li in ls]
        return torch.stack([torch.cat([g.flatten() for g in row]) for row in rows])

    jac, head_jac = grads(trunk), grads(heads)
    for name, inner_task_grad in (("mgda", "own"), ("ew", "weighted")):
        method = LogLosses(name)
        for p in [*trunk.parameters(), *heads.parameters()]:
            p.grad = None
        molearn.Balancer(method, trunk.parameters(), heads.parameters()).backward(losses())
        expected = update(LogLosses(name), jac, ls.detach())
        got = torch.cat([p.grad.flatten() for p in trunk.parameters()])  # type: ignore[union-attr]
        torch.testing.assert_close(got, expected)
        head_grad = torch.cat([p.grad.flatten() for p in heads.parameters()])  # type: ignore[union-attr]
        c = (1 / (ls.detach() + EPS)) if inner_task_grad == "weighted" else torch.ones(3, dtype=torch.float64)
        torch.testing.assert_close(head_grad, c @ head_jac)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties_over_families(k: int) -> None:
    method = LogLosses("mgda")
    losses = torch.linspace(0.5, 2.0, k, dtype=torch.float64)
    for _, jac in jacobian_families(k):
        d = direction(method, jac, losses)
        assert_finite(d)
        # log-MGDA's direction does not conflict with any objective (MGDA on positive rescalings)
        assert (jac @ d >= -1e-6 * jac.norm(dim=1) * d.norm() - 1e-12).all()
        assert_permutation_equivariant(method, jac)
    assert_k1_passthrough(LogLosses("mgda"), exact=False)
    assert_zero_gives_zero(LogLosses("mgda"))
    assert_zero_gives_zero(LogLosses("imtlg"))
