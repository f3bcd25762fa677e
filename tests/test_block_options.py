"""Pool and context options inside ASGE blocks: every combination trains, context modules belong to their
block (parameters, optimizer, local gradient only), ``context_blocks``, and the YAML / CLI option paths.
Also: every recipe in configs/ loads as a TrainConfig and builds its network."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from asge.cli import build_parser, main
from asge.options import config_from_args
from asge.config import TrainConfig
from asge.data import DatasetInfo
from asge.layers import CONTEXTS, POOLS, GatherExcite, GSoP, SpatialGroupEnhance
from asge.nn.model import ASGENet
from asge.runs.directory import RunDir, load_checkpoint
from asge.train import METHODS, build_model, fit
from asge.train.local import block_step

POOL_NAMES = ("rms", "avg", "max", "soft")
CONTEXT_NAMES = ("none", "sge", "gsop", "gsop-spatial", "ge-minus", "ge", "ge-plus")
PARAMETRIC = ("sge", "gsop", "gsop-spatial", "ge", "ge-plus")
TYPES = {"none": torch.nn.Identity, "sge": SpatialGroupEnhance, "gsop": GSoP, "gsop-spatial": GSoP,
         "ge-minus": GatherExcite, "ge": GatherExcite, "ge-plus": GatherExcite}
OPTIONS = {"sge": {"groups": 8}, "gsop": {"dim": 16}, "gsop-spatial": {"dim": 16, "grid": 4},
           "ge": {"extent": 2}, "ge-plus": {"reduction": 4}}
DIGITS = DatasetInfo(name="digits", num_classes=10, in_channels=1, image_size=8)
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**kw):
    base = dict(dataset="digits", channels=[16, 32, 32], downsample=[False, True, False], epochs=1,
                subset=200, batch_size=64, progress="none", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_registries_hold_the_documented_names():
    assert set(POOL_NAMES) <= set(POOLS) and set(CONTEXT_NAMES) <= set(CONTEXTS)


@pytest.mark.parametrize("context", CONTEXT_NAMES)
@pytest.mark.parametrize("pool", POOL_NAMES)
def test_every_pool_and_context_trains_one_epoch(pool, context):
    nets = []

    def capture(net, cfg, total_steps, device, **kw):   # the network fit builds, and its initial state
        nets.append((net, {k: v.clone() for k, v in net.state_dict().items() if ".context." in k}))
        return METHODS[cfg.method](net, cfg, total_steps, device, **kw)

    s = fit(tiny(pool=pool, context=context, context_options=OPTIONS.get(context, {})), log=lambda m: None,
            method_factory=capture)
    accs = list(s["test_accuracy"].values()) + s["block_test_accuracy"] + list(s["val_accuracy"].values())
    assert len(accs) == 3 + 3 + 3 and all(math.isfinite(a) and 0 <= a <= 100 for a in accs), s
    (net, initial), = nets
    assert all(isinstance(b.context, TYPES[context]) for b in net.blocks)
    assert type(net.blocks[1].pool) is type(POOLS[pool]())
    if context in PARAMETRIC:       # the block's optimizer trained its context module
        moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, net.state_dict()[k])]
        assert moved, f"{context}: no context parameter changed in training"


@pytest.mark.parametrize("context", PARAMETRIC)
def test_context_parameters_belong_to_their_block_and_learn_from_its_loss_only(context):
    torch.manual_seed(0)
    net = ASGENet([16, 32, 32], [False, True, False], in_channels=1, image_size=8, context=context,
                  context_options=OPTIONS[context], seed=0)
    net.train()
    blocks = net.blocks
    for i, b in enumerate(blocks):
        own = {id(p) for p in b.parameters()}
        ctx = list(b.context.parameters())
        assert ctx and all(id(p) in own for p in ctx)
        others = {id(p) for j, o in enumerate(blocks) if j != i for p in o.parameters()}
        assert not any(id(p) in others for p in ctx)
        head_params = {id(p) for p in net.heads.parameters()}
        assert not any(id(p) in head_params for p in ctx)

    x, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    ctx0 = list(blocks[0].context.parameters())
    # Reference: block 1's gradient from its own local loss, and what block 2's loss would send through it.
    y0 = blocks[0].features(x)
    g_own = torch.autograd.grad(F.cross_entropy(blocks[0].local_logits(y0), labels), ctx0, retain_graph=True)
    y1 = blocks[1].features(blocks[0].pool(y0))
    g_later = torch.autograd.grad(F.cross_entropy(blocks[1].local_logits(y1), labels), ctx0, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in g_later), "the test would not see leaked gradient"

    # The training step: one optimizer per block (lr 0 keeps the weights, so the gradients stay comparable).
    opts = [torch.optim.SGD(b.parameters(), lr=0.0) for b in blocks]
    h = x
    for l, (b, opt) in enumerate(zip(blocks, opts)):
        h, _, loss, _ = block_step(b, opt, h, labels)
        assert not h.requires_grad
        if l == 0:
            after_own = [p.grad.clone() for p in ctx0]
    for p, g, g_after in zip(ctx0, g_own, after_own):
        torch.testing.assert_close(g_after, g)          # block 1's loss, nothing else
        torch.testing.assert_close(p.grad, g)           # unchanged by blocks 2 and 3
    for b in blocks[1:]:
        assert all(p.grad is not None for p in b.context.parameters())


def test_context_parameters_are_in_their_blocks_optimizer():
    cfg = tiny(context="gsop", context_options={"dim": 8}).resolved()
    net = build_model(cfg, DIGITS)
    method = METHODS["asge"](net, cfg, 10, torch.device("cpu"))
    for b, (opt, _) in zip(net.blocks, method.block_opts):
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        assert {id(p) for p in b.context.parameters()} <= in_opt


def test_context_blocks_put_the_module_only_in_the_named_blocks():
    net = build_model(tiny(context="ge-plus", context_blocks=[2, 3], context_options={"reduction": 4}), DIGITS)
    assert isinstance(net.blocks[0].context, torch.nn.Identity)
    assert all(isinstance(b.context, GatherExcite) and b.context.variant == "plus" for b in net.blocks[1:])
    net = build_model(tiny(context="sge", context_blocks=[1], context_options={"groups": 4}), DIGITS)
    assert isinstance(net.blocks[0].context, SpatialGroupEnhance) and net.blocks[0].context.groups == 4
    assert all(isinstance(b.context, torch.nn.Identity) for b in net.blocks[1:])
    with pytest.raises(ValueError, match="out of range"):
        build_model(tiny(context="sge", context_blocks=[4]), DIGITS)


def test_device_and_dtype_reach_the_context_module():
    net = ASGENet([16, 32], [True, False], in_channels=1, image_size=8, context="gsop",
                  context_options={"dim": 8}, device="meta", dtype=torch.float64)
    params = list(net.blocks[0].context.parameters()) + list(net.blocks[0].context.buffers())
    assert params and all(p.device.type == "meta" for p in params)
    assert all(p.dtype == torch.float64 for p in params if p.is_floating_point())


def test_yaml_context_options_reach_the_module(tmp_path):
    conf = tmp_path / "sge.yaml"
    conf.write_text("dataset: digits\ncontext: sge\ncontext_options:\n  groups: 8\ncontext_blocks: [1, 2]\n"
                    "channels: [16, 32, 32]\ndownsample: [false, true, false]\n")
    net = build_model(TrainConfig.from_yaml(conf), DIGITS)
    assert net.blocks[0].context.groups == 8 and net.blocks[1].context.groups == 8
    assert isinstance(net.blocks[2].context, torch.nn.Identity)


def test_cli_context_options_reach_the_module(tmp_path):
    args = build_parser().parse_args(["train", "--channels", "16,32v,32", "--context", "ge",
                                      "--context-option", "extent=2", "--context-option", "reduction=4",
                                      "--context-blocks", "2,3"])
    cfg = config_from_args(args)
    assert cfg.context_options == {"extent": 2, "reduction": 4}
    net = build_model(cfg, DIGITS)
    assert isinstance(net.blocks[0].context, torch.nn.Identity) and net.blocks[1].context.extent == 2

    # End to end: asge train --config (YAML) with a --context-option flag on top; the run keeps both.
    conf = tmp_path / "c.yaml"
    conf.write_text("context: sge\ncontext_options: {groups: 4}\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--context-option", "groups=8", "--channels", "16,32v,32",
                 "--subset", "128", "--batch-size", "64", "--epochs", "1", "--progress", "none",
                 "--out", str(out)]) == 0
    saved = RunDir(out).read_config()
    assert saved.context == "sge" and saved.context_options == {"groups": 8}
    net = build_model(saved, DIGITS)
    assert net.blocks[0].context.groups == 8
    state = load_checkpoint(out / "checkpoints" / "best.pt")["model"]
    assert state["blocks.0.context.weight"].shape == (1, 8, 1, 1)


def test_configs_directory_has_the_recipes():
    names = {p.name for p in CONFIGS}
    assert {"vgg8-cifar10.yaml", "vgg11-cifar100.yaml", "quick-fashion-mnist.yaml",
            "ablation-fashion-mnist.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads_and_builds(path):
    text = path.read_text()
    assert text.startswith("#"), f"{path.name}: start with a comment header saying what the recipe is"
    cfg = TrainConfig.from_yaml(path)
    assert set(yaml.safe_load(text)) <= set(cfg.to_dict())
    r = cfg.resolved()
    info = DatasetInfo(name=cfg.dataset, num_classes=100 if cfg.dataset == "cifar100" else 10,
                       in_channels=3 if cfg.dataset.startswith("cifar") else 1, image_size=32)
    common = dict(in_channels=info.in_channels, num_classes=info.num_classes, image_size=info.image_size,
                  alpha=r.alpha, norm=r.norm, pool=r.pool, goodness=r.goodness, dropout=r.dropout,
                  context=r.context, context_options=r.context_options, context_blocks=r.context_blocks,
                  device="meta")
    if r.channels is not None:
        net = ASGENet([int(c) for c in r.channels], [bool(d) for d in r.downsample], **common)
    else:
        net = ASGENet.from_preset(r.model, width=r.width, **common)
    assert len(net.blocks) >= 1 and r.epochs >= 1 and r.lr > 0


def test_vgg8_recipe_is_the_papers():
    cfg = TrainConfig.from_yaml(Path(CONFIGS[0]).parent / "vgg8-cifar10.yaml").resolved()
    assert (cfg.model, cfg.dataset, cfg.width, cfg.epochs, cfg.batch_size) == ("vgg8", "cifar10", 1.0, 100, 128)
    assert (cfg.lr, cfg.head_lr, cfg.weight_decay, cfg.min_lr, cfg.dropout) == (2e-4, 2e-4, 1e-3, 1e-5, 0.1)
    assert (cfg.pool, cfg.context, cfg.alpha) == ("rms", "none", 1.0)
