"""Preference-conditioned models (FiLM, COSMOS input channels): shapes, the preference changes the output,
bad preferences raise, and on a tiny 2-objective problem the learned front is ordered with the preference."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from molearn.pareto._conditioned import (
    FiLM,
    PreferenceAsInput,
    PreferenceConditioned,
    append_preference,
    evaluate_conditioned,
    train_conditioned,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _film_model(seed: int = 0) -> PreferenceConditioned:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(3, 8), nn.Tanh())
    return PreferenceConditioned(trunk, [nn.Linear(8, 1), nn.Linear(8, 1)], n_obj=2, channels=8, hidden=16)


def test_film_shapes_and_identity_form() -> None:
    film = FiLM(2, 4, hidden=8)
    h = torch.randn(5, 4, 3, 3)
    assert film(h, torch.tensor([0.3, 0.7])).shape == (5, 4, 3, 3)
    assert film(h, torch.rand(5, 2) + 0.1).shape == (5, 4, 3, 3)
    nn.init.zeros_(film.net[2].weight)
    nn.init.zeros_(film.net[2].bias)
    assert torch.equal(film(h, torch.tensor([0.3, 0.7])), h)  # gamma = beta = 0: identity
    with pytest.raises(ValueError, match="FiLM expects"):
        film(torch.randn(5, 3), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="batch of 5"):
        film(h, torch.rand(4, 2))


def test_conditioned_model_shapes_and_parameter_split() -> None:
    model = _film_model()
    out = model(torch.randn(6, 3), torch.tensor([0.2, 0.8]))
    assert [tuple(o.shape) for o in out] == [(6, 1), (6, 1)]
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for p in model.task_parameters()}
    assert shared and heads and not shared & heads
    assert shared | heads == {id(p) for p in model.parameters()}
    assert torch.equal(
        model.at(torch.tensor([0.2, 0.8]))(torch.ones(2, 3))[0],
        model(torch.ones(2, 3), torch.tensor([0.2, 0.8]))[0],
    )


def test_preference_changes_output() -> None:
    model = _film_model()
    x = torch.randn(4, 3)
    a = model(x, torch.tensor([0.9, 0.1]))[0]
    b = model(x, torch.tensor([0.1, 0.9]))[0]
    assert (a - b).abs().max() > 1e-4
    # scale invariance: preferences are normalised to the simplex
    assert torch.allclose(model(x, torch.tensor([2.0, 8.0]))[0], model(x, torch.tensor([0.2, 0.8]))[0])


@pytest.mark.parametrize(
    ("pref", "match"),
    [
        (torch.tensor([-0.1, 1.1]), "non-negative"),
        (torch.tensor([0.0, 0.0]), "summing to zero"),
        (torch.tensor([0.2, 0.3, 0.5]), "shape"),
        (torch.tensor([float("nan"), 1.0]), "finite"),
    ],
)
def test_bad_preferences_raise(pref: Tensor, match: str) -> None:
    model = _film_model()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(2, 3), pref)
    with pytest.raises(ValueError, match=match):
        model.at(pref)
    wrapped = PreferenceAsInput(nn.Conv2d(3, 2, 1), n_obj=2)
    with pytest.raises(ValueError, match=match):
        wrapped(torch.randn(2, 1, 4, 4), pref)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        model(torch.randn(2, 3), [0.5, 0.5])  # type: ignore[arg-type]


def test_append_preference_channels() -> None:
    x = torch.zeros(3, 1, 4, 4)
    y = append_preference(x, torch.tensor([1.0, 3.0]))
    assert y.shape == (3, 3, 4, 4)
    assert torch.equal(y[:, 0], x[:, 0])
    assert torch.allclose(y[:, 1], torch.full((3, 4, 4), 0.25))
    assert torch.allclose(y[:, 2], torch.full((3, 4, 4), 0.75))
    per = append_preference(x, torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    assert torch.equal(per[:, 1, 0, 0], torch.tensor([1.0, 0.5, 0.0]))
    net = PreferenceAsInput(nn.Conv2d(3, 2, 1), n_obj=2)
    out_a = net(torch.randn(2, 1, 4, 4), torch.tensor([0.9, 0.1]))
    assert out_a.shape == (2, 2, 4, 4)


# ---------------------------------------------------------------- a tiny problem with a known front
# one scalar output o(x, p), L1 = mean (o - 1)^2, L2 = mean (o + 1)^2: a convex front; every method of
# make_preference_method asks for a smaller L1 as p_1 grows (LS optimum: o = p1 - p2).
def _tiny_loss(model: nn.Module, batch: Tensor, pref: Tensor) -> Tensor:
    o = model(batch, pref)[0].squeeze(1)
    return torch.stack([((o - 1) ** 2).mean(), ((o + 1) ** 2).mean()])


def _tiny_problem() -> tuple[PreferenceConditioned, list[Tensor]]:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(3, 8), nn.Tanh())
    model = PreferenceConditioned(trunk, [nn.Linear(8, 1)], n_obj=2, channels=8, hidden=16)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 3, generator=g) for _ in range(10)]
    return model, batches


@pytest.mark.parametrize("method", ["ls", "tchebycheff", "epo"])
def test_front_ordered_with_preference(method: str) -> None:
    model, batches = _tiny_problem()
    log = train_conditioned(model, _tiny_loss, batches, method, epochs=40, lr=1e-2, seed=0)
    assert log.steps == 400 and log.prefs.shape == (400, 2)
    assert torch.allclose(log.prefs.sum(1), torch.ones(400, dtype=torch.float64))
    prefs = torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.7, 0.3], [0.9, 0.1]])
    F = evaluate_conditioned(model, _tiny_loss, batches, prefs)
    assert F.shape == (5, 2) and F.dtype == torch.float64
    assert bool((F[1:, 0] < F[:-1, 0]).all()), F  # higher p_1 -> lower L_1
    assert bool((F[1:, 1] > F[:-1, 1]).all()), F
    assert F[-1, 0] < 0.5 < F[0, 0]  # the two ends are far apart (a real spread, not a point)
    if method == "ls":  # LS optimum o = p1 - p2: L1 = (1 - o)^2 = (2 p2)^2
        assert torch.allclose(F[:, 0], (2 * prefs[:, 1].double()) ** 2, atol=0.08)


def test_input_conditioning_trains_a_front() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))

    class Wrap(nn.Module):  # list-of-heads output, x (N, 3) viewed as channels
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> list[Tensor]:
            return [self.net(x)]

    model = PreferenceAsInput(Wrap(), n_obj=2)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 3, generator=g) for _ in range(10)]
    train_conditioned(model, _tiny_loss, batches, "ls", epochs=30, lr=1e-2)
    F = evaluate_conditioned(model, _tiny_loss, batches, torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]]))
    assert bool((F[1:, 0] < F[:-1, 0]).all()) and bool((F[1:, 1] > F[:-1, 1]).all()), F


def test_training_is_reproducible_and_validates() -> None:
    m1, batches = _tiny_problem()
    log1 = train_conditioned(m1, _tiny_loss, batches, "ls", epochs=1, seed=3)
    m2, _ = _tiny_problem()
    log2 = train_conditioned(m2, _tiny_loss, batches, "ls", epochs=1, seed=3)
    assert torch.equal(log1.prefs, log2.prefs) and torch.equal(log1.losses, log2.losses)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert (log1.prefs > 0).all()  # boundary shift: EPO's strictly positive preferences
    with pytest.raises(ValueError, match="epochs"):
        train_conditioned(m1, _tiny_loss, batches, epochs=0)
    with pytest.raises(ValueError, match="alpha"):
        train_conditioned(m1, _tiny_loss, batches, alpha=0.0)
    with pytest.raises(ValueError, match="empty"):
        train_conditioned(m1, _tiny_loss, [])
    with pytest.raises(ValueError, match="loss_fn must return"):
        train_conditioned(m1, lambda m, b, p: _tiny_loss(m, b, p)[:1], batches)
    with pytest.raises(ValueError, match="does not take a preference"):
        train_conditioned(m1, _tiny_loss, batches, "famo")
    with pytest.raises(ValueError, match="unknown method"):
        train_conditioned(m1, _tiny_loss, batches, "nosuchmethod")


@pytest.mark.parametrize(("method", "sign"), [("stch", 1), ("modifiedtchebycheff", -1), ("pbi", -1)])
def test_front_direction_by_method(method: str, sign: int) -> None:
    # LS-like methods: larger p_1 -> smaller L_1; ray methods (L proportional to p): larger p_1 -> larger L_1
    model, batches = _tiny_problem()
    train_conditioned(model, _tiny_loss, batches, method, epochs=25, lr=1e-2, seed=0)
    prefs = torch.tensor([[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]])
    F = evaluate_conditioned(model, _tiny_loss, batches, prefs)
    d = sign * (F[1:, 0] - F[:-1, 0])
    assert bool((d < 0).all()) and float((F[0, 0] - F[-1, 0]).abs()) > 0.5, F
