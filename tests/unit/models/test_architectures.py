"""The multi-task architectures of molearn.models: shapes, the shared / task-specific split (disjoint,
covering, and matching which task's output each parameter reaches), the properties of each design
(cross-stitch identity, gates on the simplex, DSelect-k's k-sparsity, attention masks in (0, 1)), the
SegNet-MTAN parameter count of the official model, and two training steps through the Balancer with one
method of each family (loss-only, Gramian, Jacobian, after-step, Nash bargaining)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molearn import Balancer
from molearn.compare._benchmark import split_parameters
from molearn.methods import get
from molearn.models import (
    CGC,
    MTAN,
    PLE,
    CelebANet,
    CrossStitch,
    DSelectK,
    HardSharing,
    MMoE,
    ResNet18MultiHead,
    SegNet,
    SegNetMTAN,
    is_normal_task,
    smooth_step,
)

torch.set_num_threads(1)
NYU = {"segmentation": 3, "depth": 1, "normal": 3}
K = 3  # tasks of the vector models


# ---------------------------------------------------------------------------------------------- fixtures
def _heads(width: int = 8, k: int = K) -> list[nn.Module]:
    return [nn.Linear(width, 1) for _ in range(k)]


def _conv_stage(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    return nn.Sequential(
        *layers, nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1)
    )


def _image_heads(width: int, k: int = K) -> list[nn.Module]:
    return [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1)) for _ in range(k)]


def hard_sharing() -> nn.Module:
    return HardSharing(nn.Sequential(nn.Linear(6, 8), nn.ReLU()), _heads())


def cross_stitch(init: tuple[float, float] = (0.9, 0.1)) -> CrossStitch:
    columns = [
        [nn.Sequential(nn.Linear(6, 8), nn.ReLU()), nn.Sequential(nn.Linear(8, 8), nn.ReLU())]
        for _ in range(K)
    ]
    return CrossStitch(columns, _heads(), init=init)


def mmoe() -> MMoE:
    return MMoE(6, _heads(), num_experts=3, expert_widths=(8,))


def cgc() -> CGC:
    return CGC(6, _heads(), num_shared=2, num_specific=1, expert_widths=(8,))


def ple() -> PLE:
    return PLE(6, _heads(), num_shared=2, num_specific=1, widths=(8, 8, 8))


def dselect_k() -> DSelectK:
    return DSelectK(6, _heads(), num_experts=4, k=2, expert_widths=(8,))


def mtan() -> MTAN:
    stages = [_conv_stage(3, 4, pool=False), _conv_stage(4, 8, pool=True)]
    return MTAN(stages, _image_heads(8), input_shape=(3, 8, 8))


def segnet_mtan() -> SegNetMTAN:
    return SegNetMTAN(NYU, filters=(4, 4, 8))


def segnet() -> SegNet:
    return SegNet(NYU, filters=(4, 4, 8))


def resnet18() -> ResNet18MultiHead:
    return ResNet18MultiHead([3, 1, 2], in_channels=1)


def celeba() -> CelebANet:
    return CelebANet(tasks=3)


g = torch.Generator().manual_seed(0)
VEC_X = torch.randn(4, 6, generator=g)
VEC_Y = torch.randn(4, K, generator=g)
IMG_X = torch.randn(4, 3, 8, 8, generator=g)
SEG_X = torch.randn(2, 3, 16, 16, generator=g)
SEG_Y = (
    torch.randint(0, 3, (2, 16, 16), generator=g),
    torch.rand(2, 1, 16, 16, generator=g),
    F.normalize(torch.randn(2, 3, 16, 16, generator=g), dim=1),
)
RES_X = torch.randn(2, 1, 16, 16, generator=g)
CEL_X = torch.randn(2, 3, 16, 16, generator=g)


def vector_losses(out: list[Tensor], y: Tensor) -> list[Tensor]:
    return [F.mse_loss(o.squeeze(-1), y[:, t]) for t, o in enumerate(out)]


def seg_losses(out: list[Tensor], _: Any) -> list[Tensor]:
    seg, depth, normal = SEG_Y
    return [F.cross_entropy(out[0], seg), F.l1_loss(out[1], depth), 1 - (out[2] * normal).sum(1).mean()]


def res_losses(out: list[Tensor], _: Any) -> list[Tensor]:
    return [(o - 1).square().mean() for o in out]  # positive, as FAMO's log-losses need


# name -> (factory, input, loss function of the outputs)
CASES: dict[str, tuple[Callable[[], nn.Module], Tensor, Callable[[list[Tensor], Any], list[Tensor]]]] = {
    "hard_sharing": (hard_sharing, VEC_X, vector_losses),
    "cross_stitch": (cross_stitch, VEC_X, vector_losses),
    "mmoe": (mmoe, VEC_X, vector_losses),
    "cgc": (cgc, VEC_X, vector_losses),
    "ple": (ple, VEC_X, vector_losses),
    "dselect_k": (dselect_k, VEC_X, vector_losses),
    "mtan": (mtan, IMG_X, vector_losses),
    "segnet_mtan": (segnet_mtan, SEG_X, seg_losses),
    "segnet": (segnet, SEG_X, seg_losses),
    "resnet18": (resnet18, RES_X, res_losses),
    "celeba": (celeba, CEL_X, res_losses),
}


def _ids(params: Any) -> set[int]:
    return {id(p) for p in params}


# ---------------------------------------------------------------------------------------------- shapes
def test_output_shapes() -> None:
    torch.manual_seed(0)
    for name in ("hard_sharing", "cross_stitch", "mmoe", "cgc", "ple", "dselect_k", "mtan"):
        factory, x, _ = CASES[name]
        out = factory()(x)
        assert [tuple(o.shape) for o in out] == [(x.shape[0], 1)] * K, name
    for model in (segnet_mtan(), segnet()):
        out = model(SEG_X)
        assert [tuple(o.shape) for o in out] == [(2, 3, 16, 16), (2, 1, 16, 16), (2, 3, 16, 16)]
        assert torch.allclose(out[2].norm(dim=1), torch.ones(2, 16, 16), atol=1e-5)  # normals: unit vectors
        assert not torch.allclose(out[0].norm(dim=1), torch.ones(2, 16, 16), atol=1e-2)  # the rest: raw
    model = resnet18()
    out = model(RES_X)
    assert [tuple(o.shape) for o in out] == [(2, 3), (2, 1), (2, 2)]
    model.eval()
    assert torch.equal(model(RES_X, task=2), model(RES_X)[2])  # multi-input use: one task's head
    cel = celeba()(torch.randn(2, 3, 64, 64))
    assert len(cel) == 3 and all(tuple(o.shape) == (2, 1) for o in cel)


def test_normal_rule_and_input_checks() -> None:
    assert is_normal_task("normal", 3) and is_normal_task("normal", 1)
    assert is_normal_task("normals", 3) and not is_normal_task("normals", 2)
    assert not is_normal_task("depth", 3) and not is_normal_task("surface_normal", 3)
    model = SegNetMTAN({"a": 2, "normal_3d": 3}, filters=(4, 4), normalized=["a"])
    assert model.normalized == [True, False]
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.randn(2, 3, 6, 8))
    with pytest.raises(TypeError, match="mapping"):
        SegNet([13, 1, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 heads"):
        CrossStitch([[nn.Linear(2, 2)]] * 3, [nn.Linear(2, 1)] * 2)


# ------------------------------------------------------------------------------------- parameter split
@pytest.mark.parametrize("name", list(CASES))
def test_split_is_disjoint_covering_and_follows_the_gradients(name: str) -> None:
    """Shared ∪ task = parameters(), disjoint; task t's output reaches every shared parameter, its own task
    parameters, and no other task's."""
    torch.manual_seed(0)
    factory, x, _ = CASES[name]
    model = factory()
    shared, tasks = split_parameters(model, name)  # the check `molearn compare` runs
    assert tasks is not None
    everything = list(model.parameters())
    assert _ids(shared).isdisjoint(_ids(tasks))
    assert _ids(shared) | _ids(tasks) == _ids(everything)
    assert len(shared) + len(tasks) == len(everything)  # no duplicates
    outputs = model(x)
    reached: list[set[int]] = []
    for out in outputs:
        grads = torch.autograd.grad(out.sum(), everything, retain_graph=True, allow_unused=True)
        reached.append(
            {id(p) for p, gr in zip(everything, grads) if gr is not None and bool(gr.abs().sum() > 0)}
        )
    for t, r in enumerate(reached):
        assert _ids(shared) <= r, f"{name}: task {t} misses shared parameters"
        others = set().union(*(reached[s] for s in range(len(reached)) if s != t))
        own = (r - others) & _ids(tasks)
        assert own, f"{name}: task {t} has no task-specific parameter of its own"
        assert (r & _ids(tasks)).isdisjoint(others), f"{name}: task {t} reaches another task's parameters"
    assert set().union(*reached) == _ids(everything), f"{name}: some parameter is reached by no task"


def test_segnet_mtan_shared_attention_is_nash_mtl_split() -> None:
    model = SegNetMTAN(NYU, filters=(4, 4), shared_attention=True)
    heads = _ids(model.heads.parameters())
    assert _ids(model.task_parameters()) == heads
    assert _ids(model.shared_parameters()) == _ids(model.parameters()) - heads


# ---------------------------------------------------------------------------------------------- designs
def test_cross_stitch_identity_equals_independent_columns() -> None:
    torch.manual_seed(0)
    model = cross_stitch(init=(1.0, 0.0))
    out = model(VEC_X)
    for t in range(K):
        h = VEC_X
        for stage in model.columns[t]:
            h = stage(h)
        assert torch.allclose(out[t], model.heads[t](h), atol=1e-6)
    # default init: (0.9, 0.1) everywhere, one (K, K) unit per stage
    default = cross_stitch()
    assert default.units.shape == (2, K, K)
    expected = torch.full((K, K), 0.1) + 0.8 * torch.eye(K)
    assert torch.allclose(default.units[1], expected)


def test_mmoe_and_cgc_gates_sum_to_one() -> None:
    torch.manual_seed(0)
    for model, width in ((mmoe(), 3), (cgc(), 3)):
        for w in model.gate_weights(VEC_X):
            assert w.shape == (4, width) and bool((w > 0).all())
            assert torch.allclose(w.sum(-1), torch.ones(4))
    # MMoE output = head(Σ_e g_e · expert_e), by hand for task 1
    model = mmoe()
    w = torch.softmax(model.gates[1](VEC_X), -1)
    mixed = sum(w[:, e : e + 1] * model.experts[e](VEC_X) for e in range(3))
    assert torch.allclose(model(VEC_X)[1], model.heads[1](mixed), atol=1e-6)


def test_smooth_step_values() -> None:
    t = torch.tensor([-2.0, -0.5, 0.0, 0.25, 0.5, 2.0])
    # S(t) = -2t³/γ³ + 3t/(2γ) + 1/2 inside [-γ/2, γ/2]; S(γ/4) = -1/32 + 3/8 + 1/2 = 0.84375
    assert torch.allclose(smooth_step(t), torch.tensor([0.0, 0.0, 0.5, 0.84375, 1.0, 1.0]))
    assert torch.allclose(smooth_step(2 * t, gamma=2.0), smooth_step(t))


def test_dselect_k_selectors_are_on_the_simplex_and_k_sparse_once_binary() -> None:
    torch.manual_seed(0)
    model = DSelectK(6, _heads(4, k=2), num_experts=8, k=3, gamma=1.0, expert_widths=(4,))
    # a power of 2 experts: every selector's weights sum to 1 (the simplex), for any logits
    for sel, w in model.selectors(VEC_X * 40):
        assert sel.shape == (4, 3, 8) and torch.allclose(sel.sum(-1), torch.ones(4, 3), atol=1e-6)
        assert torch.allclose(w.sum(-1), torch.ones(4))
    # binary selectors: logits beyond ±γ/2 -> each selector is one-hot on the expert whose code matches
    with torch.no_grad():
        model.z_logits[0].weight.zero_()
        model.z_logits[0].bias.copy_(torch.tensor([1.0, -1, 1, 1, 1, 1, -1, -1, 1]))  # codes 101, 111, 001
    sel, _ = model.selectors(VEC_X)[0]
    assert torch.equal(sel[0].argmax(-1), torch.tensor([5, 7, 1]))
    assert torch.equal(sel.sum(-1), torch.ones(4, 3)) and torch.equal(sel.amax(-1), torch.ones(4, 3))
    weights = model.gate_weights(VEC_X)[0]
    assert bool(((weights > 0).sum(-1) <= 3).all())
    assert torch.allclose(weights.sum(-1), torch.ones(4))
    assert set(weights[0].nonzero().flatten().tolist()) == {1, 5, 7}
    # two selectors on the same expert: fewer non-zeros than k
    with torch.no_grad():
        model.z_logits[0].bias.copy_(torch.tensor([1.0, -1, 1, 1, -1, 1, -1, -1, 1]))  # 101, 101, 001
    assert set(model.gate_weights(VEC_X)[0][0].nonzero().flatten().tolist()) == {1, 5}


def test_dselect_k_regularization_for_unreachable_codes() -> None:
    torch.manual_seed(0)
    model = DSelectK(6, _heads(4, k=2), num_experts=3, k=2, expert_widths=(4,), per_example=False)
    assert model.num_binary == 2  # 3 experts need 2 bits; code 11 is unreachable
    model.train()
    model(VEC_X)
    regs = model.regularization()
    sel = model.selectors(VEC_X)[0][0]
    assert torch.allclose(regs[0], (1 / sel.sum(-1)).sum())
    assert bool(regs[0] > 4 * 2)  # 8 selector rows, each with reachable mass < 1
    model.eval()
    model(VEC_X)
    assert all(float(r) == 0.0 for r in model.regularization())


def test_attention_masks_are_in_the_open_unit_interval() -> None:
    torch.manual_seed(0)
    for model, x, count in ((mtan(), IMG_X, 2), (segnet_mtan(), SEG_X, 6)):
        masks = model.attention_masks(x)
        assert len(masks) == 3 and all(len(m) == count for m in masks)
        for m in (m for task in masks for m in task):
            assert bool((m > 0).all()) and bool((m < 1).all())
    # the generic MTAN on vector features (an MLP backbone)
    stages = [nn.Sequential(nn.Linear(6, 8), nn.ReLU()), nn.Sequential(nn.Linear(8, 5), nn.ReLU())]
    vec = MTAN(stages, _heads(5), input_shape=(6,))
    assert [tuple(o.shape) for o in vec(VEC_X)] == [(4, 1)] * K


def _conv_layer(cin: int, cout: int) -> int:  # Conv2d 3×3 with bias + BatchNorm2d (weight, bias)
    return 9 * cin * cout + cout + 2 * cout


def _att_layer(cin: int, mid: int, cout: int) -> int:  # 1×1 conv + BN + 1×1 conv + BN
    return cin * mid + mid + 2 * mid + mid * cout + cout + 2 * cout


def _pred_layer(c: int, out: int) -> int:  # Conv2d 3×3 (c -> c) + Conv2d 1×1 (c -> out)
    return 9 * c * c + c + c * out + out


def test_segnet_mtan_has_the_official_parameter_count() -> None:
    """The layer list of lorenmt/mtan ``model_segnet_mtan.py`` (as Nash-MTL / FAMO use it, without
    ``logsigma``), filters [64, 128, 256, 512, 512], 13 / 1 / 3 output channels, counted by hand."""
    enc = _conv_layer(3, 64) + _conv_layer(64, 128) + _conv_layer(128, 256) + _conv_layer(256, 512)
    enc += _conv_layer(512, 512)  # encoder_block
    dec = _conv_layer(64, 64) + _conv_layer(128, 64) + _conv_layer(256, 128) + _conv_layer(512, 256)
    dec += _conv_layer(512, 512)  # decoder_block
    conv_enc = (
        _conv_layer(64, 64) + _conv_layer(128, 128) + 2 * _conv_layer(256, 256) + 4 * _conv_layer(512, 512)
    )
    conv_dec = 2 * _conv_layer(64, 64) + 2 * _conv_layer(128, 128) + 2 * _conv_layer(256, 256)
    conv_dec += 2 * _conv_layer(512, 512)
    enc_att = _att_layer(64, 64, 64) + _att_layer(256, 128, 128) + _att_layer(512, 256, 256)
    enc_att += 2 * _att_layer(1024, 512, 512)  # per task
    dec_att = _att_layer(128, 64, 64) + _att_layer(192, 64, 64) + _att_layer(384, 128, 128)
    dec_att += _att_layer(768, 256, 256) + _att_layer(1024, 512, 512)  # per task
    block_att = (
        _conv_layer(64, 128) + _conv_layer(128, 256) + _conv_layer(256, 512) + 2 * _conv_layer(512, 512)
    )
    block_att += _conv_layer(64, 64) + _conv_layer(128, 64) + _conv_layer(256, 128) + _conv_layer(512, 256)
    block_att += _conv_layer(512, 512)
    heads = _pred_layer(64, 13) + _pred_layer(64, 1) + _pred_layer(64, 3)
    shared = enc + dec + conv_enc + conv_dec + block_att
    total = shared + 3 * (enc_att + dec_att) + heads
    assert total == 44_229_073  # also what the official class reports (checked against its code)
    model = SegNetMTAN({"segmentation": 13, "depth": 1, "normal": 3})
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.shared_parameters()) == shared
    split = SegNet({"segmentation": 13, "depth": 1, "normal": 3})
    assert sum(p.numel() for p in split.parameters()) == enc + dec + conv_enc + conv_dec + heads == 25_055_185


def test_resnet18_trunk_is_resnet18() -> None:
    model = ResNet18MultiHead([10])
    # torchvision's resnet18 has 11,689,512 parameters, of which fc (512·1000 + 1000) = 513,000
    assert sum(p.numel() for p in model.trunk.parameters()) == 11_689_512 - 513_000
    assert sum(p.numel() for p in CelebANet().parameters()) == 5_197_160  # FAMO's CelebA Network


# ---------------------------------------------------------------------------------------------- training
METHODS = ["ew", "mgda", "pcgrad", "famo", "nashmtl"]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_two_balanced_steps(name: str, method: str) -> None:
    torch.manual_seed(0)
    factory, x, loss = CASES[name]
    model = factory()
    target = VEC_Y

    def loss_fn(_: Any) -> list[Tensor]:
        return loss(model(x), target)

    shared, tasks = list(model.shared_parameters()), list(model.task_parameters())
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Balancer(get(method), shared=shared, tasks=tasks, module=model) as bal:
        for _ in range(2):
            info = bal.step(loss_fn, lambda: None, opt)
            assert bool(torch.isfinite(info.losses).all()), (name, method)
    changed = {id(p) for p, b in zip(model.parameters(), before) if not torch.equal(p.detach(), b)}
    assert changed & _ids(shared) and changed & _ids(tasks), (name, method)
    for t in range(len(model.heads)):  # every task's head moved
        assert changed & _ids(model.heads[t].parameters()), (name, method, t)
    with torch.no_grad():
        assert math.isfinite(float(sum(loss_fn(None))))
