from __future__ import annotations

import pytest
import torch
from torch import nn
from torchjd.aggregation import GradDrop as TorchJDGradDrop

import molearn
from molearn.methods import GradDrop, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_declares_jacobian() -> None:
    assert GradDrop.needs == Needs(jacobian=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchjd(seed: int) -> None:
    jac = torch.randn(4, 30, generator=_gen(10 + seed), dtype=torch.float64)
    d = direction(GradDrop(generator=_gen(seed)), jac)
    torch.manual_seed(seed)  # TorchJD draws U from the global RNG: same stream as a fresh generator
    torch.testing.assert_close(d, TorchJDGradDrop()(jac))


def test_matches_torchjd_with_leak() -> None:
    jac = torch.randn(3, 25, generator=_gen(7), dtype=torch.float64)
    leak = [0.1, 0.5, 0.0]
    d = direction(GradDrop(leak=leak, generator=_gen(5)), jac)
    torch.manual_seed(5)
    expected = TorchJDGradDrop(leak=torch.tensor(leak, dtype=torch.float64))(jac)
    torch.testing.assert_close(d, expected)


def test_hand_computed() -> None:
    # column 0: all positive (P=1, always kept); column 1: all negative (P=0, always kept);
    # column 2: one +3, one -1 (P = 0.75): the positive part survives iff U < 0.75
    jac = torch.tensor([[1.0, -2.0, 3.0], [2.0, -1.0, -1.0]], dtype=torch.float64)
    u = torch.rand(3, generator=_gen(11), dtype=torch.float64)
    d = direction(GradDrop(generator=_gen(11)), jac)
    expected_col2 = 3.0 if u[2] < 0.75 else -1.0
    torch.testing.assert_close(d, torch.tensor([3.0, -3.0, expected_col2], dtype=torch.float64))


def test_both_signs_selected_over_draws() -> None:
    # P = 0.75 on the mixed column: the positive part is kept ~75% of the time
    jac = torch.tensor([[3.0], [-1.0]], dtype=torch.float64)
    m = GradDrop(generator=_gen(0))
    picks = torch.stack([direction(m, jac)[0] for _ in range(2000)])
    assert set(picks.unique().tolist()) == {-1.0, 3.0}
    frac = (picks > 0).double().mean()
    assert abs(frac - 0.75) < 0.04


def test_full_leak_is_the_sum() -> None:
    jac = torch.randn(3, 10, dtype=torch.float64)
    torch.testing.assert_close(direction(GradDrop(leak=1.0), jac), jac.sum(0))


def test_zero_column_gives_zero_not_nan() -> None:
    jac = torch.randn(3, 6, dtype=torch.float64)
    jac[:, 2] = 0
    d = direction(GradDrop(generator=_gen(0)), jac)
    assert_finite(d)
    assert d[2] == 0
    torch.manual_seed(0)
    torch.testing.assert_close(d, TorchJDGradDrop()(jac))  # its P is NaN there, but every mask is False


def test_leak_length_checked() -> None:
    with pytest.raises(ValueError, match="2 leak values for 3 objectives"):
        direction(GradDrop(leak=[0.1, 0.2]), torch.randn(3, 4))


def test_dtype_and_info() -> None:
    out = GradDrop().combine(Inputs(losses=torch.ones(2), jacobian=torch.randn(2, 5)))
    assert out.direction is not None and out.direction.dtype == torch.float32
    assert 0 <= float(out.info["kept_fraction"]) <= 1


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for name, jac in jacobian_families(k):
        d = direction(GradDrop(generator=_gen(k)), jac)
        assert_finite(d)
        # with no leak every coordinate keeps one sign only: the sum of its positive or of its negative parts
        pos = jac.clamp_min(0).sum(0)
        neg = jac.clamp_max(0).sum(0)
        ok = torch.isclose(d, pos) | torch.isclose(d, neg)
        assert ok.all(), name
    assert_zero_gives_zero(GradDrop(), k)


def test_k1_passthrough() -> None:
    assert_k1_passthrough(GradDrop(generator=_gen(0)), exact=True)


def test_generator_makes_it_deterministic() -> None:
    jac = torch.randn(3, 40, dtype=torch.float64)
    a = direction(GradDrop(generator=_gen(3)), jac)
    b = direction(GradDrop(generator=_gen(3)), jac)
    c = direction(GradDrop(generator=_gen(4)), jac)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_representation_mode_through_balancer() -> None:
    trunk = nn.Linear(4, 5)
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(3))
    x, y = torch.randn(6, 4), torch.randn(6, 3)
    z = trunk(x)
    losses = torch.stack([((h(z).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])
    # reference: the GradDrop direction on the features, back-propagated into the trunk
    feats_jac = torch.stack(
        [torch.autograd.grad(losses[i], z, retain_graph=True)[0].flatten() for i in range(3)]
    )
    d_feat = direction(GradDrop(generator=_gen(1)), feats_jac)
    (expected,) = torch.autograd.grad(z, trunk.weight, d_feat.view_as(z), retain_graph=True)
    bal = molearn.Balancer(
        GradDrop(generator=_gen(1)), trunk.parameters(), heads.parameters(), mode="representation"
    )
    bal.backward(losses, features=z)
    assert trunk.weight.grad is not None
    torch.testing.assert_close(trunk.weight.grad, expected)
