"""Spatial Group-wise Enhance: naive per-group reference, init behaviour, degenerate maps, gradients."""
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from asge.layers import CONTEXTS, SpatialGroupEnhance, create_context
from helpers import context_cnn, train_by_backprop


pytestmark = pytest.mark.usefixtures("single_thread")


def naive_sge(x, groups, gamma, beta, eps=1e-5):
    """Explicit loop over samples and groups, in float64."""
    x = x.double()
    b, c, h, w = x.shape
    cg = c // groups
    out = torch.empty_like(x)
    for i in range(b):
        for g in range(groups):
            xg = x[i, g * cg:(g + 1) * cg]  # (C/G, H, W)
            mean_vec = xg.mean(dim=(1, 2))  # (C/G,)
            sim = torch.einsum("chw,c->hw", xg, mean_vec)
            if h * w > 1:
                sim = (sim - sim.mean()) / (sim.std() + eps)  # unbiased std, as torch.std
            else:
                sim = torch.zeros_like(sim)
            gate = torch.sigmoid(gamma[g] * sim + beta[g])
            out[i, g * cg:(g + 1) * cg] = xg * gate
    return out


def _randomised(channels, groups, **kw):
    m = SpatialGroupEnhance(channels, groups, **kw)
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    return m


def test_init_is_x_times_sigmoid_one():
    m = SpatialGroupEnhance(32, 8)
    assert_close(m.weight, torch.zeros(1, 8, 1, 1))
    assert_close(m.bias, torch.ones(1, 8, 1, 1))
    x = torch.randn(2, 32, 5, 7)
    assert_close(m(x), x * torch.sigmoid(torch.tensor(1.0)))


@pytest.mark.parametrize("channels,groups,h,w", [(16, 4, 5, 6), (12, 12, 3, 3), (8, 1, 4, 4), (6, 3, 1, 7)])
def test_matches_naive_reference(channels, groups, h, w):
    m = _randomised(channels, groups, dtype=torch.float64)
    x = torch.randn(3, channels, h, w, dtype=torch.float64)
    ref = naive_sge(x, groups, m.weight.flatten(), m.bias.flatten())
    assert_close(m(x), ref)
    m32 = _randomised(channels, groups)
    x32 = x.float()
    assert_close(m32(x32), naive_sge(x32, groups, m32.weight.flatten().double(), m32.bias.flatten().double()).float(),
                 rtol=1e-4, atol=1e-5)


def test_gradcheck():
    m = _randomised(8, 4, dtype=torch.float64)
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    gamma = m.weight.detach().clone().requires_grad_(True)
    beta = m.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, g, b: torch.func.functional_call(m, {"weight": g, "bias": b}, (t,)), (x, gamma, beta))


@pytest.mark.parametrize("shape", [(2, 16, 1, 1), (1, 16, 1, 1), (2, 16, 4, 4)])
def test_single_position_and_all_zero_maps_are_finite(shape):
    m = _randomised(16, 4)
    x = torch.randn(shape, requires_grad=True)
    out = m(x)
    if shape[2] * shape[3] == 1:  # normalised similarity is 0 -> gate sigmoid(beta)
        assert_close(out, x * torch.sigmoid(m.bias).repeat_interleave(4, dim=1))
    zeros = torch.zeros(shape, requires_grad=True)
    out_z = m(zeros)
    assert_close(out_z, torch.zeros(shape))
    (out.sum() + out_z.sum()).backward()
    for t in (x.grad, zeros.grad, m.weight.grad, m.bias.grad):
        assert torch.isfinite(t).all()
    # all-zero input: d out / d x = sigmoid(beta) per group (the similarity path contributes 0)
    assert_close(zeros.grad, torch.sigmoid(m.bias.detach()).repeat_interleave(4, dim=1).expand(shape))


def test_constant_map_is_finite():
    m = _randomised(8, 2)
    x = torch.full((2, 8, 5, 5), 3.0, requires_grad=True)
    out = m(x)
    assert_close(out, x.detach() * torch.sigmoid(m.bias.detach()).repeat_interleave(4, dim=1))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.weight.grad).all()


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_large_inputs(scale):
    m = _randomised(8, 2)
    x = (torch.randn(2, 8, 6, 6) * scale).requires_grad_(True)
    out = m(x)
    assert torch.isfinite(out).all()
    assert_close(out, naive_sge(x.detach(), 2, m.weight.flatten().double(), m.bias.flatten().double()).float(),
                 rtol=1e-4, atol=1e-2)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_half_precision_and_autocast():
    torch.manual_seed(0)
    m = _randomised(8, 4)
    x = torch.randn(2, 8, 6, 6) * 50
    out16 = m(x.half())
    assert out16.dtype == torch.float16 and torch.isfinite(out16).all()
    assert_close(out16, m(x.half().float()).half())  # statistics in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = nn.Conv2d(8, 8, 1)(x)
        out = m(h)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    # h itself is rounded to bf16 (unit roundoff 2**-8) before the gate: a few 2**-8-sized steps of error
    assert_close(out.float(), m(h.float()), rtol=2e-2, atol=2e-2)


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match="divisible by groups"):
        SpatialGroupEnhance(48, 64)
    with pytest.raises(ValueError, match="divisible by groups"):
        SpatialGroupEnhance(10, 4)


def test_factory():
    assert create_context("sge", 128).groups == 64
    assert create_context("sge", 32).groups == 32  # capped at channels
    assert create_context("sge", 48, groups=16, feat_size=8).groups == 16  # feat_size is accepted, unused
    with pytest.raises(ValueError, match="does not divide channels=96"):
        create_context("sge", 96)
    with pytest.raises(ValueError, match="ge, ge-minus, ge-plus, gsop, gsop-spatial, none, sge"):
        create_context("sg", 16)
    assert "sge" in CONTEXTS


def test_device_and_dtype_passing():
    m = create_context("sge", 16, groups=4, device="meta", dtype=torch.float64)
    assert all(p.device.type == "meta" and p.dtype == torch.float64 for p in m.parameters())
    assert m(torch.empty(2, 16, 3, 3, device="meta", dtype=torch.float64)).shape == (2, 16, 3, 3)


def test_trains_inside_a_small_cnn():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    sge = SpatialGroupEnhance(16, 4)
    net = context_cnn(sge)
    losses = train_by_backprop(net, x, y)
    assert losses[-1] < 0.8 * losses[0]
    assert sge.weight.abs().sum() > 0  # gamma left its zero init
    assert not torch.equal(sge.bias.detach(), torch.ones_like(sge.bias))
