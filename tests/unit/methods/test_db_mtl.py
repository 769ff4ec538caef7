from __future__ import annotations

import pytest
import torch

from molearn.methods import DBMTL, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)


def _steps(k: int = 3, p: int = 12, n: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(k, p, generator=gen, dtype=torch.float64),
            torch.rand(k, generator=gen, dtype=torch.float64) + 0.2,
        )
        for _ in range(n)
    ]


def _run(m: DBMTL, steps: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    return [direction(m, jac, losses) for jac, losses in steps]


def _reference(
    steps: list[tuple[torch.Tensor, torch.Tensor]], beta: float, sigma: float
) -> list[torch.Tensor]:
    """LibMTL DB_MTL from its formulas: grads of log(L+1e-8), EMA with beta/t^sigma, max-norm scale."""
    buf = torch.zeros_like(steps[0][0])
    out = []
    for t, (jac, losses) in enumerate(steps, start=1):
        g = jac / (losses + 1e-8).unsqueeze(1)
        buf = g + beta / t**sigma * (buf - g)
        norms = buf.norm(dim=-1)
        alpha = norms.max() / (norms + 1e-8)
        out.append(sum(alpha[i] * buf[i] for i in range(len(alpha))))
    return out


def test_declares_jacobian_and_libmtl_defaults() -> None:
    assert DBMTL.needs == Needs(jacobian=True)
    m = DBMTL()
    assert (m.beta, m.beta_sigma) == (0.9, 0.0)


@pytest.mark.parametrize(("beta", "sigma"), [(0.9, 0.0), (0.5, 0.5), (0.0, 0.0)])
def test_matches_libmtl_formula(beta: float, sigma: float) -> None:
    steps = _steps()
    got = _run(DBMTL(beta, sigma), steps)
    for a, b in zip(got, _reference(steps, beta, sigma)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


def test_first_step_by_hand() -> None:
    jac = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    losses = torch.tensor([1.0, 2.0], dtype=torch.float64)
    # buffer = 0.1 * g_i / L_i = [[.3, .4], [0, .05]]; norms .5 and .05; scales 1 and 10
    d = direction(DBMTL(), jac, losses)
    torch.testing.assert_close(d, torch.tensor([0.3, 0.4 + 0.5], dtype=torch.float64))


def test_rows_are_rescaled_to_the_largest_norm() -> None:
    jac, losses = _steps(4, 9, 1)[0]
    m = DBMTL()
    out = m.combine(Inputs(losses=losses, jacobian=jac))
    buf = m.state_dict()["buffer"]
    scaled = out.info["scale"].unsqueeze(1) * buf
    norms = scaled.norm(dim=1)
    torch.testing.assert_close(norms, norms.max().expand(4))


def test_invariant_to_loss_scale() -> None:
    # L_i -> c_i L_i (and g_i -> c_i g_i) leaves the log-loss gradients, hence the direction, unchanged
    steps = _steps(3, 10, 4)
    c = torch.tensor([0.1, 1.0, 50.0], dtype=torch.float64)  # (up to the 1e-8 added to L)
    scaled = [(c.unsqueeze(1) * jac, c * losses) for jac, losses in steps]
    for a, b in zip(_run(DBMTL(), steps), _run(DBMTL(), scaled)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_equivariant_to_gradient_scale() -> None:
    steps = _steps(3, 10, 3)
    for s in (1e-9, 1e6):
        scaled = [(s * jac, losses) for jac, losses in steps]
        for a, b in zip(_run(DBMTL(), steps), _run(DBMTL(), scaled)):
            torch.testing.assert_close(b, s * a)


def test_state_dict_round_trip_reset_and_shape_check() -> None:
    steps = _steps(3, 8, 7)
    ref = _run(DBMTL(0.8, 0.5), steps)
    m = DBMTL(0.8, 0.5)
    _run(m, steps[:3])
    m2 = DBMTL(0.8, 0.5)
    m2.load_state_dict(m.state_dict())
    for a, b in zip(_run(m2, steps[3:]), ref[3:]):
        torch.testing.assert_close(a, b)
    m.reset()
    assert m.state_dict() == {}
    torch.testing.assert_close(_run(m, steps[:1])[0], ref[0])
    with pytest.raises(ValueError, match="buffer has shape"):
        direction(m, torch.randn(3, 9, dtype=torch.float64))


def test_state_keeps_jacobian_dtype() -> None:
    m = DBMTL()
    out = m.combine(Inputs(losses=torch.ones(2), jacobian=torch.randn(2, 5)))
    assert out.direction is not None and out.direction.dtype == torch.float32
    assert m.state_dict()["buffer"].dtype == torch.float32


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for _name, jac in jacobian_families(k):
        assert_finite(direction(DBMTL(), jac))
    assert_zero_gives_zero(DBMTL(), k)
    # negative / zero losses do not produce NaN
    jac = torch.randn(k, 6, dtype=torch.float64)
    assert_finite(direction(DBMTL(), jac, torch.linspace(-1.0, 0.0, k, dtype=torch.float64)))


def test_k1_positive_multiple() -> None:
    assert_k1_passthrough(DBMTL(), exact=False)
