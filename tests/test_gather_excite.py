"""Gather-Excite (minus / theta / plus, global and extents 2, 4, 8): explicit references, gradients, factory."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from asge.layers import CONTEXTS, GatherExcite, create_context
from helpers import context_cnn, randomise_batchnorm, train_by_backprop


pytestmark = pytest.mark.usefixtures("single_thread")


def _bn(t, bn):  # eval-mode BatchNorm2d written out
    shape = (1, -1, 1, 1)
    return (t - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) \
        * bn.weight.view(shape) + bn.bias.view(shape)


def block_mean(x, eh, ew=None):
    """Mean over each eh x ew block (the last blocks may be partial), by explicit loops."""
    ew = eh if ew is None else ew
    b, c, h, w = x.shape
    oh, ow = math.ceil(h / eh), math.ceil(w / ew)
    out = torch.empty(b, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * eh:(i + 1) * eh, j * ew:(j + 1) * ew].mean(dim=(2, 3))
    return out


def nearest_resize(g, h, w):
    """Nearest interpolation by index: output row y reads input row floor(y * h_in / h)."""
    rows = [(y * g.shape[2]) // h for y in range(h)]
    cols = [(x * g.shape[3]) // w for x in range(w)]
    return g[:, :, rows][:, :, :, cols]


def depthwise_chain(x, m):
    """The theta gather for extent > 0, one channel at a time with dense single-channel convs."""
    layers = [l for l in m.gather if not isinstance(l, nn.ReLU)]
    convs, bns = layers[0::2], layers[1::2]
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        if i:
            x = torch.relu(x)
        x = torch.cat([F.conv2d(x[:, c:c + 1], conv.weight[c:c + 1], stride=2, padding=1)
                       for c in range(x.shape[1])], dim=1)
        x = _bn(x, bn)
    return x


def naive_ge(m, x):
    b, c, h, w = x.shape
    if m.variant == "minus":
        g = x.mean(dim=(2, 3), keepdim=True) if m.extent == 0 else block_mean(x, m.extent)
    elif m.extent == 0:
        kh, kw = m.global_kernel
        xs = x if (h, w) == (kh, kw) else block_mean(x, h // kh, w // kw)  # tests use sizes divisible by the kernel
        conv, bn = m.gather
        g = _bn((xs * conv.weight[:, 0]).sum(dim=(2, 3), keepdim=True), bn)
    else:
        g = depthwise_chain(x, m)
    if m.variant == "plus":
        fc1, _, fc2 = m.mlp
        hdn = torch.relu(torch.einsum("bchw,oc->bohw", g, fc1.weight[:, :, 0, 0]) + fc1.bias.view(1, -1, 1, 1))
        g = torch.einsum("bchw,oc->bohw", hdn, fc2.weight[:, :, 0, 0]) + fc2.bias.view(1, -1, 1, 1)
    return x * torch.sigmoid(nearest_resize(g, h, w))


def test_minus_global_is_x_times_sigmoid_of_spatial_mean():
    m = GatherExcite(8)
    x = torch.randn(2, 8, 7, 5)
    assert_close(m(x), x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True)))
    assert list(m.parameters()) == []


@pytest.mark.parametrize("extent", [2, 4, 8])
@pytest.mark.parametrize("hw", [(16, 8), (7, 5), (3, 3)])
def test_minus_extent_matches_block_reference(extent, hw):
    m = GatherExcite(4, "minus", extent=extent)
    x = torch.randn(2, 4, *hw, dtype=torch.float64)
    assert_close(m(x), naive_ge(m, x))


def test_minus_divisible_size_gates_each_block_by_its_mean():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    gate = torch.sigmoid(block_mean(x, 4)).repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert_close(GatherExcite(2, "minus", extent=4)(x), x * gate)


@pytest.mark.parametrize("variant", ["theta", "plus"])
@pytest.mark.parametrize("extent,feat_size,hw", [(0, 6, (6, 6)), (0, (4, 6), (4, 6)), (0, None, (16, 8)),
                                                 (0, None, (8, 8)), (0, 4, (8, 12)), (2, None, (8, 8)),
                                                 (4, 8, (7, 5)), (8, None, (16, 16))])
def test_theta_and_plus_match_reference(variant, extent, feat_size, hw):
    torch.manual_seed(0)
    m = randomise_batchnorm(GatherExcite(32, variant, extent=extent, feat_size=feat_size, dtype=torch.float64)).eval()
    x = torch.randn(2, 32, *hw, dtype=torch.float64)
    assert_close(m(x), naive_ge(m, x))


def test_global_kernel_choice():
    assert GatherExcite(4, "theta", feat_size=14).global_kernel == (14, 14)
    m = GatherExcite(4, "theta")  # no feat_size: 8 x 8 depthwise kernel on adaptively pooled maps
    assert m.global_kernel == (8, 8) and m.gather[0].kernel_size == (8, 8)
    assert GatherExcite(4, "theta", extent=4, feat_size=14).global_kernel is None
    assert len([l for l in GatherExcite(4, "theta", extent=8).gather if isinstance(l, nn.Conv2d)]) == 3
    assert GatherExcite(64, "plus").mlp[0].out_channels == 4
    assert GatherExcite(8, "plus", reduction=16).mlp[0].out_channels == 1


@pytest.mark.parametrize("variant,extent,feat_size", [("minus", 0, None), ("minus", 2, None), ("theta", 0, 3),
                                                      ("theta", 0, None), ("theta", 4, None), ("plus", 0, None),
                                                      ("plus", 2, None)])
def test_gradcheck(variant, extent, feat_size):
    torch.manual_seed(0)
    m = GatherExcite(3, variant, extent=extent, feat_size=feat_size, reduction=2, dtype=torch.float64)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.parametrize("extent", [1, 3, 16, -2, 2.5, 2.0])
def test_invalid_extent(extent):
    with pytest.raises(ValueError, match="0 \\(global\\), 2, 4 or 8"):
        GatherExcite(8, "minus", extent=extent)
    with pytest.raises(ValueError, match="extent"):
        create_context("ge", 8, extent=extent)


def test_invalid_variant():
    with pytest.raises(ValueError, match="minus"):
        GatherExcite(8, "theta-minus")


@pytest.mark.parametrize("variant,extent", [("minus", 0), ("minus", 4), ("theta", 0), ("theta", 2),
                                            ("plus", 0), ("plus", 8)])
def test_extreme_inputs_and_tiny_maps(variant, extent):
    torch.manual_seed(0)
    m = GatherExcite(8, variant, extent=extent)
    for x in (torch.randn(2, 8, 9, 9) * 1e4, torch.randn(2, 8, 9, 9) * -1e4, torch.zeros(2, 8, 9, 9),
              torch.randn(2, 8, 1, 1), torch.zeros(2, 8, 1, 1)):
        x.requires_grad_(True)
        out = m(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        out.square().sum().backward()
        assert torch.isfinite(x.grad).all()
    m.eval()
    assert torch.isfinite(m(torch.randn(1, 8, 1, 1))).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = nn.Conv2d(8, 8, 1)(torch.randn(2, 8, 9, 9))
        out = m(h)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_minus_half_precision():
    x = torch.randn(2, 4, 9, 9) * 100
    for extent in (0, 2):
        m = GatherExcite(4, "minus", extent=extent)
        out = m(x.half())
        assert out.dtype == torch.float16 and torch.isfinite(out).all()
        assert_close(out.float(), m(x.half().float()), rtol=2e-3, atol=2e-2)


def test_factory_names_and_options():
    assert create_context("ge-minus", 8).variant == "minus"
    m = create_context("ge", 16, extent=4, feat_size=32)
    assert m.variant == "theta" and m.extent == 4
    p = create_context("ge-plus", 32, extent=0, feat_size=(4, 4), reduction=8)
    assert p.variant == "plus" and p.global_kernel == (4, 4) and p.mlp[0].out_channels == 4
    with pytest.raises(ValueError, match="valid: ge, ge-minus, ge-plus, gsop, gsop-spatial, none, sge"):
        create_context("gather-excite", 8)


@pytest.mark.parametrize("name", ["none", "sge", "gsop", "gsop-spatial", "ge-minus", "ge", "ge-plus"])
def test_every_context_accepts_feat_size(name):
    """ASGE blocks call create_context(name, channels, feat_size=...) for any context."""
    assert name in CONTEXTS
    m = create_context(name, 16, feat_size=4)
    x = torch.randn(2, 16, 4, 4)
    assert m(x).shape == x.shape


@pytest.mark.parametrize("variant,extent", [("theta", 0), ("theta", 4), ("plus", 2)])
def test_device_and_dtype_passing(variant, extent):
    m = GatherExcite(8, variant, extent=extent, device="meta", dtype=torch.float64)
    assert all(t.device.type == "meta" and t.dtype == torch.float64 for t in m.state_dict().values()
               if t.is_floating_point())
    m64 = GatherExcite(8, variant, extent=extent, dtype=torch.float64)
    assert m64(torch.randn(2, 8, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("variant,extent", [("minus", 2), ("theta", 0), ("plus", 2)])
def test_trains_inside_a_small_cnn(variant, extent):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    ge = GatherExcite(16, variant, extent=extent, feat_size=8)
    net = context_cnn(ge)
    before = [p.detach().clone() for p in ge.parameters()]
    losses = train_by_backprop(net, x, y)
    assert losses[-1] < 0.8 * losses[0]
    assert all(not torch.equal(b, p) for b, p in zip(before, ge.parameters()))


@pytest.mark.parametrize("channels_last", [False, True])
def test_global_gather_equals_the_depthwise_conv_with_gradients(channels_last):
    """The gather (einsum, or the NHWC product-sum for channels_last maps) is the global depthwise conv:
    same values and same gradients (float64)."""
    torch.manual_seed(0)
    m = randomise_batchnorm(GatherExcite(6, "theta", extent=0, feat_size=5, dtype=torch.float64)).eval()
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    conv, bn = m.gather
    got = m.global_gather(x)
    ref = bn(F.conv2d(x, conv.weight, groups=6))
    assert_close(got, ref)
    g = torch.randn_like(ref)
    ga = torch.autograd.grad(got, [x, conv.weight], g)
    gb = torch.autograd.grad(ref, [x, conv.weight], g)
    for a, b in zip(ga, gb):
        assert_close(a, b)


@pytest.mark.parametrize("variant", ["theta", "plus"])
@pytest.mark.parametrize("extent, hw", [(0, 8), (2, 2), (4, 3)])
def test_a_single_value_per_channel_in_training_is_refused_by_name(variant, extent, hw):
    m = GatherExcite(4, variant=variant, extent=extent)
    x = torch.randn(1, 4, hw, hw)
    with pytest.raises(ValueError) as e:
        m(x)
    message = str(e.value)
    assert message.startswith(f"GatherExcite (variant '{variant}', ") and "\n" not in message
    assert "training mode needs at least 2 images per batch, got 1" in message
    assert "Expected more than 1 value" not in message
    assert m(torch.randn(2, 4, hw, hw)).shape == (2, 4, hw, hw)       # two images: trains
    assert m.eval()(x).shape == x.shape                                # one image in eval mode: runs


def test_a_single_image_with_a_gathered_map_of_several_values_still_trains():
    m = GatherExcite(4, variant="theta", extent=2)
    assert m(torch.randn(1, 4, 4, 4)).shape == (1, 4, 4, 4)           # 2 x 2 values per channel: BN can
    assert GatherExcite(4, variant="minus")(torch.randn(1, 4, 4, 4)).shape == (1, 4, 4, 4)   # no BN at all
