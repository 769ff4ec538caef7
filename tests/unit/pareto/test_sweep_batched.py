"""The batched preference sweep (one ``combine_many`` solve for all preferences) equals the loop."""

from __future__ import annotations

import pytest
import torch

from molearn.methods import COSMOS, EPO, PMGDA, Inputs
from molearn.pareto import preference_sweep, problem

F64 = torch.float64


@pytest.mark.parametrize("cls", [EPO, PMGDA, COSMOS])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_combine_many_equals_combine_row_by_row(cls: type[EPO] | type[PMGDA] | type[COSMOS], k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    n = 12
    jac = torch.randn(n, k, 6, generator=gen, dtype=F64)
    gram = jac @ jac.transpose(1, 2)
    prefs = torch.rand(n, k, generator=gen, dtype=F64) + 0.1
    prefs = prefs / prefs.sum(1, keepdim=True)
    losses = torch.rand(n, k, generator=gen, dtype=F64) + 0.1
    losses[::3] = (1 / prefs[::3] if cls is EPO else prefs[::3]) * (1 + 1e-5 * losses[::3])  # on the ray
    ms = [cls(prefs[i]) for i in range(n)]
    w = cls.combine_many(ms, losses, gram)
    assert w is not None and w.shape == (n, k)
    for i in range(n):
        out = ms[i].combine(Inputs(losses=losses[i], gramian=gram[i]))
        torch.testing.assert_close(w[i], out.weights, rtol=1e-12, atol=1e-12)


def test_combine_many_declines_mixed_instances() -> None:
    losses, gram = torch.ones(2, 2, dtype=F64), torch.eye(2, dtype=F64).expand(2, 2, 2)
    assert EPO.combine_many([EPO(), EPO(eps=1e-3)], losses, gram) is None
    assert EPO.combine_many([EPO(), PMGDA()], losses, gram) is None
    assert PMGDA.combine_many([PMGDA(), PMGDA(h_tol=0.1)], losses, gram) is None
    assert COSMOS.combine_many([COSMOS(), COSMOS(mu=1.0)], losses, None) is None
    assert EPO.combine_many([EPO(), EPO()], losses, None) is None  # needs the Gramians


@pytest.mark.parametrize(
    ("name", "prob"), [("epo", "zdt1"), ("epo", "dtlz2"), ("pmgda", "zdt1"), ("cosmos", "zdt1")]
)
def test_batched_sweep_equals_the_per_preference_loop(name: str, prob: str) -> None:
    p = problem(prob, n_var=6)
    kw = {"steps": 25, "lr": 0.05, "seed": 1}
    fast = preference_sweep(p, name, 10, batched=True, **kw)  # type: ignore[arg-type]
    slow = preference_sweep(p, name, 10, batched=False, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(fast.X, slow.X, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fast.F, slow.F, rtol=1e-9, atol=1e-12)
