"""Colour data: an ImageFolder tree of small images held in memory, a held-back test split, --augment."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from asge.data import DatasetError, FolderSplit, TensorSplit, load_data
from asge.data.augment import crop_flip_random


def make_small_tree(root, per_class=10, classes=("cat", "dog", "eel"), size=32, seed=0):
    """train/<class>/NNNN.png of size x size RGB images (a CIFAR-like tree); returns the pixels by path."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    pixels = {}
    for c in classes:
        d = root / "train" / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            path = d / f"{i:04d}.png"
            Image.fromarray(arr).save(path)
            pixels[str(path)] = arr
    return pixels


def test_test_split_is_class_balanced_fixed_and_disjoint(tmp_path):
    pixels = make_small_tree(tmp_path, per_class=10)
    a = load_data("imagefolder", str(tmp_path), test_split=6)
    b = load_data("imagefolder", str(tmp_path), test_split=6, seed=5, subset=10)
    assert isinstance(a.train, TensorSplit) and isinstance(a.test, TensorSplit)
    assert (len(a.train), len(a.val), len(a.test)) == (22, 2, 6)
    assert sorted(a.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]          # two of each class
    assert torch.equal(a.test.images, b.test.images)                        # the run seed does not move it
    rows = lambda s: {bytes(im.numpy()) for im in s.images}                 # noqa: E731
    assert not rows(a.test) & (rows(a.train) | rows(a.val))
    assert len(rows(a.train) | rows(a.val) | rows(a.test)) == len(pixels)
    # images are the files' pixels, unchanged (no resize for images already at the input size)
    assert rows(a.train) | rows(a.val) | rows(a.test) == {bytes(torch.from_numpy(p).permute(2, 0, 1).numpy())
                                                          for p in pixels.values()}


def test_small_tree_trains_with_the_cifar_augmentation_and_evaluates_unchanged(tmp_path):
    make_small_tree(tmp_path, per_class=4)
    data = load_data("imagefolder", str(tmp_path), test_split=3)
    assert data.train.augmentation == "cifar" and data.val.augmentation == "none"
    x, _ = next(data.test.batches(3, shuffle=False, augment=False, seed=0, device="cpu"))
    ref = data.test.images.float() / 255
    ref = ref / ref.square().mean(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
    torch.testing.assert_close(x, ref)
    assert load_data("imagefolder", str(tmp_path), test_split=3, augment="crop-flip").train.augmentation == "crop-flip"


def test_larger_images_stay_on_the_per_batch_path(tmp_path):
    make_small_tree(tmp_path, per_class=3, size=40)
    data = load_data("imagefolder", str(tmp_path), test_split=3, num_workers=0)
    assert isinstance(data.train, FolderSplit) and data.train.train
    assert not load_data("imagefolder", str(tmp_path), test_split=3, augment="none", num_workers=0).train.train
    with pytest.raises(DatasetError, match="augment 'cifar' needs images held in memory"):
        load_data("imagefolder", str(tmp_path), test_split=3, augment="cifar", num_workers=0)


def test_test_split_refusals(tmp_path):
    make_small_tree(tmp_path, per_class=3)
    with pytest.raises(DatasetError, match="or train/ alone with --test-split N"):
        load_data("imagefolder", str(tmp_path))
    with pytest.raises(DatasetError, match="between 1 and 8"):
        load_data("imagefolder", str(tmp_path), test_split=9)
    with pytest.raises(DatasetError, match="imagefolder only"):
        load_data("digits", test_split=10)
    (tmp_path / "test" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="use one test split"):
        load_data("imagefolder", str(tmp_path), test_split=3)


def test_crop_flip_draws_three_numbers_and_matches_the_cifar_geometry():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    out = crop_flip_random(x, g)
    u = torch.rand(5, 3, generator=torch.Generator().manual_seed(3))
    oy, ox = (u[:, 0] * 9).long().clamp(max=8), (u[:, 1] * 9).long().clamp(max=8)
    # an independent crop + flip, image by image
    padded = torch.nn.functional.pad(x.float(), (4, 4, 4, 4))
    for i in range(5):
        ref = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        ref = ref.flip(2) if u[i, 2] < 0.5 else ref
        torch.testing.assert_close(out[i], ref / 255)
    after = torch.Generator().manual_seed(3)
    torch.rand(5, 3, generator=after)
    assert torch.equal(g.get_state(), after.get_state())               # exactly three draws per image


def test_cli_trains_a_colour_tree_with_a_held_back_test_split(tmp_path):
    make_small_tree(tmp_path / "data", per_class=8, size=16)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "asge", "train", "--dataset", "imagefolder", "--data-root",
                        str(tmp_path / "data"), "--input-size", "16", "--test-split", "6", "--channels", "8,8v",
                        "--epochs", "1", "--augment", "crop-flip", "--out", str(out), "--progress", "none"],
                       capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    import json
    import yaml
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["test_split"] == 6 and cfg["augment"] == "crop-flip"
    assert json.loads((out / "summary.json").read_text())["data"]["classes"] == ["cat", "dog", "eel"]
    bad = subprocess.run([sys.executable, "-m", "asge", "train", "--dataset", "imagefolder", "--data-root",
                          str(tmp_path / "data"), "--augment", "sideways", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown augment 'sideways'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_colour_recipe_trains_a_colour_tree_alone_and_learns_its_projections(tmp_path):
    """--recipe colour (plus, a learned goodness projection, no augmentation, small batches) on a tree of S x S
    colour images with a held-back test split: it trains, records what it set, and every block's projection moved."""
    from asge.config import TrainConfig
    from asge.recipes import RECIPES
    from asge.runs.directory import load_checkpoint
    from asge.train import fit
    make_small_tree(tmp_path / "data", per_class=8, size=16)
    cfg = TrainConfig(recipe="colour", dataset="imagefolder", data_root=str(tmp_path / "data"), input_size=16,
                      test_split=6, channels=[8, 8], downsample=[False, True], epochs=1, progress="none",
                      out=str(tmp_path / "run"), seed=0)
    cfg = TrainConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k not in RECIPES["colour"]})
    assert (cfg.projection, cfg.augment, cfg.context, cfg.head_features, cfg.batch_size) == \
        ("learned", "none", "ge", "goodness", RECIPES["colour"]["batch_size"])
    summary = fit(cfg, log=lambda *_: None)
    assert summary["recipe"] == "colour" and set(summary["test_accuracy"]) == {"fusion", "last", "best"}
    from asge import ASGENet
    start = ASGENet([8, 8], [False, True], in_channels=3, num_classes=3, image_size=16, seed=0,
                    projection="learned", context="ge", head_features="goodness", fusion_from=1).state_dict()
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    for l in range(2):
        assert not torch.equal(start[f"blocks.{l}.projection.weight"], trained[f"blocks.{l}.projection.weight"])
