"""Recipes (--recipe paper|plus) and what the Fusion head reads (--head-features, --fusion-from)."""
import json

import pytest
import torch
import yaml

from asge import ASGENet
from asge.cli import main
from asge.config import TrainConfig
from asge.nn.heads import Heads, head_feature_dim, head_features
from asge.recipes import RECIPES
from asge.train.local import LocalLearning

from test_data import data_make_cifar10


def patch_loop(y: torch.Tensor, p: int, fn) -> torch.Tensor:
    """Independent reference: fn over each of the p x p equal patches of every channel, channel-major."""
    b, c, h, w = y.shape
    out = torch.empty(b, c, p, p)
    for i in range(p):
        for j in range(p):
            out[:, :, i, j] = fn(y[:, :, i * h // p:(i + 1) * h // p, j * w // p:(j + 1) * w // p])
    return out.flatten(1)


@pytest.mark.parametrize("kind", ["gap", "goodness", "patch"])
def test_head_features_against_loops(kind):
    y = torch.randn(3, 4, 8, 8)
    got = head_features(y, 2, kind)
    gap = y.mean(dim=(2, 3))
    assert got.shape == (3, head_feature_dim(4, 2, kind))
    torch.testing.assert_close(got[:, :4], gap)
    if kind == "goodness":
        torch.testing.assert_close(got[:, 4:], patch_loop(y, 2, lambda t: t.square().mean(dim=(2, 3))))
    elif kind == "patch":
        torch.testing.assert_close(got[:, 4:], patch_loop(y, 2, lambda t: t.mean(dim=(2, 3))))
    with pytest.raises(ValueError, match="valid: gap, goodness, patch"):
        head_features(y, 2, "nope")


def test_fusion_from_and_last_reads_gap_only():
    heads = Heads([4, 6, 8], 5, feature_dims=[20, 30, 8], fusion_from=1)
    assert [h.in_features for h in heads.fusion] == [20, 30, 8]
    assert Heads([4, 6, 8], 5).fusion_from == 1 and len(Heads([4, 6, 8], 5).fusion) == 2   # the paper: 2..L
    feats = [torch.randn(2, 20), torch.randn(2, 30), torch.randn(2, 8)]
    torch.testing.assert_close(heads.last_logits(feats), heads.last(feats[-1]))
    expected = sum(h(f) for h, f in zip(heads.fusion, feats))
    torch.testing.assert_close(heads.fusion_logits(feats), expected)
    with pytest.raises(ValueError, match="fusion_from"):
        Heads([4, 6], 5, fusion_from=3)


def test_plus_heads_read_detached_features_and_blocks_learn_only_from_their_loss():
    """With the plus recipe's head features (GAP + patch energies of every block), the features handed to
    the heads are detached and the heads' loss sends no gradient into any block."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict({"recipe": "plus", "lr": 1e-3, "epochs": 1}).resolved()
    net = ASGENet([4, 6, 8], [False, True, False], in_channels=1, num_classes=3, image_size=8,
                  context=cfg.context, head_features=cfg.head_features, fusion_from=cfg.fusion_from)
    method = LocalLearning(net, cfg, total_steps=1, device=torch.device("cpu"))
    x, labels = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    _, feats, _, _ = method.run_blocks(x, labels, 0, 0, 3)
    assert [f.shape[1] for f in feats] == [b.head_dim for b in net.blocks]
    assert not any(f.requires_grad for f in feats)
    for p in net.blocks.parameters():
        p.grad = None
    method.heads_step(feats, labels)
    assert all(p.grad is None for p in net.blocks.parameters())
    assert all(p.grad is not None for p in net.heads.fusion.parameters())


def test_recipe_defaults_yield_to_yaml_and_flags(tmp_path):
    plus = TrainConfig.from_dict({"recipe": "plus"})
    assert {k: getattr(plus, k) for k in RECIPES["plus"]} == RECIPES["plus"]
    assert TrainConfig.from_dict({"recipe": "plus", "context": "sge"}).context == "sge"
    assert TrainConfig.from_dict({}).to_dict() == TrainConfig().to_dict()       # paper: the defaults
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump({"recipe": "plus", "head_features": "patch", "epochs": 1}))
    from asge.cli import build_parser
    from asge.options import config_from_args
    args = build_parser().parse_args(["train", "--config", str(yml), "--fusion-from", "2"])
    cfg = config_from_args(args)
    assert (cfg.recipe, cfg.context, cfg.head_features, cfg.fusion_from) == ("plus", "ge", "patch", 2)
    args = build_parser().parse_args(["train", "--config", str(yml), "--recipe", "paper"])
    cfg = config_from_args(args)          # the flag's recipe replaces the YAML's; YAML keys still apply
    assert (cfg.recipe, cfg.context, cfg.head_features) == ("paper", "none", "patch")


def test_unknown_recipe_is_one_line(capsys):
    assert main(["train", "--recipe", "fancy", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "asge train: error: unknown recipe 'fancy'; valid: paper, plus, colour"


def test_plus_on_cifar_files_needs_no_other_flag(tmp_path, single_thread):
    """Colour images in the CIFAR layout: --recipe plus alone (and the budget flags) trains and tests."""
    data_make_cifar10(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--recipe", "plus", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
                 "--model", "quick", "--width", "0.125", "--epochs", "1", "--batch-size", "16", "--out", str(out),
                 "--progress", "none"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "plus" and summary["headline"] == "fusion"
    assert set(summary["test_accuracy"]) == {"fusion", "last", "best"}
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["context"] == "ge" and cfg["head_features"] == "goodness" and cfg["fusion_from"] == 1


def test_bench_and_ablate_take_the_recipe(tmp_path, single_thread):
    assert main(["bench", "--recipe", "plus", "--model", "digits", "--width", "0.25", "--batch-size", "16",
                 "--steps", "1", "--warmup", "0", "--chunk", "1", "--device", "cpu", "--no-matmul-peak",
                 "--out", str(tmp_path / "bench")]) == 0
    (r,) = json.loads((tmp_path / "bench" / "bench.json").read_text())["results"]
    assert (r["recipe"], r["context"], r["head_features"]) == ("plus", "ge", "goodness")
    out = tmp_path / "abl"
    assert main(["ablate", "--recipe", "plus", "--dataset", "digits", "--channels", "16v,32", "--subset", "128",
                 "--batch-size", "64", "--epochs", "1", "--progress", "none", "--pools", "rms", "--contexts", "ge",
                 "--out", str(out)]) == 0
    cfg = yaml.safe_load((out / "rms-ge" / "config.yaml").read_text())
    assert (cfg["recipe"], cfg["head_features"], cfg["fusion_from"], cfg["head_lr"]) == ("plus", "goodness", 1, 1e-2)
