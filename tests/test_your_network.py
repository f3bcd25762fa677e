"""Any network trained locally, end to end through the CLI and from Python: a CIFAR ResNet and torchvision's
resnet18 cut into modules (--split), trained, resumed bit-exactly, evaluated, predicted, exported and loaded;
the same network by backprop; options that do not apply refused in one line; no gradient crosses a module."""
import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import torchvision

import asge
from asge.cli import main
from asge.config import TrainConfig
from asge.data import load_data
from asge.nn.backbones import model_units
from asge.nn.local_network import local_network, network_of_units
from asge.runs.build import build_model
from asge.train import fit
from asge.errors import Preempted
from asge.runs.directory import load_checkpoint
from asge.train.local import block_step

from test_preempt import assert_same_run, signal_at

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
FAST = ["--dataset", "digits", "--subset", "200", "--batch-size", "50", "--progress", "none", "--device", "cpu"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asge", *map(str, args)], capture_output=True, text=True, env=ENV)


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory, single_thread):
    """ResNet-20 (width 0.25) on digits, cut into 3 modules (a LayerNorm at the entry of modules 2 and 3),
    2 epochs."""
    out = tmp_path_factory.mktemp("resnet") / "run"
    assert main(["train", "--model", "resnet20", "--width", "0.25", "--split", "3", "--module-norm", "layer",
                 "--epochs", "2", "--out", str(out), *FAST]) == 0
    return out


def test_a_named_resnet_trains_records_its_modules_and_exits_early(resnet_run):
    summary = json.loads((resnet_run / "summary.json").read_text())
    assert summary["model"] == "resnet20" and len(summary["block_test_accuracy"]) == 3
    modules = summary["modules"]
    assert [m["units"] for m in modules][0][0] == 0 and modules[-1]["units"][1] == 9     # stem + 9 blocks
    assert all(a["units"][1] + 1 == b["units"][0] for a, b in zip(modules, modules[1:]))   # contiguous
    assert [m["out_shape"][0] for m in modules][-1] == 16                               # 64 x 0.25
    assert all(m["head_macs_ratio"] < 0.05 for m in modules)
    assert "resnet20" in summary["network"] and summary["best_block"] in (1, 2, 3)
    config = (resnet_run / "config.yaml").read_text()
    assert "split: '3'" in config or "split: 3" in config
    assert "module_norm: layer" in config
    net = asge.load(resnet_run)
    assert net.blocks[0].entry is None and all(b.entry is not None for b in net.blocks[1:])
    assert [m["parameters"] for m in modules] == [
        sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in b.rule.parameters()) for b in net.blocks]


def test_resume_mid_epoch_is_bitwise_for_a_cut_network(tmp_path, single_thread):
    """Stopped by SIGTERM in the middle of epoch 2 and resumed: bitwise the uninterrupted run."""
    base = dict(dataset="digits", subset=200, batch_size=50, progress="none", device="cpu", model="resnet20",
                width=0.25, split="3", epochs=2)
    fit(TrainConfig(**base, out=str(tmp_path / "full")), log=lambda *_: None)
    cfg = TrainConfig(**base, out=str(tmp_path / "cut"))
    with pytest.raises(Preempted):
        fit(cfg, log=lambda *_: None, method_factory=signal_at("asge", 4 + 2, signal.SIGTERM))   # step 2 of epoch 2
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["partial"]["step"] == 2
    fit(cfg, resume=True, log=lambda *_: None)
    assert_same_run(tmp_path / "full", tmp_path / "cut")


def test_eval_predict_export_and_load_a_cut_network(resnet_run, tmp_path, capsys):
    assert main(["eval", str(resnet_run), "--device", "cpu", "--progress", "none"]) == 0
    summary = json.loads((resnet_run / "summary.json").read_text())
    out = capsys.readouterr().out
    assert f"{summary['test_accuracy']['best']:.2f}" in out
    net = asge.load(resnet_run)
    test = load_data("digits").test
    x, y = next(test.batches(360, shuffle=False, augment=False, seed=0, device="cpu"))
    with torch.no_grad():
        best = 100.0 * (net.predict(x, "best").argmax(1) == y).float().mean().item()
    assert best == pytest.approx(summary["test_accuracy"]["best"], abs=1e-6)
    for fmt in ("torchscript", "onnx", "safetensors"):
        path = tmp_path / f"net.{ {'torchscript': 'pt', 'onnx': 'onnx', 'safetensors': 'safetensors'}[fmt] }"
        assert main(["export", str(resnet_run), "--format", fmt, "--out", str(path)]) == 0, fmt
        assert path.is_file()
    again = asge.load(tmp_path / "net.safetensors")
    with torch.no_grad():
        assert torch.equal(again.predict(x, "best"), net.predict(x, "best"))


def test_backprop_trains_the_same_cut_network(tmp_path, single_thread):
    out = tmp_path / "bp"
    assert main(["train", "--model", "resnet20", "--width", "0.25", "--split", "3", "--method", "bp",
                 "--epochs", "1", "--out", str(out), *FAST]) == 0
    asge_net = build_model(TrainConfig(dataset="digits", model="resnet20", width=0.25, split="3").resolved(),
                           load_data("digits").info)
    assert set(weights(out / "checkpoints" / "best.pt")) == set(asge_net.state_dict())


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet20", "--context", "sge"], "--context applies to the VGG presets"),
    (["--model", "resnet20", "--channels", "8,8v"], "--channels"),
    (["--model", "resnet20", "--context-option", "groups=4"], "--context-option applies to the VGG presets"),
    (["--model", "resnet20", "--split", "99"], "99"),
    (["--model", "resnet21"], "resnet21"),
    (["--model", "torchvision:vit_b_16"], "vit_b_16"),
    (["--model", "resnet20", "--split", "x"], "split"),
    (["--module-norm", "layer"], "--module-norm applies to networks cut into modules"),
    (["--split", "2", "--pipeline", "2"], "needs --dropout 0"),
])
def test_options_that_do_not_apply_are_refused_in_one_line(tmp_path, argv, message):
    r = cli("train", *argv, "--out", tmp_path / "run", "--epochs", "1", *FAST)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr and not (tmp_path / "run").exists()


def test_your_own_torchvision_resnet18_from_python(tmp_path, single_thread):
    """The README's "Your own network": resnet18 cut into 4 modules, trained, loaded back with model=."""
    model = torchvision.models.resnet18(num_classes=10)
    net = local_network(model, split=4, input_shape=(1, 8, 8), num_classes=10)
    cfg = TrainConfig(dataset="digits", subset=200, epochs=1, batch_size=50, out=str(tmp_path / "r18"),
                      progress="none", device="cpu")
    summary = fit(cfg, network=net, log=lambda *_: None)
    assert summary["model"] == "python" and len(summary["modules"]) == 4
    assert summary["split"] == "4" and summary["local_loss"] == "asge"          # what the network has
    assert "ResNet: 8 units" in summary["network"]
    fresh = local_network(torchvision.models.resnet18(num_classes=10), split=4, input_shape=(1, 8, 8),
                          num_classes=10)
    loaded = asge.load(tmp_path / "r18", model=fresh)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), weights(
        tmp_path / "r18" / "checkpoints" / "best.pt").values()))
    with pytest.raises(asge.errors.AsgeError, match="given from Python"):
        asge.load(tmp_path / "r18")


def test_a_python_network_records_its_own_rule_and_refuses_keys_that_build_one(tmp_path, single_thread):
    units = model_units("resnet20", in_channels=1, image_size=8, width=0.25, seed=0).units
    cfg = TrainConfig(dataset="digits", subset=100, epochs=1, batch_size=50, progress="none", device="cpu")
    for key, value in (("split", "2"), ("module_norm", "layer"), ("local_loss", "cwc")):
        net = network_of_units(units, "", input_shape=(1, 8, 8), num_classes=10, split=3, rule="dgl")
        with pytest.raises(asge.errors.AsgeError, match=f"{key} describes a network to build"):
            fit(dataclasses.replace(cfg, out=str(tmp_path / key), **{key: value}), network=net, log=lambda *_: None)
        assert not (tmp_path / key).exists()
    net = network_of_units(units, "", input_shape=(1, 8, 8), num_classes=10, split=3, rule="dgl")
    summary = fit(dataclasses.replace(cfg, out=str(tmp_path / "dgl")), network=net, log=lambda *_: None)
    assert (summary["split"], summary["local_loss"]) == ("3", "dgl")
    assert "local_loss: dgl" in (tmp_path / "dgl" / "config.yaml").read_text()


@pytest.mark.parametrize("rule", ["asge", "cwc", "dgl", "predsim"])
def test_no_gradient_crosses_a_module_of_a_cut_network(rule):
    """Every rule, on a CIFAR ResNet whose widths CwC accepts (20/40/80): one local step of module k gives
    gradients to module k and its rule only, and changes no other parameter."""
    torch.manual_seed(0)
    units = model_units("resnet20", in_channels=3, image_size=32, width=1.25, seed=0)
    net = network_of_units(units.units, units.note, input_shape=(3, 32, 32), num_classes=10, split=4, rule=rule)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    h = x
    for k, block in enumerate(net.blocks):
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        net.zero_grad(set_to_none=True)
        opt = torch.optim.SGD(block.parameters(), lr=0.1)
        h, *_ = block_step(block, opt, h, y)
        for name, p in net.named_parameters():
            mine = name.startswith(f"blocks.{k}.")
            assert (p.grad is not None) == (mine and p.requires_grad and p.grad is not None), name
            if not mine:
                assert p.grad is None and torch.equal(p, before[name]), name
        assert not h.requires_grad


def test_no_gradient_reaches_a_module_s_input():
    """block_step detaches what it is given: the previous module's output gets no gradient from module k."""
    units = model_units("resnet20", in_channels=3, image_size=16, width=0.5, seed=0)
    net = network_of_units(units.units, units.note, input_shape=(3, 16, 16), num_classes=10, split=3)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y, *_ = block_step(net.blocks[0], None, x, torch.randint(0, 10, (4,)))
    assert x.grad is None
    h = y.requires_grad_(True)
    block_step(net.blocks[1], None, h, torch.randint(0, 10, (4,)))
    assert h.grad is None and net.blocks[0].body[0][0].weight.grad is not None     # module 0's own step only


def uncut_equals_cut(uncut: torch.Tensor, net, x: torch.Tensor) -> bool:
    with torch.no_grad():
        ys, _ = net.eval().forward_features(x)
    return torch.equal(uncut, ys[-1])


def test_the_cut_network_computes_what_the_uncut_model_does():
    """In eval mode, bitwise: torchvision's resnet18 (its stem made a CIFAR stem in place, as recorded), a CIFAR
    ResNet's units run in sequence, and a VGG preset's blocks grouped by --split against the preset itself."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = torchvision.models.resnet18(num_classes=10).eval()
    net = local_network(model, split=4, input_shape=(3, 32, 32), num_classes=10)
    with torch.no_grad():
        uncut = model.layer4(model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(
            model.conv1(x))))))))
    assert isinstance(model.maxpool, torch.nn.Identity) and uncut_equals_cut(uncut, net, x)

    units = model_units("resnet32", in_channels=3, image_size=32, seed=0)
    with torch.no_grad():
        uncut = torch.nn.Sequential(*units.units).eval()(x)
    assert uncut_equals_cut(uncut, network_of_units(units.units, units.note, input_shape=(3, 32, 32),
                                                    num_classes=10, split=5), x)

    info = load_data("digits").info
    preset = build_model(TrainConfig(dataset="digits").resolved(), info).eval()
    grouped = build_model(TrainConfig(dataset="digits", split="2").resolved(), info)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        h = x
        for block in preset.blocks:
            _, h = block(h)
    assert uncut_equals_cut(h, grouped, x)


def test_a_recipe_on_a_cut_network_sets_all_but_the_vgg_blocks_keys():
    from asge.recipes import RECIPES
    cfg = TrainConfig.from_dict({"model": "resnet20", "recipe": "colour"})
    colour = RECIPES["colour"]
    assert cfg.context == "none" and "context" in colour                       # the VGG blocks' key: left out
    for key in set(colour) - {"context"}:
        assert getattr(cfg, key) == colour[key], key
    assert TrainConfig.from_dict({"model": "quick", "recipe": "colour"}).context == colour["context"]
    with pytest.raises(ValueError, match="--context applies to the VGG presets"):
        TrainConfig.from_dict({"model": "resnet20", "recipe": "colour", "context": "ge"})


def test_split_given_from_python_as_numbers_lists_or_pairs_and_bad_shapes_refused():
    from asge.nn.local_network import parse_split
    assert parse_split(4) == 4 and parse_split("4") == 4
    assert parse_split([3, 7, 12]) == parse_split("3,7,12") == [3, 7, 12]
    assert parse_split([(1, 2), [2, 1]]) == parse_split("1.2,2.1") == [(1, 2), (2, 1)]
    for bad in ("", ",", [], "1.x"):
        with pytest.raises(ValueError, match="split: expected"):
            parse_split(bad)
    units = model_units("resnet20", in_channels=3, image_size=32, width=0.25, seed=0).units
    net = local_network(units, split=[1, 5], input_shape=(3, 32, 32), num_classes=10)
    assert [m.body.unit_range for m in net.blocks] == [range(0, 1), range(1, 5), range(5, 10)]
    with pytest.raises(ValueError, match="square images"):
        local_network(units, input_shape=(3, 16, 32), num_classes=10)


def test_float64_units_give_a_float64_network_entry_norms_included():
    units = [u.double() for u in model_units("resnet20", in_channels=3, image_size=16, width=0.25, seed=0).units]
    net = local_network(units, split=3, input_shape=(3, 16, 16), num_classes=10, entry_norm="layer")
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    ys, _ = net.forward_features(torch.zeros(2, 3, 16, 16, dtype=torch.float64))
    assert [y.dtype for y in ys] == [torch.float64] * 3


def test_partition_factor_of_arbitrary_widths():
    """P_k = clamp(floor(alpha * C_K / C_k), 1, min(H_k, W_k)) from the modules' output channels."""
    widths, sizes = [3, 7, 13, 50], [16, 8, 8, 4]
    layers = [torch.nn.Conv2d(c_in, c, 3, stride=2 if s_in != s else 1, padding=1)
              for c_in, c, s_in, s in zip([1, *widths], widths, [16, *sizes], sizes)]
    for alpha in (0.5, 1.0, 3.0):
        net = local_network(layers, input_shape=(1, 16, 16), num_classes=4, alpha=alpha)
        assert [b.partition for b in net.blocks] == [max(1, min(int(alpha * 50 // c), s))
                                                     for c, s in zip(widths, sizes)]
