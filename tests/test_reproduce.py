"""benchmarks/reproduce.sh: the paper's recipe at full scale on a GPU; --tiny end to end here (issue 14)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from asge.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def reproduce(*args, timeout=600):
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "reproduce.sh"), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_the_fashion_mnist_config_is_the_papers_recipe():
    c = TrainConfig.from_yaml(ROOT / "configs" / "vgg8-fashion-mnist.yaml").resolved()
    assert (c.dataset, c.model, c.width, c.method, c.recipe) == ("fashion-mnist", "vgg8", 1.0, "asge", "paper")
    assert (c.lr, c.head_lr, c.weight_decay, c.min_lr, c.batch_size, c.dropout, c.epochs) == \
        (2e-4, 2e-4, 1e-3, 1e-5, 128, 0.1, 100)
    assert (c.pool, c.norm, c.context, c.alpha, c.head_features, c.fusion_from) == ("rms", "layer", "none", 1.0,
                                                                                      "gap", 2)


def jpeg_tree(root: Path, per_class: int = 14) -> Path:
    """A CIFAR-like JPEG ImageFolder tree: train/<class>/*.jpg, 32x32, no test/."""
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for c in range(10):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = (rng.random((32, 32, 3)) * 80 + c * 17).clip(0, 255).astype("uint8")
            Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


def test_cifar10_tiny_on_a_jpeg_tree_without_test_holds_back_a_test_split(tmp_path):
    tree = jpeg_tree(tmp_path / "cifar")
    out = tmp_path / "out"
    p = reproduce("cifar10", "--data", str(tree), "--out", str(out), "--tiny", "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["tiny"] and s["dataset"] == "cifar10" and s["paper_fusion_test_accuracy"] == 90.62
    assert "--test-split 20" in s["command"] and "held back" in s["test_split"]
    assert "--dataset imagefolder" in s["command"] and "vgg8-cifar10.yaml" in s["command"]
    assert s["fusion_minus_paper"] == s["test_accuracy"]["fusion"] - 90.62 and s["epochs"] == 2
    curve = json.loads((out / "block_curve.json").read_text())
    assert [e["epoch"] for e in curve] == [1, 2] and all(len(e["block_acc"]) == 7 for e in curve)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "report" / "val_blocks.png").stat().st_size > 0 and s["report"] == "report/val_blocks.png"
    again = reproduce("cifar10", "--data", str(tree), "--out", str(out), "--tiny", "--device", "cpu")
    assert again.returncode == 0 and json.loads((out / "summary.json").read_text())["resumed"] is True


def test_cifar10_from_a_zip_of_the_tree_is_unpacked_once(tmp_path):
    import zipfile
    tree = jpeg_tree(tmp_path / "cifar")
    archive = tmp_path / "cifar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(tree.rglob("*.jpg")):
            z.write(f, f.relative_to(tree).as_posix())
    out = tmp_path / "out"
    p = reproduce("cifar10", "--data", str(archive), "--out", str(out), "--tiny", "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"{archive} unpacked in {out / 'data'}" in p.stdout
    s = json.loads((out / "summary.json").read_text())
    assert f"--data-root {out / 'data'}" in s["command"] and "--test-split 20" in s["command"]
    assert sorted(f.relative_to(out / "data") for f in (out / "data").rglob("*.jpg")) == \
        sorted(f.relative_to(tree) for f in tree.rglob("*.jpg"))
    again = reproduce("cifar10", "--data", str(archive), "--out", str(out), "--tiny", "--device", "cpu")
    assert again.returncode == 0 and "unpacked" in again.stdout and json.loads(
        (out / "summary.json").read_text())["resumed"] is True
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("train/a/0.jpg", b"x")
        z.writestr("../outside.txt", b"x")
    p = reproduce("cifar10", "--data", str(evil), "--out", str(tmp_path / "o2"), "--tiny")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "holds '../outside.txt': expected only train/, test/ or val/ trees of images" in p.stderr
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "o2" / "data").exists()


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist package")
def test_fashion_mnist_tiny_end_to_end(tmp_path):
    out = tmp_path / "out"
    p = reproduce("fashion-mnist", "--data", str(FASHION), "--out", str(out), "--tiny", "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["paper_fusion_test_accuracy"] == 93.41 and "vgg8-fashion-mnist.yaml" in s["command"]
    assert set(s["test_accuracy"]) == {"fusion", "last", "best"} and s["train_seconds"] > 0


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    p = reproduce("mnist", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "fashion-mnist, cifar10" in p.stderr
    p = reproduce("cifar10", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "not a directory or a .zip of one" in p.stderr
    (tmp_path / "empty").mkdir()
    p = reproduce("fashion-mnist", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "lacks train-images-idx3-ubyte" in p.stderr
    p = reproduce("cifar10", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "has no train/" in p.stderr
    assert not (tmp_path / "o").exists()
