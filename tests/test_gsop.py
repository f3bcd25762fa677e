"""GSoP channel and spatial attention: explicit covariance (torch.cov) reference, degenerate maps, gradients."""
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from asge.layers import GSoP, create_context
from asge.layers.gsop import covariance
from helpers import context_cnn, randomise_batchnorm, train_by_backprop


pytestmark = pytest.mark.usefixtures("single_thread")


def _bn_rows(t, bn, training):
    """BatchNorm2d over the rows of t: (B, N, K) viewed as (B, N, K, 1), written out by hand."""
    if training:
        mean = t.mean(dim=(0, 2), keepdim=True)
        var = t.var(dim=(0, 2), keepdim=True, correction=0)
    else:
        mean, var = bn.running_mean[None, :, None], bn.running_var[None, :, None]
    return (t - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None] + bn.bias[None, :, None]


def _rowwise(t, conv):
    """Row i of t (B, N, N) -> outputs 4i..4i+3, each a dot product with its own (N,) filter."""
    b, n, _ = t.shape
    out = torch.empty(b, 4 * n, dtype=t.dtype)
    for i in range(n):
        for j in range(4):
            o = 4 * i + j
            out[:, o] = t[:, i, :] @ conv.weight[o, 0, :, 0] + conv.bias[o]
    return out


def naive_gsop(m, x):
    training = m.training
    z = m.reduce(x)  # the 1x1 conv + BN (+ ReLU) stage: stock torch layers
    head = m.head
    if m.mode == "channel":
        obs = z.flatten(2)  # (B, d, M): variables = channels, observations = positions
    else:
        b, d, h, w = z.shape
        gh, gw = m.grid
        cells = z.reshape(b, d, gh, h // gh, gw, w // gw).mean(dim=(3, 5))  # block means (H, W divisible)
        obs = cells.flatten(2).transpose(1, 2)  # (B, N, d): variables = positions, observations = channels
    cov = torch.stack([torch.cov(o, correction=0) for o in obs])
    r = _rowwise(_bn_rows(cov, head.bn, training), head.row_conv)
    if m.mode == "spatial":
        r = torch.relu(r)
    a = torch.sigmoid(r @ head.fc.weight[:, :, 0, 0].T + head.fc.bias)
    if m.mode == "channel":
        return x * a[:, :, None, None]
    b, _, h, w = x.shape
    gh, gw = m.grid
    att = a.reshape(b, 1, gh, gw).repeat_interleave(h // gh, dim=2).repeat_interleave(w // gw, dim=3)
    return x * att


def test_covariance_helper():
    z = torch.randn(3, 5, 17, dtype=torch.float64)
    assert_close(covariance(z), torch.stack([torch.cov(s, correction=0) for s in z]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = covariance(z.float().to(torch.bfloat16))
    assert c.dtype == torch.float32  # second-order statistics never in half precision
    assert_close(c, covariance(z.float().to(torch.bfloat16).float()))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("mode,dim,grid,hw", [("channel", 6, 8, (5, 7)), ("channel", 12, 8, (4, 4)),
                                              ("spatial", 5, 4, (8, 8)), ("spatial", 3, (2, 3), (6, 9))])
def test_matches_explicit_reference(mode, dim, grid, hw, training):
    torch.manual_seed(0)
    m = randomise_batchnorm(GSoP(8, dim=dim, mode=mode, grid=grid, dtype=torch.float64)).train(training)
    x = torch.randn(3, 8, *hw, dtype=torch.float64)
    assert_close(m(x), naive_gsop(m, x))


def test_spatial_bilinear_upsampling():
    m = randomise_batchnorm(GSoP(4, dim=3, mode="spatial", grid=4, upsample="bilinear", dtype=torch.float64)).eval()
    nearest = randomise_batchnorm(GSoP(4, dim=3, mode="spatial", grid=4, dtype=torch.float64)).eval()
    nearest.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    assert_close(m(x), nearest(x))  # same size: bilinear and nearest are both the identity resize
    y = m(torch.randn(2, 4, 7, 5, dtype=torch.float64))
    assert y.shape == (2, 4, 7, 5) and torch.isfinite(y).all()


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_gradcheck(mode):
    torch.manual_seed(0)
    m = GSoP(3, dim=3, mode=mode, grid=2, dtype=torch.float64)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    m.eval()
    randomise_batchnorm(m)
    assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.parametrize("mode", ["channel", "spatial"])
@pytest.mark.parametrize("batch,training", [(2, True), (1, False)])
def test_single_position_and_dead_features(mode, batch, training):
    torch.manual_seed(0)
    m = GSoP(8, dim=6, mode=mode, grid=4).train(training)
    for x in (torch.randn(batch, 8, 1, 1), torch.zeros(batch, 8, 1, 1), torch.zeros(batch, 8, 5, 5),
              torch.full((batch, 8, 5, 5), 2.0)):
        x.requires_grad_(True)
        out = m(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        out.square().sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
        m.zero_grad()
    assert_close(m(torch.zeros(batch, 8, 5, 5)), torch.zeros(batch, 8, 5, 5))


def test_single_position_covariance_is_zero():
    m = randomise_batchnorm(GSoP(8, dim=6, mode="channel", dtype=torch.float64)).eval()
    x = torch.randn(2, 8, 1, 1, dtype=torch.float64)
    head = m.head
    zero_row = _bn_rows(torch.zeros(2, 6, 6, dtype=torch.float64), head.bn, False)
    a = torch.sigmoid(_rowwise(zero_row, head.row_conv) @ head.fc.weight[:, :, 0, 0].T + head.fc.bias)
    assert_close(m(x), x * a[:, :, None, None])


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_extreme_inputs_and_bf16_autocast(mode):
    torch.manual_seed(0)
    m = GSoP(8, dim=6, mode=mode, grid=4)
    for scale in (1e4, -1e4):
        x = (torch.randn(2, 8, 8, 8) * scale).requires_grad_(True)
        out = m(x)
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(x.grad).all()
    x = torch.randn(2, 8, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        h = m(nn.Conv2d(8, 8, 1)(x))  # a bf16 activation
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert h.dtype == torch.bfloat16 and torch.isfinite(h.float()).all()
    m.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert_close(out, m(x), rtol=0.05, atol=0.05)


def test_factory_and_options():
    m = create_context("gsop", 16, dim=8, feat_size=16)  # feat_size is accepted and unused
    assert isinstance(m, GSoP) and m.mode == "channel" and m.dim == 8
    s = create_context("gsop-spatial", 16, dim=4, grid=(4, 2), feat_size=(8, 8))
    assert s.mode == "spatial" and s.grid == (4, 2) and s.head.row_conv.in_channels == 8
    assert create_context("gsop", 16).dim == 128
    assert s(torch.randn(2, 16, 8, 8)).shape == (2, 16, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        GSoP(8, mode="position")
    with pytest.raises(ValueError, match="upsample"):
        GSoP(8, mode="spatial", upsample="area")
    with pytest.raises(ValueError, match="gsop, gsop-spatial"):
        create_context("gsop-channel", 8)


@pytest.mark.parametrize("name", ["gsop", "gsop-spatial"])
def test_device_and_dtype_passing(name):
    m = create_context(name, 8, dim=4, device="meta", dtype=torch.float64)
    assert all(t.device.type == "meta" and t.dtype == torch.float64 for t in m.state_dict().values()
               if t.is_floating_point())
    m64 = create_context(name, 8, dim=4, dtype=torch.float64)
    assert m64(torch.randn(2, 8, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_trains_inside_a_small_cnn(mode):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    att = GSoP(16, dim=8, mode=mode, grid=4)
    net = context_cnn(att)
    before = [p.detach().clone() for p in att.parameters()]
    losses = train_by_backprop(net, x, y)
    assert losses[-1] < 0.8 * losses[0]
    assert all(not torch.equal(b, p) for b, p in zip(before, att.parameters()))
