"""Any network, trained locally: modules cut from CIFAR ResNets, torchvision and timm models (nn/resnet.py,
nn/backbones.py), split into K modules (nn/split.py), each a LocalModule with its own rule inside an ASGENet
(ASGENet.from_modules), trained by the same local step as the VGG blocks."""
import itertools
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from asge.nn.backbones import model_units, timm_units, torchvision_units
from asge.nn.flops import forward_macs
from asge.nn.local_module import LocalModule
from asge.nn.model import ASGENet
from asge.nn.resnet import resnet_units
from asge.nn.split import balanced_ranges, split_at, split_units, trace_chain
from asge.train.local import LocalLearning, block_step


@pytest.fixture(autouse=True)
def one_thread(single_thread):
    torch.manual_seed(0)


def resnet_net(name="resnet20", k=None, **kw):
    units = resnet_units(name, 3, generator=torch.Generator().manual_seed(0))
    modules = units if k is None else split_units(units, k, torch.zeros(2, 3, 32, 32))
    return ASGENet.from_modules(modules, in_channels=3, image_size=32, num_classes=10, **kw)


# -- the CIFAR ResNets ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, n", [("resnet20", 3), ("resnet32", 5)])
def test_resnet_shapes_from_the_dry_run_are_he_et_al_s(name, n):
    net = resnet_net(name)
    want = [(16, 32, 32)] + [(16, 32, 32)] * n + [(32, 16, 16)] * n + [(64, 8, 8)] * n
    assert [b.out_shape for b in net.blocks] == want
    assert [b.in_shape for b in net.blocks] == [(3, 32, 32)] + want[:-1]
    # P_k = clamp(floor(C_K / C_k), 1, H_k) with C_K = 64
    assert [b.partition for b in net.blocks] == [4] * (1 + n) + [2] * n + [1] * n
    assert net.channels == [s[0] for s in want]


def resnet_parameters(n: int, width: float = 1.0, in_channels: int = 3) -> int:
    """Parameters of a CIFAR ResNet with option-B shortcuts, by hand: conv weights k*k*C_in*C_out (no bias),
    BN 2*C, a 1x1 conv + BN shortcut where the width changes (stages 2 and 3's first block)."""
    c1, c2, c3 = (max(1, round(c * width)) for c in (16, 32, 64))
    total = 9 * in_channels * c1 + 2 * c1
    c_in = c1
    for c in (c1, c2, c3):
        for _ in range(n):
            total += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
            total += c_in * c + 2 * c if c_in != c else 0
            c_in = c
    return total


@pytest.mark.parametrize("name, n, millions", [("resnet20", 3, 0.27), ("resnet32", 5, 0.46),
                                                ("resnet56", 9, 0.85), ("resnet110", 18, 1.7)])
def test_resnet_parameter_counts(name, n, millions):
    units = resnet_units(name)
    count = sum(p.numel() for u in units for p in u.parameters())
    assert count == resnet_parameters(n)
    # He et al.'s counts (table 6) are option A's (no shortcut parameters) with the 64 -> 10 classifier
    option_a = count - (16 * 32 + 2 * 32) - (32 * 64 + 2 * 64) + 64 * 10 + 10
    assert round(option_a / 1e6, 2 if millions < 1 else 1) == millions
    half = resnet_units(name, in_channels=1, width=0.5)
    assert sum(p.numel() for u in half for p in u.parameters()) == resnet_parameters(n, 0.5, 1)


def test_unknown_resnet_depth_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"unknown CIFAR ResNet 'resnet18'.*torchvision:resnet18") as e:
        resnet_units("resnet18")
    assert "\n" not in str(e.value)


# -- splitting ------------------------------------------------------------------------------------------------

def brute_force(costs, k, even=False):
    """The least largest module cost over every way of cutting ``costs`` into k contiguous modules (``even``:
    with the least sum of squared module costs among those reaching it)."""
    n = len(costs)
    sums = [[sum(costs[a:b]) for a, b in zip((0, *cuts), (*cuts, n))]
            for cuts in itertools.combinations(range(1, n), k - 1)]
    best = min(max(s) for s in sums)
    return (best, min(sum(c * c for c in s) for s in sums if max(s) == best)) if even else best


def test_balanced_split_equals_the_brute_force_optimum():
    rng = random.Random(0)
    for _ in range(60):
        n = rng.randint(1, 9)
        costs = [rng.choice([0, 1, 5, 10, 100, rng.randint(1, 50)]) for _ in range(n)]
        for k in range(1, n + 1):
            ranges = balanced_ranges(costs, k)
            assert len(ranges) == k and all(len(r) > 0 for r in ranges)
            assert [i for r in ranges for i in r] == list(range(n))
            sums = [sum(costs[i] for i in r) for r in ranges]
            assert (max(sums), sum(c * c for c in sums)) == brute_force(costs, k, even=True), (costs, k)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_split_units_balances_measured_forward_macs(k):
    units = resnet_units("resnet20")
    example = torch.zeros(2, 3, 32, 32)
    macs = [t.macs for t in trace_chain(units, example)]
    modules = split_units(units, k, example)
    assert [i for m in modules for i in m.unit_range] == list(range(len(units)))
    assert max(sum(macs[i] for i in m.unit_range) for m in modules) == brute_force(macs, k)
    # children keep the unit's index in the whole chain (checkpoint keys say which units a module holds)
    assert [list(m._modules) for m in modules] == [[str(i) for i in m.unit_range] for m in modules]
    assert all(m[j] is units[i] for m in modules for j, i in enumerate(m.unit_range))


def test_measured_macs_are_the_flop_counter_s():
    units = resnet_units("resnet20")
    traces = trace_chain(units, torch.zeros(2, 3, 32, 32))
    assert traces[0].macs == 3 * 16 * 9 * 32 * 32                  # the stem's conv
    assert traces[4].macs == forward_macs(units[4], torch.zeros(1, 16, 32, 32))
    assert traces[4].macs == 16 * 32 * 9 * 16 * 16 + 32 * 32 * 9 * 16 * 16 + 16 * 32 * 16 * 16


@pytest.mark.parametrize("k", [0, 11])
def test_split_refuses_a_count_out_of_range_in_one_line(k):
    with pytest.raises(ValueError, match=r"cannot cut 10 units into .* modules: K must be between 1 and 10") as e:
        split_units(resnet_units("resnet20"), k, torch.zeros(2, 3, 32, 32))
    assert "\n" not in str(e.value)


def test_split_at_unit_indices_and_infopro_pairs():
    units = resnet_units("resnet32")                                # 16 units: stem, 3 stages of 5 blocks
    assert [m.unit_range for m in split_at(units, [4, 8, 12])] == [range(0, 4), range(4, 8), range(8, 12),
                                                                   range(12, 16)]
    # InfoPro's resnet32 K=4: modules end after (stage 1, block 2), (2, 1), (3, 0); MAN++ adds the end (3, 4)
    for pairs in ([[1, 2], [2, 1], [3, 0]], [[1, 2], [2, 1], [3, 0], [3, 4]]):
        assert [m.unit_range for m in split_at(units, pairs)] == [range(0, 4), range(4, 8), range(8, 12),
                                                                  range(12, 16)]
    assert [m.unit_range for m in split_at(units, [(0, 0), (1, 0)])] == [range(0, 1), range(1, 2), range(2, 16)]
    assert len(split_at(units, [])) == 1
    with pytest.raises(ValueError, match=r"no block \(2, 5\) in a ResNet of 3 stages of 5 blocks"):
        split_at(units, [(2, 5)])
    with pytest.raises(ValueError, match=r"cut points \[8, 4\] must be increasing unit indices in 1\.\.15"):
        split_at(units, [8, 4])
    with pytest.raises(ValueError, match="apply to a CIFAR ResNet's units"):
        split_at(torchvision_units("resnet18", 3, 32).units, [(1, 0)])


# -- from_modules and LocalModule -----------------------------------------------------------------------------

def test_from_modules_keeps_modes_and_builds_a_working_net():
    units = resnet_units("resnet20")
    modules = split_units(units, 3, torch.zeros(2, 3, 32, 32))
    modules[1].eval()
    net = ASGENet.from_modules(modules, in_channels=3, image_size=32, num_classes=10)
    assert [b.body.training for b in net.blocks] == [True, False, True]
    assert all(isinstance(b, LocalModule) and not b.fusable for b in net.blocks)
    x = torch.randn(4, 3, 32, 32)
    ys, feats = net.forward_features(x)
    assert [tuple(y.shape[1:]) for y in ys] == [b.out_shape for b in net.blocks]
    assert [f.shape for f in feats] == [(4, b.out_channels) for b in net.blocks]
    for strategy in ("fusion", "last"):
        assert net.predict(x, strategy).shape == (4, 10)
    net.best_block = 2
    assert net.predict(x, "best").shape == (4, 10)
    assert 0 < net.compute_fraction(2) < 1
    assert net.parameter_counts()["blocks"] == resnet_parameters(3)


def test_local_module_is_what_block_step_needs():
    net = resnet_net(k=3, head_features="patch")
    block = net.blocks[0]
    x = torch.randn(2, 3, 32, 32)
    y = block.features(x)
    assert block.transmit(y) is y and block.forward(x)[1].shape == y.shape
    assert block.local_logits(y).shape == (2, 10)
    assert block.head_features(y).shape == (2, block.head_dim) == (2, 16 * (1 + 4 * 4))
    assert block.conv_macs() == forward_macs(block.body.eval(), x[:1])


def test_from_modules_seed_draws_the_rules_and_heads():
    a, b, c = resnet_net(k=3, seed=1), resnet_net(k=3, seed=1), resnet_net(k=3, seed=2)
    rules = lambda net: [blk.rule.projection.weight for blk in net.blocks] + [net.heads.last.weight]  # noqa: E731
    assert all(torch.equal(p, q) for p, q in zip(rules(a), rules(b)))
    assert not any(torch.equal(p, q) for p, q in zip(rules(a), rules(c)))


def test_from_modules_refuses_a_broken_chain_in_one_line():
    with pytest.raises(ValueError, match=r"module 2 fails on a \(2, 8, 32, 32\) input") as e:
        ASGENet.from_modules([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(4, 8, 3)], in_channels=3, image_size=32,
                             num_classes=10)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"module 2 outputs \(2, 7200\); a locally trained module must output"):
        ASGENet.from_modules([nn.Conv2d(3, 8, 3), nn.Flatten()], in_channels=3, image_size=32, num_classes=10)


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("projection", ["fixed", "learned"])
def test_a_local_step_reaches_only_its_own_module(projection):
    from asge.train.local import block_step as step
    assert step is block_step
    net = resnet_net(k=4, projection=projection)
    k = 2
    x, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    h = x
    for block in net.blocks[:k]:                  # the input carries a graph back through modules 0..k-1
        h = block(h)[1]
    assert h.requires_grad
    before = snapshot(net)
    own = net.blocks[k]
    opt = torch.optim.SGD(own.parameters(), lr=0.1)
    out, feat, loss, _ = block_step(own, opt, h, labels)
    assert torch.isfinite(loss) and not out.requires_grad and not feat.requires_grad
    mine = {id(p) for p in own.parameters()}
    for name, p in net.named_parameters():
        if id(p) not in mine:
            assert p.grad is None, name
    changed = {name for name, v in net.state_dict().items() if not torch.equal(v, before[name])}
    assert changed and all(name.startswith(f"blocks.{k}.") for name in changed)
    assert any(name.startswith(f"blocks.{k}.body.") for name in changed)
    rule_changed = {name for name in changed if name.startswith(f"blocks.{k}.rule.")}
    assert bool(rule_changed) == (projection == "learned")


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_an_entry_norm_normalises_modules_2_to_k_and_learns_from_its_own_module(norm):
    net = resnet_net(k=4, entry_norm=norm)
    plain = resnet_net(k=4)
    assert net.blocks[0].entry is None and all(b.entry is not None for b in net.blocks[1:])
    x = torch.randn(4, 3, 32, 32)
    net.eval(), plain.eval()
    with torch.no_grad():
        h = net.blocks[0](x)[1]
        assert torch.equal(h, plain.blocks[0](x)[1])             # module 1 reads the image as given
        scaled = net.blocks[1].features(5.0 * h + 0.0)
        assert torch.allclose(scaled, net.blocks[1].features(h), atol=1e-3)  # the norm removes the scale
        assert not torch.allclose(plain.blocks[1].features(5.0 * h), plain.blocks[1].features(h), atol=1e-3)
    net.train()
    own = net.blocks[2]
    h = net.blocks[1](net.blocks[0](x)[1])[1]
    before = snapshot(net)
    block_step(own, torch.optim.SGD(own.parameters(), lr=0.1), h, torch.randint(0, 10, (4,)))
    changed = {name for name, v in net.state_dict().items() if not torch.equal(v, before[name])}
    assert all(name.startswith("blocks.2.") for name in changed)
    if norm == "layer":                                          # rms has no parameters
        assert {"blocks.2.entry.weight", "blocks.2.entry.bias"} <= changed


def test_outside_no_grad_the_output_keeps_its_graph_for_end_to_end_backprop():
    net = resnet_net(k=3)
    h = torch.randn(2, 3, 32, 32)
    for block in net.blocks:                      # as the backprop baseline runs them
        y, h = block(h)
    net.heads.last(y.mean(dim=(2, 3))).sum().backward()
    assert all(p.grad is not None for b in net.blocks for p in b.body.parameters())
    with torch.no_grad():
        assert not net.blocks[0].transmit(torch.ones(1, requires_grad=True)).requires_grad


def test_the_trainer_steps_every_module_of_a_split_resnet():
    net = resnet_net(k=3)
    cfg = SimpleNamespace(lr=1e-3, head_lr=1e-3, weight_decay=0.0, min_lr=0.0, amp="none", label_smoothing=0.0,
                          compile=False)
    trainer = LocalLearning(net, cfg, total_steps=2, device=torch.device("cpu"))
    before = snapshot(net)
    trainer.start_epoch(0)
    trainer.train_step(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)), 0)
    stats = trainer.epoch_stats()
    assert len(stats["block_loss"]) == 3 and all(torch.isfinite(torch.tensor(stats["block_loss"])))
    for k in range(3):
        assert any(not torch.equal(v, before[n]) for n, v in net.state_dict().items() if n.startswith(f"blocks.{k}."))
    assert any(not torch.equal(v, before[n]) for n, v in net.state_dict().items() if n.startswith("heads."))


# -- torchvision and timm -------------------------------------------------------------------------------------

def test_torchvision_resnet18_with_a_cifar_stem():
    got = torchvision_units("resnet18", 3, 32)
    assert got.small_stem and "7x7 stride-2 conv became 3x3 stride-1" in got.note and "max-pool dropped" in got.note
    shapes = [t.out_shape for t in trace_chain(got.units, torch.zeros(2, 3, 32, 32))]
    assert shapes == [(64, 32, 32)] * 2 + [(128, 16, 16)] * 2 + [(256, 8, 8)] * 2 + [(512, 4, 4)] * 2
    # every parameter of resnet18 but its classifier, with the 7x7 stem conv replaced by a 3x3 one
    params = sum(p.numel() for u in got.units for p in u.parameters())
    assert params == 11_689_512 - (512 * 1000 + 1000) - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3
    imagenet = torchvision_units("resnet18", 1, 96)
    assert not imagenet.small_stem and "first conv takes 1-channel input" in imagenet.note
    shapes = [t.out_shape for t in trace_chain(imagenet.units, torch.zeros(2, 1, 96, 96))]
    assert shapes == [(64, 24, 24)] * 2 + [(128, 12, 12)] * 2 + [(256, 6, 6)] * 2 + [(512, 3, 3)] * 2


# name, builder options, (channels, side) of the last unit at 32 px, with the stem's stride taken out
TORCHVISION = [("resnet18", {}, (512, 4)), ("vgg11", {}, (512, 1)),
               ("mobilenet_v2", {"width_mult": 0.25}, (1280, 2)),
               ("mobilenet_v3_small", {"width_mult": 0.25}, (144, 2)), ("efficientnet_b0", {}, (1280, 2)),
               ("convnext_tiny", {}, (768, 4)), ("regnet_x_400mf", {}, (400, 2))]


@pytest.mark.parametrize("name, options, last", TORCHVISION, ids=[t[0] for t in TORCHVISION])
def test_torchvision_families_build_and_dry_run_at_32px(name, options, last):
    got = torchvision_units(name, 3, 32, **options)
    assert got.small_stem == (name != "vgg11")
    modules = split_units(got.units, 3, torch.zeros(2, 3, 32, 32))
    net = ASGENet.from_modules(modules, in_channels=3, image_size=32, num_classes=10)
    assert (net.blocks[-1].out_channels, net.blocks[-1].out_size) == last
    assert net.predict(torch.randn(2, 3, 32, 32)).shape == (2, 10)


TIMM = [("resnet18", (512, 4)), ("convnext_atto", (320, 4)), ("mobilenetv3_small_050", (288, 2))]


@pytest.mark.parametrize("name, last", TIMM, ids=[t[0] for t in TIMM])
def test_timm_layouts_build_and_dry_run_at_32px(name, last):
    pytest.importorskip("timm", reason="timm is not installed (pip install timm)")
    got = timm_units(name, 3, 32)
    assert got.small_stem and "became 3x3 stride-1" in got.note
    net = ASGENet.from_modules(split_units(got.units, 2, torch.zeros(2, 3, 32, 32)), in_channels=3, image_size=32,
                               num_classes=10)
    assert (net.blocks[-1].out_channels, net.blocks[-1].out_size) == last
    assert net.predict(torch.randn(2, 3, 32, 32)).shape == (2, 10)


REFUSED = [("torchvision:vit_b_16", r"torchvision:vit_b_16 \(vision_transformer\) is not a chain of convolutional"),
           ("torchvision:nope", r"unknown torchvision classifier 'nope'"),
           ("resnet18", r"unknown CIFAR ResNet 'resnet18'"),
           ("keras:resnet50", r"unknown model source 'keras'"),
           ("timm:vit_tiny_patch16_224", r"\(VisionTransformer\) is not a chain this cuts: expected conv1/bn1"),
           ("timm:nope", r"unknown timm model 'nope'")]


@pytest.mark.parametrize("spec, why", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_non_chain_model_or_bad_name_is_refused_in_one_line(spec, why):
    if spec.startswith("timm:"):
        pytest.importorskip("timm", reason="timm is not installed (pip install timm)")
    with pytest.raises(ValueError, match=why) as e:
        model_units(spec, in_channels=3, image_size=32)
    assert "\n" not in str(e.value)


def test_model_units_seeds_without_touching_the_global_rng():
    state = torch.get_rng_state()
    a = model_units("resnet20", in_channels=3, image_size=32, seed=5).units
    b = model_units("resnet20", in_channels=3, image_size=32, seed=5).units
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(nn.Sequential(*a).parameters(), nn.Sequential(*b).parameters()))
    with pytest.raises(ValueError, match="width multiplier applies to"):
        model_units("torchvision:resnet18", in_channels=3, image_size=32, width=0.5)
