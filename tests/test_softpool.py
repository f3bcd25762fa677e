"""SoftPool 1-D/2-D/3-D: against a naive per-window reference, MaxPool shape parity, stability, gradients."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from asge.layers import (POOLS, SoftPool1d, SoftPool2d, SoftPool3d, create_pool, soft_pool1d, soft_pool2d,
                         soft_pool3d)
from helpers import train_by_backprop

FN = {1: soft_pool1d, 2: soft_pool2d, 3: soft_pool3d}
MOD = {1: SoftPool1d, 2: SoftPool2d, 3: SoftPool3d}
MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


pytestmark = pytest.mark.usefixtures("single_thread")


def _t(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def naive_soft_pool(x, n, kernel, stride=None, padding=0, ceil_mode=False, shared=False):
    """Loop over output positions; each window = the in-image indices of [o*s - p, o*s - p + k)."""
    k, p = _t(kernel, n), _t(padding, n)
    s = k if stride is None else _t(stride, n)
    sizes = x.shape[2:]
    outs = []
    for L, ki, si, pi in zip(sizes, k, s, p):
        num = L + 2 * pi - ki
        o = (math.ceil(num / si) if ceil_mode else num // si) + 1
        if ceil_mode and (o - 1) * si >= L + pi:
            o -= 1
        outs.append(o)
    x = x.double()
    logits = torch.logsumexp(x, dim=1, keepdim=True).expand_as(x) if shared else x
    out = torch.empty(x.shape[:2] + tuple(outs), dtype=torch.float64)
    for pos in itertools.product(*[range(o) for o in outs]):
        idx = [[i for i in range(o * si - pi, o * si - pi + ki) if 0 <= i < L]
               for o, si, pi, ki, L in zip(pos, s, p, k, sizes)]
        cells = list(itertools.product(*idx))
        vals = torch.stack([x[(slice(None), slice(None)) + c] for c in cells], -1)
        lg = torch.stack([logits[(slice(None), slice(None)) + c] for c in cells], -1)
        w = torch.exp(lg - lg.max(-1, keepdim=True).values)
        out[(slice(None), slice(None)) + pos] = (w * vals).sum(-1) / w.sum(-1)
    return out


CASES = [  # (n, spatial size, kernel, stride, padding, ceil_mode)
    (1, (9,), 2, None, 0, False), (1, (9,), 3, 2, 1, True), (1, (10,), 4, 3, 2, True), (1, (7,), 3, 1, 1, False),
    (2, (7, 6), 2, None, 0, True), (2, (7, 9), 3, 2, 1, True), (2, (8, 5), (3, 2), (2, 1), (1, 0), False),
    (2, (6, 6), 4, 3, 2, True), (3, (5, 4, 6), 2, None, 0, True), (3, (5, 6, 4), 3, 2, 1, True),
    (3, (4, 5, 5), (1, 3, 2), (1, 2, 2), (0, 1, 1), False),
    (1, (11,), 2, 4, 1, True), (2, (9, 8), 2, 3, 1, False), (2, (9, 8), (3, 2), (4, 3), (1, 1), True),  # gaps
]


@pytest.mark.parametrize("n,size,k,s,p,ceil", CASES)
def test_matches_naive_reference(n, size, k, s, p, ceil):
    x = torch.randn((2, 3) + size, dtype=torch.float64) * 3
    out = FN[n](x, k, s, p, ceil)
    assert out.dtype == torch.float64
    assert_close(out, naive_soft_pool(x, n, k, s, p, ceil))
    # float32 input: same up to float32 rounding, returned as float32
    out32 = MOD[n](k, s, p, ceil)(x.float())
    assert out32.dtype == torch.float32
    assert_close(out32, naive_soft_pool(x, n, k, s, p, ceil).float(), rtol=1e-5, atol=1e-5)


def test_equals_exp_weighted_average_pool():
    """With no padding the paper's formula is avg_pool(x e^x) / avg_pool(e^x)."""
    x = torch.randn(2, 4, 8, 6, dtype=torch.float64)
    ref = F.avg_pool2d(x * x.exp(), 2) / F.avg_pool2d(x.exp(), 2)
    assert_close(soft_pool2d(x, 2), ref)
    x3 = torch.randn(1, 2, 4, 6, 6, dtype=torch.float64)
    ref3 = F.avg_pool3d(x3 * x3.exp(), (2, 3, 3), (1, 3, 2)) / F.avg_pool3d(x3.exp(), (2, 3, 3), (1, 3, 2))
    assert_close(soft_pool3d(x3, (2, 3, 3), (1, 3, 2)), ref3)


def test_known_values():
    x = torch.tensor([[[0.0, math.log(3.0), 5.0, 5.0]]], dtype=torch.float64)
    # window 1: weights (1/4, 3/4) -> 3/4 * log 3; window 2: equal values -> 5
    assert_close(soft_pool1d(x, 2), torch.tensor([[[0.75 * math.log(3.0), 5.0]]], dtype=torch.float64))
    # a constant map pools to the constant, padding or not
    c = torch.full((1, 2, 5, 5), -2.5)
    assert_close(soft_pool2d(c, 3, 2, 1, ceil_mode=True), torch.full((1, 2, 3, 3), -2.5))


def test_tends_to_max_pool_for_large_activations():
    x = torch.randperm(2 * 3 * 8 * 8).reshape(2, 3, 8, 8).double()  # distinct values, gaps of 1
    assert_close(soft_pool2d(x * 50, 3, 2, 1) / 50, F.max_pool2d(x, 3, 2, 1), rtol=0, atol=1e-12)


def test_per_channel_not_channel_shared():
    x = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    x[0, 0, 0] = torch.tensor([0.0, 1.0])
    x[0, 1, 0] = torch.tensor([5.0, 0.0])
    per_channel = soft_pool2d(x, (1, 2))
    assert_close(per_channel[0, 1, 0, 0], (5 * math.exp(5)) / (math.exp(5) + 1) * torch.ones((), dtype=torch.float64))
    shared = soft_pool2d(x, (1, 2), legacy_channel_shared=True)
    assert not torch.allclose(per_channel, shared)


def test_legacy_channel_shared_reproduces_reference_cpu_formula():
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    e = x.exp().sum(dim=1, keepdim=True)  # one spatial weight map for all channels
    ref = F.avg_pool2d(x * e, 2) / F.avg_pool2d(e, 2)
    assert_close(soft_pool2d(x, 2, legacy_channel_shared=True), ref)
    assert_close(SoftPool2d(3, 2, 1, True, legacy_channel_shared=True)(x),
                 naive_soft_pool(x, 2, 3, 2, 1, True, shared=True))
    big = soft_pool2d(torch.randn(2, 5, 6, 6) * 1e4, 2, legacy_channel_shared=True)
    assert torch.isfinite(big).all()


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("ceil", [False, True])
def test_output_shape_matches_maxpool(n, ceil):
    checked = 0
    for L, k, s, p in itertools.product([1, 2, 5, 6, 7], [1, 2, 3, 4], [None, 1, 3], [0, 1, 2]):
        size = (L, L + 1, L + 2)[:n]
        x = torch.randn((1, 1) + size)
        try:
            expected = MAXPOOL[n](k, s, p, ceil_mode=ceil)(x).shape
        except RuntimeError:
            with pytest.raises(ValueError):
                FN[n](x, k, s, p, ceil)
            continue
        got = FN[n](x, k, s, p, ceil).shape
        assert got == expected, (n, size, k, s, p, ceil)
        checked += 1
    assert checked > 60


def test_unbatched_input_and_bad_rank():
    x = torch.randn(3, 7, 5)
    assert_close(soft_pool2d(x, 2, ceil_mode=True), soft_pool2d(x[None], 2, ceil_mode=True)[0])
    assert soft_pool1d(torch.randn(3, 9), 3).shape == (3, 3)
    with pytest.raises(ValueError, match="expects"):
        soft_pool2d(torch.randn(5, 5), 2)
    with pytest.raises(ValueError, match="kernel_size"):
        soft_pool2d(torch.randn(1, 1, 5, 5), (2, 2, 2))


@pytest.mark.parametrize("n,k,s,p,ceil", [(1, 3, 2, 1, True), (2, 2, None, 0, False), (2, 3, 2, 1, True),
                                          (3, 2, 2, 1, True), (2, 2, 3, 1, True)])
@pytest.mark.parametrize("shared", [False, True])
def test_gradcheck(n, k, s, p, ceil, shared):
    x = torch.randn((1, 2) + (5, 4, 3)[:n], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: FN[n](t, k, s, p, ceil, shared), (x,))


@pytest.mark.parametrize("value", [1e4, -1e4, 0.0])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_constant_extremes_are_exact_and_finite(value, n):
    x = torch.full((2, 3) + (5,) * n, value, requires_grad=True)
    out = FN[n](x, 2, 2, 1, True)
    assert_close(out, torch.full_like(out, value))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_large_magnitude_mixed_inputs():
    x = torch.randn(2, 4, 9, 9) * 1e4
    x[0, 0, :2, :2] = torch.tensor([[1e4, -1e4], [-1e4, -1e4]])
    x.requires_grad_(True)
    out = soft_pool2d(x, 2, 2, 1, True)
    assert torch.isfinite(out).all()
    assert soft_pool2d(x, 2)[0, 0, 0, 0] == 1e4  # exp(-2e4) vanishes next to exp(0): exactly the max
    # a window whose values are all far below the global maximum does not underflow to 0/0
    x2 = torch.tensor([[[3e4, 0.0, -3e4, -3e4 - 1.0]]], requires_grad=True)
    out2 = soft_pool1d(x2, 2)
    assert_close(out2, torch.tensor([[[3e4, -3e4 + (-1.0) * math.exp(-1) / (1 + math.exp(-1))]]]))
    (out.sum() + out2.sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(x2.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x = torch.randn(2, 3, 8, 8) * 20  # exp(20) already overflows float16
    x[0, 0, 0, 0] = 1e4
    xh = x.to(dtype)
    out = soft_pool2d(xh, 2)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = soft_pool2d(xh.float(), 2)  # the computation itself is float32
    assert_close(out, ref.to(dtype))
    zeros = soft_pool3d(torch.zeros(1, 2, 4, 4, 4, dtype=dtype), 2)
    assert (zeros == 0).all()


def test_bf16_autocast():
    x = (torch.randn(2, 3, 8, 8) * 1e4).requires_grad_(True)
    conv = nn.Conv2d(3, 3, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = soft_pool2d(x, 3, 2, 1, True)  # float32 input stays float32
        y = SoftPool2d(2)(conv(x.detach() / 1e4))  # bf16 activation from an autocast conv
    assert out.dtype == torch.float32
    assert_close(out, soft_pool2d(x.detach(), 3, 2, 1, True))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_registry_and_modules():
    pool = create_pool("soft")
    assert isinstance(pool, SoftPool2d) and POOLS["soft"] is not None
    x = torch.randn(2, 3, 7, 7)
    assert_close(pool(x), soft_pool2d(x, 2))
    p = create_pool("soft", 3, 2, padding=1, ceil_mode=True, legacy_channel_shared=True)
    assert_close(p(x), soft_pool2d(x, 3, 2, 1, True, True))
    assert "legacy_channel_shared=True" in repr(p)
    assert list(SoftPool3d(2).parameters()) == []
    with pytest.raises(ValueError, match="avg, max, rms, soft"):
        create_pool("softpool")


def test_trains_inside_a_small_cnn():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 12, 12), torch.randint(0, 4, (16,))
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), SoftPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), SoftPool2d(3, 2, 1, ceil_mode=True), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    losses = train_by_backprop(net, x, y)
    assert losses[-1] < 0.7 * losses[0]
