"""Issue 17, reliability: no NaN through any door, no doubled gradient, solvers that tell the truth.

Each numbered failure of the issue has a test here (checkpoints: ``train/test_checkpoint_safety.py``):
2. a finite loss with a NaN gradient, a NaN method state, NaN method outputs;
3. a shared parameter listed twice, a detached loss;
4. Nash-MTL / FairGrad fallbacks reported as converged;
5. a cached single-task result of the wrong type, ``update()`` after a skipped step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.methods import Inputs, Method, Needs, Output, get, registry
from molearn.solvers import CONVERGED, INFEASIBLE, ITERATION_LIMIT, alpha_fair_with_status, status_name

K = 3


class _Net(nn.Module):
    """A trunk and one head per objective: a NaN born in head ``i`` is traceable to objective ``i``."""

    def __init__(self, k: int = K) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(k))

    def losses(self, x: Tensor, bad: int | None = None) -> list[Tensor]:
        z = self.trunk(x)
        out = []
        for i, head in enumerate(self.heads):
            y = head(z).squeeze(1)
            # sqrt at 0: a finite loss (0.5) whose gradient is NaN (inf · 0)
            out.append((y * 0).sqrt().mean() + 0.5 if i == bad else y.pow(2).mean() + 0.5)
        return out


def _make(name: str) -> Method:
    extra: dict[str, dict[str, Any]] = {"fixed": {"weights": [1.0] * K}, "autolambda": {"lr": 0.1}}
    return get(name, **extra.get(name, {}))


def _params(net: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return bool(a == b)


# ------------------------------------------------------------------------------------------ failure 2
LOSS_ONLY = sorted(n for n, c in registry().items() if not _make(n).needs.gradients)


def test_the_issue_lists_thirteen_loss_only_methods() -> None:
    expected = {"ew", "dwa", "uw", "rlw", "gls", "fixed", "imtll", "stch", "tchebycheff"}
    expected |= {"modifiedtchebycheff", "pbi", "cosmos", "famo"}
    assert expected <= set(LOSS_ONLY)


@pytest.mark.parametrize("name", sorted(registry()))
def test_finite_loss_with_nan_gradient_raises_and_leaves_everything(name: str) -> None:
    """Every method, loss-only ones included: the error names objective 1 and the gradient stage; the
    parameters, their ``.grad`` and the method's state are as before the step. (``mode="loop"``: one
    backward pass per objective; a batched pass multiplies the others' zero cotangents by the infinite
    derivative too, and then names every objective.)"""
    torch.manual_seed(0)
    net = _Net()
    method = _make(name)
    heads = [p for h in net.heads for p in h.parameters()]
    bal = molearn.Balancer(method, net.trunk.parameters(), heads, mode="loop")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    bal.step(lambda b: net.losses(b), lambda: x, opt)  # a good step first: the method has state
    before, state = _params(net), method.state_dict()
    with pytest.raises(molearn.NonFiniteLossError, match=r"gradient for objective\(s\) \[") as err:
        bal.step(lambda b: net.losses(b, bad=1), lambda: x, opt)
    assert err.value.stage == "gradient" and 1 in err.value.objectives
    if not method.needs.closure:  # closure methods differentiate themselves (possibly batched)
        assert err.value.objectives == [1]
    assert all(p.grad is None for p in net.parameters())  # zero_grad(set_to_none) ran; nothing written
    assert all(torch.equal(a, b) for a, b in zip(before, _params(net)))
    assert _same_state(state, method.state_dict())


@pytest.mark.parametrize("name", LOSS_ONLY)
def test_drop_in_backward_of_a_loss_only_method_writes_nothing(name: str) -> None:
    net = _Net()
    bal = molearn.Balancer(_make(name), net.trunk.parameters())
    with pytest.raises(molearn.NonFiniteLossError, match=r"objective\(s\) \[2\]"):
        bal.backward(net.losses(torch.randn(8, 4), bad=2))
    assert all(p.grad is None for p in net.parameters())
    skip = molearn.Balancer(_make(name), net.trunk.parameters(), on_nonfinite="skip")
    info = skip.backward(net.losses(torch.randn(8, 4), bad=2))
    assert info.skipped and skip.skipped_steps == 1 and "objective(s) [2]" in info.reason
    assert all(p.grad is None for p in net.parameters())


def test_nan_method_state_is_refused_and_the_old_state_kept() -> None:
    """UW with a NaN state gave weights [nan, nan, nan] and NaN parameters without an error."""
    net = _Net()
    uw = get("uw")
    bal = molearn.Balancer(uw, net.trunk.parameters())
    bal.backward(net.losses(torch.randn(8, 4)))
    good = uw.state_dict()
    bad = {k: v.clone() for k, v in good.items()}
    bad["param"][1] = float("nan")
    with pytest.raises(ValueError, match=r"UW: state\['param'\] holds NaN/Inf"):
        uw.load_state_dict(bad)
    with pytest.raises(ValueError, match="NaN/Inf"):
        bal.load_state_dict({"method": bad, "skipped_steps": 0})
    assert _same_state(good, uw.state_dict())


def _stateful() -> list[str]:
    out = []
    for name in sorted(registry()):
        method = _make(name)
        if method.needs.batches == 1 and not method.needs.closure:
            out.append(name)
    return out


def _leaves(state: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Tensor]]:
    if isinstance(state, Tensor):
        return [(path, state)]
    if isinstance(state, dict):
        return [leaf for k, v in state.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(state, (list, tuple)):
        return [leaf for i, v in enumerate(state) for leaf in _leaves(v, (*path, i))]
    return []


def _replace(state: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(state, dict):
        return {**state, head: _replace(state[head], rest, value)}
    items = list(state)
    items[head] = _replace(items[head], rest, value)
    return type(state)(items)


@pytest.mark.parametrize("name", _stateful())
def test_load_state_dict_validates_finiteness_dtype_and_shape(name: str) -> None:
    torch.manual_seed(0)
    net = _Net()
    method = _make(name)
    bal = molearn.Balancer(method, net.trunk, [p for h in net.heads for p in h.parameters()])
    for _ in range(3):
        bal.backward(net.losses(torch.randn(8, 4)))
        if method.needs.after_step:
            bal.update(torch.stack(net.losses(torch.randn(8, 4))).detach())
    state = method.state_dict()
    method.load_state_dict(state)  # round trip
    assert _same_state(state, method.state_dict())
    for path, leaf in _leaves(state):
        if not leaf.is_floating_point():
            continue
        broken = [leaf.clone().fill_(float("nan")), leaf.to(torch.int64) if leaf.dim() else None]
        if leaf.dim() >= 1:
            broken.append(leaf.unsqueeze(0))
        for value in broken:
            if value is None:
                continue
            with pytest.raises((ValueError, TypeError)):
                method.load_state_dict(_replace(state, path, value))
            assert _same_state(state, method.state_dict()), f"{name}: a failed load changed the state"


def test_load_state_dict_refuses_objects_that_are_not_plain_data() -> None:
    famo = get("famo")
    with pytest.raises(TypeError, match="tensors and plain data only"):
        famo.load_state_dict({"param": nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="expects a dict"):
        famo.load_state_dict([1, 2])  # type: ignore[arg-type]


class _Broken(Method):
    """A method with state whose output is NaN on its second call."""

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(self) -> None:
        self.calls = torch.zeros(())

    def combine(self, inputs: Inputs) -> Output:
        self.calls += 1
        w = torch.ones_like(inputs.losses)
        return Output(weights=w * torch.where(self.calls > 1, float("nan"), 1.0))

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = state["calls"].clone()


def test_nan_weights_are_caught_and_the_method_state_rolled_back() -> None:
    net = _Net()
    method = _Broken()
    bal = molearn.Balancer(method, net.trunk.parameters(), mode="loop")
    bal.backward(net.losses(torch.randn(8, 4)))
    net.zero_grad(set_to_none=True)
    with pytest.raises(
        molearn.NonFiniteLossError, match=r"non-finite weights for objective\(s\) \[0, 1, 2\]"
    ) as err:
        bal.backward(net.losses(torch.randn(8, 4)))
    assert err.value.stage == "weights"
    assert int(method.calls) == 1  # the rejected step's state change was undone
    assert all(p.grad is None for p in net.parameters())


def test_nonfinite_post_step_loss_raises_and_keeps_the_state() -> None:
    net = _Net()
    famo = get("famo")
    bal = molearn.Balancer(famo, net.trunk.parameters())
    bal.backward(net.losses(torch.randn(8, 4)))
    state = famo.state_dict()
    with pytest.raises(molearn.NonFiniteLossError, match=r"post-step loss for objective\(s\) \[0\]"):
        bal.update(torch.tensor([float("inf"), 1.0, 1.0]))
    assert _same_state(state, famo.state_dict())


class _Hosts:
    """Counts the host reads of tensors (``bool``, ``item``, ``tolist``, ``float``, ``int``) while active."""

    NAMES = ("__bool__", "item", "tolist", "__float__", "__int__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(t: Tensor, *args: Any) -> Any:
            self.count += 1
            return fn(t, *args)

        return wrapped


@pytest.mark.parametrize(
    ("name", "mode"), [("ew", "auto"), ("uw", "auto"), ("mgda", "gramian"), ("upgrad", "loop")]
)
def test_the_finite_check_reads_the_device_once_per_step(
    name: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = _Net()
    counts = {}
    for check in (True, False):
        bal = molearn.Balancer(get(name), net.trunk, mode=mode, check_finite=check)  # type: ignore[arg-type]
        bal.backward(net.losses(torch.randn(8, 4)))  # warm-up (the first step discovers the heads)
        losses = net.losses(torch.randn(8, 4))
        hosts = _Hosts(monkeypatch)
        bal.backward(losses)
        monkeypatch.undo()
        counts[check] = hosts.count
    assert counts == {True: 1, False: 0}


# ------------------------------------------------------------------------------------------ failure 3
def test_a_shared_parameter_listed_twice_is_refused() -> None:
    """MGDA, UPGrad and PCGrad silently doubled its gradient (×1.41 for Nash-MTL and MoCo)."""
    net = _Net()
    w, b = net.trunk[0].weight, net.trunk[0].bias
    with pytest.raises(
        ValueError, match=r"shared parameter 2 \(shape \(6, 4\)\) is the same tensor as shared parameter 0"
    ):
        molearn.Balancer(get("mgda"), [w, b, w])
    with pytest.raises(
        ValueError, match=r"task parameter 1 \(shape \(6,\)\) is the same tensor as shared parameter 1"
    ):
        molearn.Balancer(get("pcgrad"), [w, b], [net.heads[0].weight, b])
    with pytest.raises(ValueError, match=r"task parameter 1 .* is the same tensor as task parameter 0"):
        molearn.Balancer(get("upgrad"), [w], [b, b])
    with pytest.raises(ValueError, match=r"task parameter 0 \(shape \(1, 6\)\) does not require grad"):
        molearn.Balancer(get("ew"), [w], [net.heads[0].weight.detach()])


@pytest.mark.parametrize("name", ["ew", "mgda", "nashmtl", "moco"])
def test_a_detached_loss_is_named(name: str) -> None:
    net = _Net()
    losses = net.losses(torch.randn(8, 4))
    losses[1] = losses[1].detach()
    bal = molearn.Balancer(get(name), net.trunk.parameters())
    with pytest.raises(ValueError, match="objective 1: the loss does not require grad"):
        bal.backward(losses)
    with pytest.raises(ValueError, match="objective 1: the loss does not require grad"):
        bal.backward(torch.stack(losses))  # the same, stacked by the user
    assert all(p.grad is None for p in net.parameters())


def test_integer_losses_are_refused() -> None:
    net = _Net()
    with pytest.raises(TypeError, match="floating-point"):
        molearn.Balancer(get("ew"), net.trunk.parameters()).backward(torch.tensor([1, 2]))


# ------------------------------------------------------------------------------------------ failure 4
OPPOSITE = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize("name", ["nashmtl", "fairgrad"])
def test_a_fallback_is_not_reported_as_converged(name: str) -> None:
    out = get(name).combine(Inputs(losses=torch.ones(2), gramian=OPPOSITE))
    assert out.weights is not None and torch.equal(out.weights, torch.zeros(2))
    assert float(out.info["residual"]) > 1e-3
    assert int(out.info["status"]) == INFEASIBLE and status_name(out.info["status"]) == "infeasible"
    good = get(name).combine(Inputs(losses=torch.ones(2), gramian=torch.tensor([[2.0, 0.5], [0.5, 1.0]])))
    assert int(good.info["status"]) == CONVERGED and float(good.info["residual"]) <= 1e-6


def test_alpha_fair_status_tells_the_three_cases_apart() -> None:
    torch.manual_seed(0)
    # solvable (every gradient has a positive product with d) with norms over 6 orders of magnitude:
    # three Newton steps are not enough, twelve are
    d = torch.randn(6, dtype=torch.float64)
    j = torch.randn(8, 6, dtype=torch.float64)
    j = j + (0.05 - (j @ d) / d.norm() ** 2).clamp_min(0)[:, None] * d
    j = j * torch.logspace(-3, 3, 8, dtype=torch.float64)[:, None]
    g = j @ j.T
    w, res, status = alpha_fair_with_status(g, 2.0, iters=3)
    assert int(status) == ITERATION_LIMIT and float(res) > 1e-3 and torch.equal(w, torch.zeros(8))
    w, res, status = alpha_fair_with_status(g, 2.0, iters=12)
    assert int(status) == CONVERGED and float(res) < 1e-9 and bool((w > 0).all())
    w, res, status = alpha_fair_with_status(torch.zeros(3, 3), 2.0)
    assert int(status) == INFEASIBLE and float(res) == float("inf")
    # batched: one of each
    batch = torch.stack([OPPOSITE, torch.eye(2, dtype=torch.float64)])
    assert alpha_fair_with_status(batch, 1.0)[2].tolist() == [INFEASIBLE, CONVERGED]


@pytest.mark.parametrize("name", ["mgda", "upgrad", "dualproj", "sdmgrad", "nashmtl", "fairgrad"])
def test_every_reported_residual_has_a_status(name: str) -> None:
    """Converged exactly when the residual is within the solver's tolerance (SDMGrad's official SGD
    inner solver stops short of it: an iteration limit, said so)."""
    torch.manual_seed(0)
    j = torch.randn(3, 5)
    method = get(name, **({"batches": 1} if name == "sdmgrad" else {}))
    out = method.combine(Inputs(losses=torch.ones(3), gramian=j @ j.T, jacobian=j))
    tol = 1e-3 if name in ("nashmtl", "fairgrad") else 1e-6
    expected = CONVERGED if float(out.info["residual"]) <= tol else ITERATION_LIMIT
    assert int(out.info["status"]) == expected
    assert name == "sdmgrad" or expected == CONVERGED


# ------------------------------------------------------------------------------------------ failure 5
def test_update_after_a_skipped_step_does_not_touch_famo() -> None:
    net = _Net()
    famo = get("famo")
    bal = molearn.Balancer(famo, net.trunk.parameters(), on_nonfinite="skip")
    bal.backward(net.losses(torch.randn(8, 4)))
    bal.update(torch.stack(net.losses(torch.randn(8, 4))).detach())
    state = famo.state_dict()
    info = bal.backward(net.losses(torch.randn(8, 4), bad=0))
    assert info.skipped
    bal.update(torch.stack(net.losses(torch.randn(8, 4))).detach())  # nothing to learn from
    assert _same_state(state, famo.state_dict())
    strict = molearn.Balancer(get("famo"), net.trunk.parameters())
    with pytest.raises(RuntimeError, match="completed backward"):
        strict.update(torch.ones(K))


def test_a_cached_single_task_result_of_the_wrong_type_names_the_file(tmp_path: Path) -> None:
    from molearn.compare._run import read_stl_cache

    good = {"label": "STL-a", "seed": 0, "task": "a", "steps": 3, "error": None}
    good["history"] = [{"epoch": 1, "test": {"acc": 0.5}, "val": {}}]
    path = tmp_path / "abc.json"
    path.write_text(json.dumps(good))
    assert read_stl_cache(path)["history"][0]["test"] == {"acc": 0.5}
    for key, value in [
        ("history", "oops"),
        ("steps", "3"),
        ("error", 5),
        ("history", [{"epoch": 1, "test": {"acc": "x"}}]),
    ]:
        path.write_text(json.dumps({**good, key: value}))
        with pytest.raises(ValueError, match=r"abc\.json"):
            read_stl_cache(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"abc\.json"):
        read_stl_cache(path)


# ------------------------------------------------------------------------------------------ the engine
def test_all_finite_reads_extremes_not_sums() -> None:
    from molearn.engine import all_finite

    cpu = torch.device("cpu")
    big = torch.full((1000,), 3e38)  # finite, but its sum (or squared norm) overflows float32
    assert bool(all_finite([big, torch.ones(2, dtype=torch.bfloat16)], cpu))
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.ones(7, dtype=torch.float16)
        t[3] = bad
        assert not bool(all_finite([big, t], cpu))
    assert bool(
        all_finite([torch.zeros(0), torch.arange(3)], cpu)
    )  # empty and integer tensors: nothing to check


def test_a_staged_gradient_takes_the_parameters_layout() -> None:
    """``sum()`` back-propagates an expanded (stride 0) gradient: ``.grad`` must be a dense tensor that the
    optimiser can update in place, as after ``Tensor.backward``."""
    p = nn.Parameter(torch.randn(3, 4))
    q = nn.Parameter(torch.randn(4, 3).T)  # a transposed parameter: .grad keeps its strides
    bal = molearn.Balancer(get("ew"), [p, q])
    bal.backward([p.sum(), (q * 2).sum()])
    assert p.grad is not None and q.grad is not None
    assert p.grad.stride() == p.stride() and q.grad.stride() == q.stride()
    assert torch.equal(p.grad, torch.ones(3, 4)) and torch.equal(q.grad, torch.full((3, 4), 2.0))
    opt = torch.optim.SGD([p, q], lr=0.1, momentum=0.9)
    opt.step()
    bal.backward([p.sum(), (q * 2).sum()])  # accumulates into the existing .grad
    assert torch.equal(p.grad, torch.full((3, 4), 2.0))
