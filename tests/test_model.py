"""ASGENet and ASGEBlock: presets, shapes, strategies, gradient isolation, trainability."""
import pytest
import torch
import torch.nn.functional as F

from asge.nn.model import ASGENet
from asge.train.local import block_step, make_optimizer


def tiny(**kw):
    kw.setdefault("in_channels", 1)
    kw.setdefault("num_classes", 10)
    kw.setdefault("image_size", 8)
    return ASGENet([8, 16, 16], [False, True, False], **kw)


def test_presets_channels_and_partitions():
    vgg8 = ASGENet.from_preset("vgg8")
    assert vgg8.channels == [128, 256, 256, 512, 512, 512, 512]
    assert [b.partition for b in vgg8.blocks] == [4, 2, 2, 1, 1, 1, 1]
    assert [b.downsample for b in vgg8.blocks] == [False, True, False, True, True, True, False]
    vgg11 = ASGENet.from_preset("vgg11", num_classes=100)
    assert len(vgg11.blocks) == 10 and vgg11.blocks[0].projection.weight.shape == (128 * 16, 100)
    quarter = ASGENet.from_preset("vgg8", width=0.25, in_channels=1)
    assert quarter.channels == [32, 64, 64, 128, 128, 128, 128]
    assert [b.partition for b in quarter.blocks] == [4, 2, 2, 1, 1, 1, 1]


def test_partition_clamped_by_map_size():
    net = ASGENet([4, 64], [True, False], image_size=4, in_channels=1, num_classes=3)
    # C_L/C_1 = 16 but block 1 sees 4x4 maps; block 2 sees 2x2.
    assert [b.partition for b in net.blocks] == [4, 1]


def test_unknown_preset_lists_valid():
    with pytest.raises(ValueError, match="valid: vgg8, vgg11, quick, digits"):
        ASGENet.from_preset("resnet")


def test_too_many_downsamples_is_explained():
    with pytest.raises(ValueError, match="too many downsampling"):
        ASGENet([4, 4, 4, 4], [True, True, True, True], image_size=8)


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
@pytest.mark.parametrize("pool", ["rms", "avg", "max"])
def test_shapes_and_strategies(norm, pool):
    net = tiny(norm=norm, pool=pool)
    x = torch.randn(4, 1, 8, 8)
    logits = net.block_logits(x)
    assert [t.shape for t in logits] == [(4, 10)] * 3
    ys, feats = net.forward_features(x)
    assert [y.shape for y in ys] == [(4, 8, 8, 8), (4, 16, 8, 8), (4, 16, 4, 4)]
    assert [f.shape for f in feats] == [(4, 8), (4, 16), (4, 16)]
    assert net.predict(x, "fusion").shape == (4, 10)
    assert net.predict(x, "last").shape == (4, 10)
    with pytest.raises(ValueError, match="valid: fusion, last, best"):
        net.predict(x, "mean")


def test_fusion_skips_block_one_and_sums_heads():
    net = tiny().eval()
    x = torch.randn(3, 1, 8, 8)
    _, feats = net.forward_features(x)
    expected = net.heads.fusion[0](feats[1]) + net.heads.fusion[1](feats[2])
    torch.testing.assert_close(net.predict(x, "fusion"), expected)
    assert net.parameter_counts()["fusion"] == (16 + 1) * 10 * 2


def test_best_strategy_exits_early():
    net = tiny().eval()
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(RuntimeError, match="best block"):
        net.predict(x, "best")
    net.best_block.fill_(2)
    expected = net.block_logits(x)[1]

    def boom(*a):
        raise AssertionError("block 3 ran during early exit")
    net.blocks[2].forward = boom
    torch.testing.assert_close(net.predict(x, "best"), expected)
    assert "best_block" in net.state_dict()


def test_projections_in_state_dict_not_parameters():
    net = tiny()
    params = {id(p) for p in net.parameters()}
    for i, b in enumerate(net.blocks):
        assert id(b.projection.weight) not in params
        assert f"blocks.{i}.projection.weight" in net.state_dict()


def run_local_steps(net, steps=3, seed=0):
    torch.manual_seed(seed)
    opts = [make_optimizer(b.parameters(), 1e-2, 0.0, 10, 1e-5)[0] for b in net.blocks]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        for block, opt in zip(net.blocks, opts):
            x, *_ = block_step(block, opt, x, y)


def test_block_gradients_do_not_depend_on_later_blocks():
    short = ASGENet([8, 16, 16], [False, True, False], in_channels=1, image_size=8, dropout=0.0, seed=5)
    long = ASGENet([8, 16, 16, 16, 16], [False, True, False, False, True], in_channels=1, image_size=8,
                   dropout=0.0, seed=5)
    for a, b in zip(short.blocks, long.blocks):          # same prefix, same C_L: same initial blocks
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(va, vb), ka
    run_local_steps(short)
    run_local_steps(long)
    for a, b in zip(short.blocks, long.blocks):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(va, vb), ka


def test_no_gradient_crosses_a_block_boundary():
    net = tiny(dropout=0.0)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    y1, h = net.blocks[0](x)
    y2, _ = net.blocks[1](h.detach())
    F.cross_entropy(net.blocks[1].local_logits(y2), y).backward()
    assert all(p.grad is None for p in net.blocks[0].parameters())
    assert all(p.grad is not None for p in net.blocks[1].parameters())


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
@pytest.mark.parametrize("pool", ["rms", "avg", "max"])
def test_every_trainable_parameter_gets_a_gradient(norm, pool):
    net = tiny(norm=norm, pool=pool)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    h, feats = x, []
    for block in net.blocks:
        yl, h = block(h.detach())
        F.cross_entropy(block.local_logits(yl), y).backward()
        feats.append(yl.detach().mean((2, 3)))
    fusion, last = net.heads(feats)
    (F.cross_entropy(fusion, y) + F.cross_entropy(last, y)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_projection_unchanged_by_training():
    net = tiny()
    before = [b.projection.weight.clone() for b in net.blocks]
    run_local_steps(net)
    for b, w in zip(net.blocks, before):
        assert torch.equal(b.projection.weight, w)


@pytest.mark.parametrize("first", [True, False])
def test_folded_affine_norm_equals_norm_then_conv(first):
    from asge.nn.block import ASGEBlock
    torch.manual_seed(0)
    block = ASGEBlock(6, 8, in_size=7, num_classes=5, partition=2, first=first).double()
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.normal_()
        block.conv.bias.normal_()
    x = torch.randn(3, 6, 7, 7, dtype=torch.float64)
    folded = block.features(x)
    reference = F.relu(block.conv(block.norm(x)))
    torch.testing.assert_close(folded, reference)
    grads = []
    for y in (folded, reference):
        block.zero_grad()
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in block.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(torch.autograd.grad(block.features(xg).sum(), xg)[0],
                               torch.autograd.grad(F.relu(block.conv(block.norm(xg))).sum(), xg)[0])
