"""partition_factor, spatial_goodness and the fixed projection, against independent computations."""
import math

import pytest
import torch

from asge.nn.goodness import GoodnessProjection, partition_factor, spatial_goodness


@pytest.mark.parametrize("channels,expected", [(64, 8), (128, 4), (256, 2), (512, 1)])
def test_partition_factor_reproduces_authors_table(channels, expected):
    assert partition_factor(channels, 512) == expected


@pytest.mark.parametrize("channels,last,alpha,size", [
    (32, 128, 1.0, None), (48, 384, 1.0, None), (96, 128, 1.0, 32), (16, 512, 1.0, 8), (16, 512, 0.5, None),
    (64, 512, 2.0, 32), (64, 512, 0.0, 32), (200, 100, 1.0, 4), (128, 512, 0.3, 16)])
def test_partition_factor_formula(channels, last, alpha, size):
    p = math.floor(alpha * last / channels)
    p = max(p, 1)
    if size is not None:
        p = min(p, size)
    assert partition_factor(channels, last, alpha, size) == p


def test_partition_factor_rejects_bad_values():
    with pytest.raises(ValueError, match="alpha"):
        partition_factor(64, 512, alpha=-1)
    with pytest.raises(ValueError, match="channel"):
        partition_factor(0, 512)


def naive_goodness(y, p, reduce):
    """Explicit loops over channels and patches, bins as [floor(i*H/P), ceil((i+1)*H/P))."""
    B, C, H, W = y.shape
    out = torch.zeros(B, C * p * p, dtype=y.dtype)
    for c in range(C):
        for i in range(p):
            h0, h1 = (i * H) // p, -((-(i + 1) * H) // p)
            for j in range(p):
                w0, w1 = (j * W) // p, -((-(j + 1) * W) // p)
                patch = y[:, c, h0:h1, w0:w1] ** 2
                val = patch.sum(dim=(1, 2))
                if reduce == "mean":
                    val = val / patch[0].numel()
                out[:, c * p * p + i * p + j] = val
    return out


@pytest.mark.parametrize("shape,p", [((2, 3, 8, 8), 4), ((2, 4, 7, 7), 3), ((1, 2, 5, 9), 2), ((3, 5, 4, 4), 1),
                                     ((2, 2, 6, 6), 6)])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_spatial_goodness_matches_loops(shape, p, reduce):
    y = torch.randn(*shape, dtype=torch.float64)
    g = spatial_goodness(y, p, reduce)
    assert g.shape == (shape[0], shape[1] * p * p)
    torch.testing.assert_close(g, naive_goodness(y, p, reduce))


def test_spatial_goodness_rejects_unknown_reduce():
    with pytest.raises(ValueError, match="valid: mean, sum"):
        spatial_goodness(torch.zeros(1, 1, 2, 2), 1, "max")


def test_projection_is_fixed_seeded_buffer():
    a = GoodnessProjection(50, 10, torch.Generator().manual_seed(3))
    b = GoodnessProjection(50, 10, torch.Generator().manual_seed(3))
    c = GoodnessProjection(50, 10, torch.Generator().manual_seed(4))
    assert list(a.parameters()) == []
    assert set(a.state_dict()) == {"weight", "bias"}
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)
    big = GoodnessProjection(4000, 100, torch.Generator().manual_seed(0))
    assert abs(big.weight.std().item() - 0.1) < 0.005          # N(0,1)/sqrt(N), N = 100
    g = torch.randn(3, 50)
    torch.testing.assert_close(a(g), g @ a.weight + a.bias)
