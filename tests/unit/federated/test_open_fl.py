"""Open federated learning simulator: reductions to FedAvg, closed forms on quadratics, join/leave
bookkeeping, the radius vs gradient noise, golden checks against torch.optim.Adam and autograd, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from molearn.federated._open_fl import (
    BernoulliPoissonProcess,
    FixedSizeReplacement,
    LogisticClients,
    QuadraticClients,
    StaticPopulation,
    local_update,
    random_quadratic_clients,
    sgd_stationary_msd,
    simulate_open_fl,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _logistic(clients: int = 6, n: int = 15, d: int = 3, C: int = 3, **kw) -> LogisticClients:
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(n + i, d, generator=g, dtype=torch.float64) + 0.3 * i for i in range(clients)]
    ys = [torch.randint(0, C, (n + i,), generator=g) for i in range(clients)]
    return LogisticClients(xs, ys, C, **kw)


def test_static_quadratic_e1_converges_to_population_optimum():
    obj = random_quadratic_clients(8, 4, condition_number=5.0, seed=3)
    trace = simulate_open_fl(obj, StaticPopulation(), rounds=400, local_steps=1, lr=0.1)
    x_star = torch.linalg.solve(obj.A.sum(0), obj.Ac.sum(0))
    assert torch.allclose(trace.final_model, x_star, atol=1e-8)
    assert float(trace.distance[-1]) < 1e-8
    assert int(trace.joined.sum()) == 0 and int(trace.left.sum()) == 0


def test_static_logistic_e1_converges_to_newton_optimum():
    obj = _logistic(l2=0.1)
    trace = simulate_open_fl(obj, StaticPopulation(), rounds=600, local_steps=1, lr=0.5)
    assert float(trace.distance[-1]) < 1e-6
    # the optimum is a stationary point of the weighted (by data size) average objective
    idx = torch.arange(obj.num_clients)
    w = obj.weights / obj.weights.sum()
    g = w @ obj.exact_grad(idx, trace.final_model.expand(obj.num_clients, -1))
    assert float(g.norm()) < 1e-6


def test_logistic_hessian_and_gradient_match_autograd():
    obj = _logistic(l2=0.05)
    idx = torch.tensor([0, 2, 5])
    X, Y, s = obj._pooled(idx)
    W = torch.randn(obj.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(w):
        w = w.view(obj.features, obj.num_classes)
        return -(Y * torch.log_softmax(X @ w, -1)).sum(1) @ s + 0.5 * obj.l2 * (w * w).sum()

    loss, g, H = obj._grad_hess(X, Y, s, W.view(obj.features, obj.num_classes))
    assert torch.allclose(loss, f(W))
    assert torch.allclose(g, torch.autograd.functional.jacobian(f, W), atol=1e-12)
    assert torch.allclose(H, torch.autograd.functional.hessian(f, W), atol=1e-12)


def test_local_gd_round_matches_closed_form_and_drift_fixed_point():
    obj = random_quadratic_clients(5, 3, condition_number=8.0, seed=2)
    lr, E = 0.05, 4
    x0 = torch.randn(3, dtype=torch.float64)
    idx = torch.arange(5)
    y = local_update(obj, idx, x0, local_steps=E, lr=lr, gen=torch.Generator())
    Mi = torch.linalg.matrix_power(torch.eye(3, dtype=torch.float64) - lr * obj.A, E)  # (5, 3, 3)
    expect = obj.c + torch.einsum("kij,kj->ki", Mi, x0 - obj.c)
    assert torch.allclose(y, expect, atol=1e-12)
    # FedAvg of E > 1 local GD steps converges to sum_i (I - M_i) x = sum_i (I - M_i) c_i, not to x*
    Id = torch.eye(3, dtype=torch.float64)
    fixed = torch.linalg.solve((Id - Mi).sum(0), torch.einsum("kij,kj->i", Id - Mi, obj.c))
    trace = simulate_open_fl(obj, StaticPopulation(), rounds=500, local_steps=E, lr=lr)
    assert torch.allclose(trace.final_model, fixed, atol=1e-8)
    assert float((fixed - obj.optimum(idx)).norm()) > 1e-3  # client drift is real here


def test_e1_noise_matches_lyapunov_closed_form():
    k, d, sigma, lr = 4, 3, 2.0, 0.2
    obj = random_quadratic_clients(k, d, condition_number=4.0, noise_std=sigma, seed=5)
    trace = simulate_open_fl(obj, StaticPopulation(), rounds=6000, local_steps=1, lr=lr, seed=1)
    H = obj.A.mean(0)
    expect = sgd_stationary_msd(H, lr, sigma**2 / d / k)  # mean of k independent noises: variance / k
    assert trace.mean_square_distance(burn_in=0.1) == pytest.approx(expect, rel=0.12)


def test_radius_grows_with_gradient_noise():
    process = BernoulliPoissonProcess(arrival_rate=1.0, departure_prob=0.1)
    radii = []
    for sigma in (0.0, 3.0, 10.0):
        obj = random_quadratic_clients(200, 4, condition_number=5.0, noise_std=sigma, seed=0)
        radii.append(simulate_open_fl(obj, process, rounds=400, local_steps=2, lr=0.05, seed=0).radius())
    assert radii[0] < radii[1] < radii[2]


def test_closed_system_is_more_stable_than_open_one():
    obj = random_quadratic_clients(300, 4, condition_number=5.0, noise_std=0.5, seed=0)
    closed = simulate_open_fl(obj, StaticPopulation(10), rounds=300, local_steps=2, lr=0.05)
    open_ = simulate_open_fl(obj, BernoulliPoissonProcess(2.0, 0.2), rounds=300, local_steps=2, lr=0.05)
    assert open_.radius() > 2 * closed.radius()


def test_local_adam_matches_torch_adam():
    obj = random_quadratic_clients(3, 4, condition_number=6.0, seed=4)
    x0 = torch.randn(4, dtype=torch.float64)
    idx = torch.tensor([1])
    y = local_update(
        obj,
        idx,
        x0,
        local_steps=7,
        lr=0.03,
        optimizer="adam",
        betas=(0.8, 0.99),
        eps=1e-6,
        gen=torch.Generator(),
    )
    p = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.03, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(7):
        opt.zero_grad()
        (0.5 * (p - obj.c[1]) @ obj.A[1] @ (p - obj.c[1])).backward()
        opt.step()
    assert torch.allclose(y[0], p.detach(), atol=1e-12)


def test_join_leave_bookkeeping():
    obj = random_quadratic_clients(500, 2, seed=0)
    tr = simulate_open_fl(obj, BernoulliPoissonProcess(3.0, 0.1), rounds=600, lr=0.1, seed=2)
    n, j, l_ = tr.num_clients, tr.joined, tr.left
    assert torch.equal(n[1:], n[:-1] + j[1:] - l_[1:])
    assert int(j[0]) == 0 and int(l_[0]) == 0 and int(n[0]) == 30
    assert float(n[100:].double().mean()) == pytest.approx(30, rel=0.15)  # stationary mean rate / prob
    tr = simulate_open_fl(obj, FixedSizeReplacement(25, 0.2), rounds=200, lr=0.1)
    assert bool((tr.num_clients == 25).all()) and torch.equal(tr.joined, tr.left)
    assert int(tr.joined.sum()) > 0


def test_empty_population_rounds_are_skipped_and_counted():
    obj = random_quadratic_clients(50, 2, seed=0)
    proc = BernoulliPoissonProcess(arrival_rate=0.3, departure_prob=0.8, initial_size=1)
    tr = simulate_open_fl(obj, proc, rounds=300, lr=0.1)
    skipped = tr.skipped
    assert int(skipped.sum()) > 0
    assert bool((tr.num_clients[skipped] == 0).all())
    assert bool(torch.isnan(tr.distance[skipped]).all()) and bool(torch.isfinite(tr.distance[~skipped]).all())
    assert math.isfinite(tr.radius())


def test_population_that_dies_out_raises():
    obj = random_quadratic_clients(50, 2, seed=0)
    with pytest.raises(RuntimeError, match="empty and the process cannot add clients"):
        simulate_open_fl(obj, BernoulliPoissonProcess(0.0, 0.5, initial_size=3), rounds=100, lr=0.1)
    with pytest.raises(ValueError, match="initial population is empty"):
        simulate_open_fl(obj, BernoulliPoissonProcess(0.0, 0.5, initial_size=0), rounds=5, lr=0.1)


def test_bad_input_errors():
    x = [torch.randn(4, 2), torch.randn(0, 2)]
    y = [torch.tensor([0, 1, 0, 1]), torch.zeros(0, dtype=torch.long)]
    with pytest.raises(ValueError, match="client 1 has no data"):
        LogisticClients(x, y, 2)
    with pytest.raises(ValueError, match=r"labels must be integers in 0\.\.1"):
        LogisticClients([torch.randn(2, 2)], [torch.tensor([0, 2])], 2)
    with pytest.raises(ValueError, match="l2 must be > 0"):
        LogisticClients([torch.randn(2, 2)], [torch.tensor([0, 1])], 2, l2=0.0)
    with pytest.raises(ValueError, match="at least one client"):
        LogisticClients([], [], 2)
    with pytest.raises(ValueError, match="positive definite"):
        QuadraticClients(-torch.eye(2).expand(3, 2, 2).clone(), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        QuadraticClients(torch.eye(2).expand(1, 2, 2).clone(), torch.tensor([[float("nan"), 0.0]]))
    obj = random_quadratic_clients(5, 2)
    with pytest.raises(ValueError, match="optimizer"):
        simulate_open_fl(obj, StaticPopulation(), rounds=2, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr"):
        simulate_open_fl(obj, StaticPopulation(), rounds=2, lr=float("nan"))
    with pytest.raises(ValueError, match="local_steps"):
        simulate_open_fl(obj, StaticPopulation(), rounds=2, local_steps=0)
    with pytest.raises(ValueError, match="departure_prob"):
        BernoulliPoissonProcess(1.0, 1.5)
    with pytest.raises(ValueError, match="larger than the universe"):
        simulate_open_fl(obj, StaticPopulation(9), rounds=2)
    with pytest.raises(FloatingPointError, match="diverged"):
        simulate_open_fl(
            random_quadratic_clients(3, 2, condition_number=10.0),
            StaticPopulation(),
            rounds=2000,
            lr=1.0,
            init=torch.ones(2),
        )
