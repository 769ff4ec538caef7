"""MoCo: golden tests against step-by-step transcriptions of the four official update rules, state,
dtype and property tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from molearn.methods import Inputs, MoCo
from molearn.solvers import min_norm

from ._asserts import assert_finite, assert_zero_gives_zero, direction, jacobian_families

# ---------------------------------------------------------------------------------------------------
# Independent transcriptions of the official codes (numpy, float64), one function per code base.


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _project_sort(v: np.ndarray) -> np.ndarray:
    """Sort-based simplex projection as in heshandevaka/MoCo (Tracking.py, CAGrad/utils.py)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, len(v) + 1)
    ok = u - css / idx > 0
    r = idx[ok][-1]
    return np.maximum(v - css[ok][-1] / r, 0.0)


def _project_loop(v: np.ndarray) -> np.ndarray:
    """The loop form of Trade-Off-MOL's ``_projection2simplex``: first i where the running threshold
    exceeds the next sorted value."""
    m = len(v)
    u = np.sort(v)[::-1]
    running = 0.0
    thr = (v.sum() - 1.0) / m
    for i in range(m - 1):
        running += u[i]
        cand = (running - 1.0) / (i + 1.0)
        if cand > u[i + 1]:
            thr = cand
            break
    return np.maximum(v - thr, 0.0)


def ref_libmtl(jacs, losses, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """median-research-group/LibMTL weighting/MoCo.py: step counter incremented first."""
    k, p = jacs[0].shape
    y, lam = np.zeros((k, p)), np.ones(k) / k
    out = []
    for step, (g, loss) in enumerate(zip(jacs, losses, strict=True), start=1):  # incremented first
        g = g.copy()
        for i in range(k):
            g[i] = g[i] / (np.linalg.norm(g[i]) + 1e-8) * loss[i]
        y = y - (beta / step**beta_sigma) * (y - g)
        lam = _softmax(lam - (gamma / step**gamma_sigma) * (y @ y.T + rho * np.eye(k)) @ lam)
        out.append((y.T @ lam, lam))
    return out


def ref_tradeoff(jacs, losses, beta=0.1, gamma=0.1, rho=0.1, gn="none"):
    """heshandevaka/Trade-Off-MOL LibMTL/weighting/MoCo.py: constant steps, Y normalised for λ and d."""
    k, _ = jacs[0].shape
    y: Any = 0.0
    lam = np.ones(k) / k
    out = []
    for g, loss in zip(jacs, losses, strict=True):
        y = y - beta * (y - g)
        if gn == "l2":
            n = np.sqrt((y**2).sum(-1))
        elif gn == "loss":
            n = np.asarray(loss, dtype=float)
        elif gn == "loss+":
            n = loss * np.sqrt((y**2).sum(-1))
        else:
            n = np.ones(k)
        yn = y / n[:, None]
        lam = _project_loop(lam - gamma * (yn @ (yn.T @ lam) + rho * lam))
        out.append((sum(lam[i] * yn[i] for i in range(k)), lam))
    return out


def ref_tracking(jacs, beta=0.1, delta=0.1, sigma2=0.5, sigma3=0.5):
    """heshandevaka/MoCo LibMTL/weighting/Tracking.py: y is P×K, step starts at 1, incremented after."""
    k, _ = jacs[0].shape
    step = 1
    y: Any = 0.0
    lam = np.ones(k) / k
    out = []
    for g in jacs:
        y = y - beta / step**sigma2 * (y - g.T)
        lam = _project_sort(lam - delta / step**sigma3 * 2 * y.T @ (y @ lam))
        step += 1
        out.append((y @ lam, lam))
    return out


def ref_cagrad(
    jacs, losses, epochs, beta=0.05, delta=0.1, sigma2=0.5, sigma3=0.5, normalize="None", y0=None, lam0=None
):
    """heshandevaka/MoCo CAGrad/utils.py ``tracking``: grads P×K, decay by the 0-based epoch ``it``,
    direction doubled by ``overwrite_grad`` (K = 2 there: K here)."""
    k, p = jacs[0].shape
    rows = k + 1 if "avg_reg" in normalize else k
    y = np.zeros((p, rows)) if y0 is None else y0.copy()
    lam = np.ones(rows) / rows if lam0 is None else lam0.copy()
    out = []
    for g, loss, it in zip(jacs, losses, epochs, strict=True):
        grads = g.T.copy()
        beta_ = beta / (1 + it) ** sigma2
        if "step_wise" in normalize:
            if it < 100:
                beta_ = beta / (1 + it) ** sigma2
            elif 100 <= it < 150:
                beta_ = 0.75 * beta / (1 + it - 100) ** sigma2
            else:
                beta_ = 0.5 * beta / (1 + it - 150) ** sigma2
        if "raw_loss" in normalize:
            grads = grads / (np.linalg.norm(grads, axis=0) + 1e-8) * loss
        if "avg_reg" in normalize:
            grads = np.concatenate([grads, grads.mean(1, keepdims=True)], 1)
        y = y - beta_ * (y - grads)
        lam = _softmax(lam - delta / (1 + it) ** sigma3 * y.T @ (y @ lam))
        out.append((k * (y @ lam), lam))
    return out


# ---------------------------------------------------------------------------------------------------


def _data(k: int = 3, p: int = 11, steps: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    jacs = [torch.randn(k, p, generator=gen, dtype=torch.float64) for _ in range(steps)]
    losses = [torch.rand(k, generator=gen, dtype=torch.float64) + 0.3 for _ in range(steps)]
    return jacs, losses


def _run(method: MoCo, jacs, losses) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for j, loss in zip(jacs, losses, strict=True):
        o = method.combine(Inputs(losses=loss, gramian=j @ j.T, jacobian=j))
        assert o.direction is not None and o.weights is None
        out.append((o.direction, o.info["lambda"]))
    return out


def _check(got, ref) -> None:
    assert len(got) == len(ref)
    for t, ((d, lam), (d_ref, lam_ref)) in enumerate(zip(got, ref, strict=True)):
        np.testing.assert_allclose(lam.numpy(), lam_ref, rtol=1e-10, atol=1e-12, err_msg=f"λ at step {t}")
        np.testing.assert_allclose(d.numpy(), d_ref, rtol=1e-10, atol=1e-10, err_msg=f"d at step {t}")


def _np(xs):
    return [x.numpy() for x in xs]


def test_golden_libmtl_defaults() -> None:
    jacs, losses = _data()
    _check(_run(MoCo(), jacs, losses), ref_libmtl(_np(jacs), _np(losses)))


def test_golden_libmtl_overrides() -> None:
    jacs, losses = _data(k=4, seed=1)
    m = MoCo("libmtl", beta=0.3, beta_sigma=0.25, gamma=0.7, gamma_sigma=0.1, rho=0.2)
    ref = ref_libmtl(_np(jacs), _np(losses), beta=0.3, beta_sigma=0.25, gamma=0.7, gamma_sigma=0.1, rho=0.2)
    _check(_run(m, jacs, losses), ref)


@pytest.mark.parametrize("gn", ["none", "l2", "loss", "loss+"])
def test_golden_tradeoff(gn: str) -> None:
    jacs, losses = _data(seed=2)
    jacs = [0.3 * j for j in jacs]  # small gradients: λ stays interior (boundary: test below)
    ref = ref_tradeoff(_np(jacs), _np(losses), gn=gn)
    _check(_run(MoCo("tradeoff", normalization=gn), jacs, losses), ref)


def test_golden_tradeoff_overrides() -> None:
    jacs, losses = _data(k=5, seed=3)
    m = MoCo("tradeoff", beta=0.6, gamma=0.02, rho=0.0)
    _check(_run(m, jacs, losses), ref_tradeoff(_np(jacs), _np(losses), beta=0.6, gamma=0.02, rho=0.0))


def test_golden_tracking() -> None:
    jacs, losses = _data(seed=4)
    jacs = [0.4 * j for j in jacs]
    _check(_run(MoCo("tracking"), jacs, losses), ref_tracking(_np(jacs)))
    m = MoCo("tracking", beta=0.8, beta_sigma=0.3, gamma=0.05, gamma_sigma=0.7)
    ref = ref_tracking(_np(jacs), beta=0.8, delta=0.05, sigma2=0.3, sigma3=0.7)
    _check(_run(m, jacs, losses), ref)


def test_golden_projection_on_the_boundary() -> None:
    """Larger λ steps: the projection clips some weights to 0 (the other golden tests stay interior)."""
    jacs, losses = _data(k=4, seed=21)
    ref_a = ref_tradeoff(_np(jacs), _np(losses), beta=0.5, gamma=0.3)
    ref_b = ref_tracking(_np(jacs), beta=0.5, delta=0.3)
    assert any((lam == 0).any() for _, lam in ref_a) and any((lam == 0).any() for _, lam in ref_b)
    _check(_run(MoCo("tradeoff", beta=0.5, gamma=0.3), jacs, losses), ref_a)
    _check(_run(MoCo("tracking", beta=0.5, gamma=0.3), jacs, losses), ref_b)


@pytest.mark.parametrize("normalize", ["None", "raw_loss", "avg_reg", "raw_loss+avg_reg"])
def test_golden_cagrad_per_step(normalize: str) -> None:
    jacs, losses = _data(k=2, seed=5)
    m = MoCo("cagrad", raw_loss="raw_loss" in normalize, avg_reg="avg_reg" in normalize)
    ref = ref_cagrad(_np(jacs), _np(losses), epochs=range(len(jacs)), normalize=normalize)
    _check(_run(m, jacs, losses), ref)


def test_golden_cagrad_epoch_counter() -> None:
    jacs, losses = _data(k=3, steps=7, seed=6)
    m = MoCo("cagrad", steps_per_epoch=3, beta=0.4, gamma=0.3)
    ref = ref_cagrad(_np(jacs), _np(losses), epochs=[0, 0, 0, 1, 1, 1, 2], beta=0.4, delta=0.3)
    _check(_run(m, jacs, losses), ref)


@pytest.mark.parametrize("start_epoch", [98, 148])
def test_golden_cagrad_step_wise(start_epoch: int) -> None:
    """``step_wise`` changes β at epochs 100 and 150: start from a mid-run state at ``start_epoch``."""
    k, p = 2, 9
    jacs, losses = _data(k=k, p=p, steps=6, seed=7)
    gen = torch.Generator().manual_seed(8)
    y0 = torch.randn(k + 1, p, generator=gen, dtype=torch.float64)
    lam0 = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    m = MoCo("cagrad", step_wise=True, avg_reg=True, raw_loss=True, steps_per_epoch=2)
    m.load_state_dict({"y": y0, "lambd": lam0, "step": 2 * start_epoch})
    epochs = [start_epoch + t // 2 for t in range(6)]
    ref = ref_cagrad(
        _np(jacs),
        _np(losses),
        epochs,
        normalize="raw_loss+avg_reg+step_wise",
        y0=y0.numpy().T,
        lam0=lam0.numpy(),
    )
    _check(_run(m, jacs, losses), ref)


def test_scale_option() -> None:
    jacs, losses = _data(seed=9)
    a = _run(MoCo("cagrad", scale=1.0), jacs, losses)
    b = _run(MoCo("cagrad"), jacs, losses)
    c = _run(MoCo("libmtl", scale="K"), jacs, losses)
    d = _run(MoCo("libmtl"), jacs, losses)
    for (da, la), (db, lb), (dc, _), (dd, _) in zip(a, b, c, d, strict=True):
        torch.testing.assert_close(db, 3 * da)
        torch.testing.assert_close(la, lb)
        torch.testing.assert_close(dc, 3 * dd)


# ---------------------------------------------------------------------------------------------------
# State, dtype, device

CONFIGS: list[dict[str, Any]] = [
    {},
    {"variant": "tradeoff"},
    {"variant": "tradeoff", "normalization": "loss+"},
    {"variant": "tracking"},
    {"variant": "cagrad"},
    {"variant": "cagrad", "raw_loss": True, "avg_reg": True, "step_wise": True, "steps_per_epoch": 2},
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_state_dict_round_trip_mid_run(cfg: dict[str, Any]) -> None:
    jacs, losses = _data(k=3, steps=8, seed=10)
    original = MoCo(**cfg)
    _run(original, jacs[:4], losses[:4])
    state = original.state_dict()
    assert set(state) == {"y", "lambd", "step"} and state["step"] == 4
    restored = MoCo(**cfg)
    restored.load_state_dict(state)
    state["y"].zero_()  # the restored method holds its own copy
    for (da, la), (db, lb) in zip(
        _run(original, jacs[4:], losses[4:]), _run(restored, jacs[4:], losses[4:]), strict=True
    ):
        torch.testing.assert_close(da, db, rtol=0, atol=0)
        torch.testing.assert_close(la, lb, rtol=0, atol=0)


def test_state_dict_is_a_snapshot_and_reset_restarts() -> None:
    jacs, losses = _data(k=3, steps=4, seed=11)
    m = MoCo()
    assert m.state_dict() == {}
    first = _run(m, jacs[:1], losses[:1])[0][0]
    snap = m.state_dict()
    y_before = snap["y"].clone()
    _run(m, jacs[1:], losses[1:])
    torch.testing.assert_close(snap["y"], y_before, rtol=0, atol=0)  # in-place Y updates do not leak
    m.reset()
    assert m.state_dict() == {}
    torch.testing.assert_close(_run(m, jacs[:1], losses[:1])[0][0], first, rtol=0, atol=0)
    m.load_state_dict({})
    assert m.state_dict() == {}


def test_state_dict_accepts_tensor_step_and_rejects_unknown_keys() -> None:
    jacs, losses = _data(k=2, steps=3, seed=12)
    m = MoCo("tracking")
    _run(m, jacs[:2], losses[:2])
    state = m.state_dict()
    state["step"] = torch.tensor(state["step"])
    other = MoCo("tracking")
    other.load_state_dict(state)
    torch.testing.assert_close(_run(other, jacs[2:], losses[2:])[0][0], _run(m, jacs[2:], losses[2:])[0][0])
    with pytest.raises(ValueError, match="unknown"):
        other.load_state_dict({"y": state["y"], "lambd": state["lambd"], "step": 1, "bogus": 0})
    with pytest.raises(ValueError, match="needs"):
        other.load_state_dict({"y": state["y"]})


def test_k_change_recreates_state() -> None:
    m = MoCo()
    a, la = _data(k=3, steps=2, seed=13)
    b, lb = _data(k=4, steps=1, seed=14)
    _run(m, a, la)
    fresh = _run(MoCo(), b, lb)[0][0]
    torch.testing.assert_close(_run(m, b, lb)[0][0], fresh, rtol=0, atol=0)
    assert m.state_dict()["step"] == 1


@pytest.mark.parametrize("cfg", CONFIGS)
def test_y_keeps_the_jacobian_dtype(cfg: dict[str, Any]) -> None:
    jacs, losses = _data(k=3, steps=3, seed=15)
    m32 = MoCo(**cfg)
    m64 = MoCo(**cfg)
    for j, loss in zip(jacs, losses, strict=True):
        j32 = j.float()
        o32 = m32.combine(Inputs(losses=loss, gramian=j32 @ j32.T, jacobian=j32))
        o64 = m64.combine(Inputs(losses=loss, gramian=j @ j.T, jacobian=j))
        assert o32.direction is not None and o64.direction is not None
        assert o32.direction.dtype == torch.float32
        torch.testing.assert_close(o32.direction.double(), o64.direction, rtol=1e-4, atol=1e-5)
    assert m32.state_dict()["y"].dtype == torch.float32
    assert m32.state_dict()["lambd"].dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_jacobian_device() -> None:
    jacs, losses = _data(k=3, steps=4, seed=16)
    cpu = _run(MoCo(), jacs, losses)
    m = MoCo()
    for (d_cpu, _), j, loss in zip(cpu, jacs, losses, strict=True):
        jc = j.cuda()
        o = m.combine(Inputs(losses=loss.cuda(), gramian=jc @ jc.T, jacobian=jc))
        assert o.direction is not None and o.direction.device.type == "cuda"
        torch.testing.assert_close(o.direction.cpu(), d_cpu)
    assert m.state_dict()["y"].device.type == "cuda"


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="variant"):
        MoCo("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalization"):
        MoCo(normalization="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="avg_reg"):
        MoCo("cagrad", avg_reg=True, normalization="loss")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        MoCo(steps_per_epoch=0)
    m = MoCo("tradeoff", gamma=0.5)
    assert (m.beta, m.gamma, m.rho, m.beta_sigma) == (0.1, 0.5, 0.1, 0.0)
    c = MoCo("cagrad")
    assert (c.beta, c.gamma, c.scale, c.raw_loss) == (0.05, 0.1, "K", False)
    assert MoCo().raw_loss and MoCo().beta == 0.5


# ---------------------------------------------------------------------------------------------------
# Properties

ALL_CONFIGS = [
    *CONFIGS,
    {"variant": "tradeoff", "normalization": "l2"},
    {"variant": "tradeoff", "normalization": "loss"},
]


@pytest.mark.parametrize("cfg", ALL_CONFIGS)
def test_finite_on_all_families(cfg: dict[str, Any]) -> None:
    for k in (2, 3, 5, 10):
        for family, jac in jacobian_families(k):
            m = MoCo(**cfg)
            losses = torch.linspace(0.5, 2.0, k, dtype=jac.dtype)
            for step in range(3):
                d = direction(m, jac, losses)
                assert_finite(d)
                assert d.shape == (jac.shape[1],), family
                lam = m.state_dict()["lambd"]
                assert torch.isfinite(lam).all() and abs(float(lam.sum()) - 1) < 1e-9, (family, step)


@pytest.mark.parametrize("cfg", ALL_CONFIGS)
def test_zero_gradients_give_zero(cfg: dict[str, Any]) -> None:
    assert_zero_gives_zero(MoCo(**cfg), k=3)
    m = MoCo(**cfg)
    for _ in range(3):
        d = direction(m, torch.zeros(4, 6, dtype=torch.float64))
        assert d.abs().max() == 0


@pytest.mark.parametrize("cfg", ALL_CONFIGS)
def test_k1_is_a_positive_multiple_of_the_gradient(cfg: dict[str, Any]) -> None:
    g = torch.randn(1, 9, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    d = direction(MoCo(**cfg), g, torch.tensor([1.3], dtype=torch.float64))
    cos = d @ g[0] / (d.norm() * g[0].norm())
    assert cos > 1 - 1e-12, cos


@pytest.mark.parametrize("cfg", ALL_CONFIGS)
def test_permutation_equivariant_over_steps(cfg: dict[str, Any]) -> None:
    jacs, losses = _data(k=4, steps=4, seed=18)
    perm = torch.tensor([2, 0, 3, 1])
    a = _run(MoCo(**cfg), jacs, losses)
    b = _run(MoCo(**cfg), [j[perm] for j in jacs], [loss[perm] for loss in losses])
    for (da, la), (db, lb) in zip(a, b, strict=True):
        torch.testing.assert_close(db, da, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(lb[:4], la[perm])


@pytest.mark.parametrize("variant", ["tradeoff", "tracking"])
def test_converges_to_the_mgda_direction_on_a_fixed_jacobian(variant: str) -> None:
    """Paper: with exact gradients the tracked Y → G and the projected λ-iteration → the min-norm
    weights, so d → the MGDA direction (ρ = 0)."""
    gen = torch.Generator().manual_seed(19)
    for k in (2, 3, 5):
        jac = torch.randn(k, 20, generator=gen, dtype=torch.float64)
        jac = jac - 0.6 * jac.mean(0)  # conflicting: the min-norm point is not a vertex
        gram = jac @ jac.T
        jac = jac / torch.linalg.eigvalsh(gram)[-1].sqrt()  # largest eigenvalue of G Gᵀ = 1
        w_star = min_norm(jac @ jac.T)
        d_star = w_star @ jac
        extra = {"gamma": 0.5, "gamma_sigma": 0.0} if variant == "tracking" else {"gamma": 1.0}
        m = MoCo(variant, rho=0.0, **extra)  # type: ignore[arg-type]
        losses = torch.ones(k, dtype=torch.float64)
        for _ in range(3000):
            d = direction(m, jac, losses)
        err = (d - d_star).norm() / d_star.norm()
        assert err < 1e-3, (k, float(err))
        lam = m.state_dict()["lambd"]
        assert (lam - w_star).abs().max() < 1e-2


def test_tracking_reduces_the_bias_of_stochastic_mgda() -> None:
    """The paper's point: MGDA on a noisy Jacobian is biased; MoCo's tracked direction (decaying β) is
    much closer to the true MGDA direction than MGDA on the last stochastic Jacobian, on average."""
    gen = torch.Generator().manual_seed(20)
    k, p = 3, 10
    jac = torch.randn(k, p, generator=gen, dtype=torch.float64)
    jac = jac - 0.6 * jac.mean(0)
    jac = jac / torch.linalg.eigvalsh(jac @ jac.T)[-1].sqrt()
    d_star = min_norm(jac @ jac.T) @ jac
    m = MoCo("tracking", beta=1.0, beta_sigma=0.7, gamma=0.5, gamma_sigma=0.0)
    losses = torch.ones(k, dtype=torch.float64)
    err_moco, err_sgd = [], []
    for t in range(3000):
        noisy = jac + 0.3 * torch.randn(k, p, generator=gen, dtype=torch.float64)
        d = direction(m, noisy, losses)
        if t >= 2500:
            err_moco.append(float((d - d_star).norm()))
            err_sgd.append(float((min_norm(noisy @ noisy.T) @ noisy - d_star).norm()))
    assert np.mean(err_moco) < 0.3 * np.mean(err_sgd), (np.mean(err_moco), np.mean(err_sgd))
