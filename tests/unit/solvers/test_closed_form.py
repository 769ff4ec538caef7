from __future__ import annotations

import pytest
import torch

from molearn.solvers import (
    aligned_mtl_weights,
    config_weights,
    gradvac_weights,
    imtl_g_weights,
    pcgrad_weights,
    psd_pinv,
    random_orders,
)

CPU = torch.device("cpu")


def _psd(k: int, rank: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(k, rank, generator=gen, dtype=dtype) @ torch.randn(
        rank, 3 * k, generator=gen, dtype=dtype
    )
    return jac @ jac.T


def test_psd_pinv_matches_torch_pinv_full_rank_and_exact_low_rank() -> None:
    g = _psd(5, 5, 0)
    torch.testing.assert_close(psd_pinv(g), torch.linalg.pinv(g), rtol=1e-8, atol=1e-10)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    lam = torch.tensor([0.0, 0.0, 0.5, 2.0, 7.0], dtype=torch.float64)
    low = q @ torch.diag(lam) @ q.T
    expected = q @ torch.diag(torch.tensor([0.0, 0.0, 2.0, 0.5, 1 / 7], dtype=torch.float64)) @ q.T
    torch.testing.assert_close(psd_pinv(low), expected, rtol=1e-8, atol=1e-10)
    # Moore-Penrose identities on a rank-deficient Gramian
    g2 = _psd(6, 2, 3)
    p = psd_pinv(g2)
    torch.testing.assert_close(g2 @ p @ g2, g2, rtol=1e-7, atol=1e-9 * g2.abs().max())
    torch.testing.assert_close(p @ g2 @ p, p, rtol=1e-7, atol=1e-9 * p.abs().max())


def test_psd_pinv_zero_and_tolerance() -> None:
    assert (psd_pinv(torch.zeros(3, 3)) == 0).all()
    g = torch.diag(torch.tensor([1.0, 1e-9], dtype=torch.float64))
    assert psd_pinv(g)[1, 1] == pytest.approx(1e9)
    assert psd_pinv(g, rtol=1e-6)[1, 1] == 0
    # float32 input: eigenvalues below K·eps32·λ_max are noise
    assert psd_pinv(g.float())[1, 1] == 0


def test_batched_equals_per_item() -> None:
    gs = torch.stack([_psd(4, 4, 0), _psd(4, 2, 1), torch.zeros(4, 4, dtype=torch.float64), _psd(4, 3, 2)])
    orders = torch.stack(
        [
            random_orders(4, generator=torch.Generator().manual_seed(i), device=CPU, full=True)
            for i in range(4)
        ]
    )
    targets = torch.rand(4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5
    b_imtl = imtl_g_weights(gs)
    b_aligned, b_rank = aligned_mtl_weights(gs, scale="median")
    b_config = config_weights(gs)
    b_pc = pcgrad_weights(gs, orders)
    b_gv, b_t = gradvac_weights(gs, targets, orders, 0.3)
    for i in range(4):
        torch.testing.assert_close(b_imtl[i], imtl_g_weights(gs[i]))
        w, r = aligned_mtl_weights(gs[i], scale="median")
        torch.testing.assert_close(b_aligned[i], w)
        assert b_rank[i] == r
        torch.testing.assert_close(b_config[i], config_weights(gs[i]))
        torch.testing.assert_close(b_pc[i], pcgrad_weights(gs[i], orders[i]))
        c, t = gradvac_weights(gs[i], targets[i], orders[i], 0.3)
        torch.testing.assert_close(b_gv[i], c)
        torch.testing.assert_close(b_t[i], t)
    assert b_rank.tolist() == [4, 2, 0, 3]


def test_aligned_scales_hand_computed_on_diagonal_gramian() -> None:
    g = torch.diag(torch.tensor([4.0, 1.0, 9.0, 0.0], dtype=torch.float64))  # rank 3, λ = 1, 4, 9
    inv_sqrt = torch.tensor([0.5, 1.0, 1 / 3, 0.0], dtype=torch.float64)
    for scale, sigma in (("min", 1.0), ("median", 4.0), ("rmse", 14 / 3)):
        w, rank = aligned_mtl_weights(g, scale=scale)  # type: ignore[arg-type]
        torch.testing.assert_close(w, sigma**0.5 * inv_sqrt)
        assert rank == 3
    # even count: lower median, like torch.median
    w, _ = aligned_mtl_weights(
        torch.diag(torch.tensor([1.0, 4.0, 9.0, 16.0], dtype=torch.float64)), scale="median"
    )
    torch.testing.assert_close(w, 2.0 * torch.tensor([1.0, 0.5, 1 / 3, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError):
        aligned_mtl_weights(g, scale="max")  # type: ignore[arg-type]


def test_imtl_g_and_config_hand_computed() -> None:
    g = torch.diag(torch.tensor([9.0, 1.0], dtype=torch.float64))  # orthogonal, norms 3 and 1
    torch.testing.assert_close(imtl_g_weights(g), torch.tensor([0.25, 0.75], dtype=torch.float64))
    # ConFIG: d = (Σ n_i / √2) (e1 + e2)/√2 = 2 (e1 + e2) → weights (2/3, 2)
    torch.testing.assert_close(config_weights(g), torch.tensor([2 / 3, 2.0], dtype=torch.float64))


def test_random_orders_are_permutations_of_the_other_tasks() -> None:
    for full in (True, False):
        for k in (1, 2, 5):
            o = random_orders(k, generator=torch.Generator().manual_seed(k), device=CPU, full=full)
            assert o.shape == (k, k - 1) and o.dtype == torch.int64
            for i in range(k):
                assert sorted(o[i].tolist()) == [j for j in range(k) if j != i]


def test_random_orders_consume_the_generator_like_torchjd() -> None:
    gen = torch.Generator().manual_seed(3)
    o = random_orders(4, generator=gen, device=CPU, full=True)
    ref = torch.Generator().manual_seed(3)
    for i in range(4):
        perm = torch.randperm(4, generator=ref)
        assert o[i].tolist() == [j for j in perm.tolist() if j != i]
    o = random_orders(4, generator=gen, device=CPU, full=False)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        assert o[i].tolist() == [others[p] for p in torch.randperm(3, generator=ref).tolist()]


def test_pcgrad_two_tasks_hand_computed() -> None:
    g = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    c = pcgrad_weights(g, torch.tensor([[1], [0]]))
    expected = torch.tensor([[1.0, 0.5], [1.0, 1.0]], dtype=torch.float64)  # g1 + ½g2, g2 + g1
    torch.testing.assert_close(c, expected)
    no_conflict = torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        pcgrad_weights(no_conflict, torch.tensor([[1], [0]])), torch.eye(2, dtype=torch.float64)
    )


def test_gradvac_zero_gradient_and_target_update() -> None:
    g = torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64))  # g_2 = 0: cosine 0, no correction
    targets = torch.full((2, 2), 0.5, dtype=torch.float64)
    c, t = gradvac_weights(g, targets, torch.tensor([[1], [0]]), beta=0.5)
    torch.testing.assert_close(c, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(t, torch.tensor([[0.5, 0.25], [0.25, 0.5]], dtype=torch.float64))
