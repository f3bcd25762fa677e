"""asge predict sees exactly the pixels the run's own test saw, for every way a run can read its data.

For each data path (digits, IDX files, CIFAR batches, an ImageFolder tree of S x S JPEGs, a tree of larger
images, a mixed tree) a short run is trained through the CLI; its test split is then given to ``asge predict``
as image files, and the predictions must be, image by image, those of the loaded network on the test split's
own batches, with the accuracy summary.json reports. How a tree is read is decided from every image's size,
said in one line and recorded.
"""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import asge
from asge.cli import main
from asge.config import TrainConfig
from asge.runs.build import load_run_data

from test_data import data_write_idx

CLASSES = ("ant", "bee", "cat", "dog")
TRAIN = ["--channels", "8,16v", "--epochs", "1", "--batch-size", "16", "--progress", "none", "--device", "cpu",
         "--num-workers", "0"]


def pattern(label: int, h: int, w: int, rng) -> np.ndarray:
    """A learnable RGB image of class ``label``: a class colour and stripe direction, plus noise. uint8 (h, w, 3)."""
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.sin((xx if label % 2 else yy) * (0.6 + 0.3 * label)) * 60
    base = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [180, 180, 40]][label], dtype=np.float64)
    img = base + stripes[..., None] + rng.normal(0, 25, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_tree(root: Path, size_of, n_train: int = 24, n_test: int = 6, ext: str = "jpg") -> Path:
    """An ImageFolder tree root/{train,test}/<class>/NNN.ext; ``size_of(split, label, i)`` gives (h, w)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(pattern(label, *size_of(split, label, i), rng)).save(folder / f"{i:03d}.{ext}",
                                                                                     quality=90)
    return root


def split_files(root: Path) -> list[Path]:
    """The test split's files in the order the loader reads them (class folders sorted, then file names)."""
    return [p for c in sorted(d.name for d in (root / "test").iterdir()) for p in sorted((root / "test" / c).iterdir())]


def train(capsys, run: Path, *argv: str) -> tuple[dict, str]:
    assert main(["train", *argv, *TRAIN, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    return json.loads((run / "summary.json").read_text()), out


def assert_predict_matches_test(capsys, run: Path, files: list[Path], labels: list[int], summary: dict) -> None:
    """asge predict over ``files`` (the test split's images, in its order) == the run's test, image by image."""
    assert main(["predict", str(run), *map(str, files), "--format", "json", "--batch-size", "256"]) == 0
    predicted = [r["predictions"][0]["class"] for r in json.loads(capsys.readouterr().out)]
    net = asge.load(run)
    data = load_run_data(TrainConfig.from_dict(json.loads(json.dumps(net.config.to_dict()))), torch.device("cpu"))
    x, y = map(torch.cat, zip(*data.test.batches(256, shuffle=False, augment=False, seed=0, device="cpu")))
    assert len(files) == len(y) and y.tolist() == labels
    with torch.no_grad():
        expected = [net.classes[i] for i in net.predict(x, "best").argmax(1).tolist()]
    assert predicted == expected
    correct = sum(p == net.classes[t] for p, t in zip(predicted, labels))
    assert 100.0 * correct / len(labels) == pytest.approx(summary["test_accuracy"]["best"], abs=1e-9)


def test_digits(capsys, tmp_path, single_thread):
    summary, _ = train(capsys, tmp_path / "run", "--dataset", "digits")
    test = asge.data.load_data("digits").test
    files = []
    for i, img in enumerate((test.images[:, 0] * 15).to(torch.uint8).numpy()):  # 0..16 as 0..240: exact
        files.append(tmp_path / f"{i:03d}.png")
        Image.fromarray(img).save(files[-1])
    assert_predict_matches_test(capsys, tmp_path / "run", files, test.labels.tolist(), summary)


def test_idx_files(capsys, tmp_path, single_thread):
    """Fashion-MNIST's IDX files: 28x28 grey images, resized to 32x32 at load and by predict alike."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 120), ("t10k", 40)):
        labels = np.arange(n) % 4
        arrays[split] = (np.stack([pattern(c, 28, 28, rng).mean(2) for c in labels]).astype(np.uint8), labels)
        data_write_idx(tmp_path / "fm" / f"{split}-images-idx3-ubyte", arrays[split][0], True)
        data_write_idx(tmp_path / "fm" / f"{split}-labels-idx1-ubyte", arrays[split][1], True)
    summary, _ = train(capsys, tmp_path / "run", "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "fm"))
    assert summary["data"]["resize"] == "stretch" and summary["augmentation"] == "hflip"
    files = []
    for i, img in enumerate(arrays["t10k"][0]):
        files.append(tmp_path / f"{i:03d}.png")
        Image.fromarray(img).save(files[-1])
    assert_predict_matches_test(capsys, tmp_path / "run", files, arrays["t10k"][1].tolist(), summary)


def test_cifar_batches(capsys, tmp_path, single_thread):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    test_images = None
    for name, n in [(f"data_batch_{i}", 20) for i in range(1, 6)] + [("test_batch", 40)]:
        labels = [i % 4 for i in range(n)]
        images = np.stack([pattern(c, 32, 32, rng) for c in labels])
        (folder / name).write_bytes(pickle.dumps({"data": images.transpose(0, 3, 1, 2).reshape(n, -1),
                                                  "labels": labels}, protocol=2))
        test_images, test_labels = images, labels
    summary, _ = train(capsys, tmp_path / "run", "--dataset", "cifar10", "--data-root", str(tmp_path))
    files = []
    for i, img in enumerate(test_images):
        files.append(tmp_path / f"{i:03d}.png")
        Image.fromarray(img).save(files[-1])
    assert_predict_matches_test(capsys, tmp_path / "run", files, test_labels, summary)


@pytest.mark.parametrize("kind", ["square", "larger", "mixed"])
def test_image_trees(capsys, tmp_path, single_thread, kind):
    """S x S JPEGs (held in memory, used as they are), larger images (decoded per batch, resized and centre
    cropped) and a mixed tree (mostly S x S: in memory, the others resized whole, in training and by predict)."""
    sizes = {"square": lambda s, c, i: (32, 32), "larger": lambda s, c, i: (40 + 3 * i, 50 - i),
             "mixed": lambda s, c, i: (48, 40) if i % 5 == 0 else (32, 32)}[kind]
    root = make_tree(tmp_path / "tree", sizes)
    summary, out = train(capsys, tmp_path / "run", "--dataset", "imagefolder", "--data-root", str(root))
    in_memory = kind != "larger"
    assert summary["data"]["resize"] == ("stretch" if in_memory else "center-crop")
    assert summary["augmentation"] == ("cifar" if in_memory else "random-resized-crop-flip")
    square = {"square": 120, "larger": 0, "mixed": 92}[kind]
    line = next(line for line in out.splitlines() if "images are 32x32" in line)
    assert line.startswith(f"imagefolder: {square} of 120 images are 32x32: decoded "
                           + ("once into memory" if in_memory else "per batch"))
    assert line.endswith(f"training augmentation {summary['augmentation']}") and summary["reading"] in line
    files = split_files(root)
    assert_predict_matches_test(capsys, tmp_path / "run", files, [i // 6 for i in range(24)], summary)
    net = asge.load(tmp_path / "run")                       # asge.load and the export's card say the same
    assert net.preprocessing.resize == summary["data"]["resize"]


def test_one_odd_image_does_not_decide_how_a_tree_is_read(capsys, tmp_path, single_thread):
    """The same tree, its one 48x40 image first or last in the sort order, is read the same way."""
    first = make_tree(tmp_path / "first", lambda s, c, i: (48, 40) if (s, c, i) == ("train", 0, 0) else (32, 32))
    last = make_tree(tmp_path / "last", lambda s, c, i: (48, 40) if (s, c, i) == ("train", 3, 23) else (32, 32))
    readings = []
    for root in (first, last):
        data = asge.data.load_data("imagefolder", str(root), num_workers=0)
        assert data.info.resize == "stretch" and data.train.augmentation == "cifar"
        readings.append(data.reading.split(": ", 1)[1])
    assert readings[0] == readings[1] == ("119 of 120 images are 32x32: decoded once into memory (the other 1 "
                                          "resized whole to 32x32, for training and test alike); evaluation uses "
                                          "them as loaded")


def test_listing_hash_tells_trees_apart(tmp_path):
    """Provenance records, per split, a hash of the sorted (relative path, bytes) list."""
    import hashlib
    a = make_tree(tmp_path / "a", lambda s, c, i: (32, 32), n_train=4, n_test=2)
    data = asge.data.load_data("imagefolder", str(a), num_workers=0)
    lines = sorted(f"{p.relative_to(a)}\t{p.stat().st_size}\n" for p in split_files(a))
    assert data.listings["test"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    (a / "test" / "ant" / "000.jpg").write_bytes((a / "test" / "bee" / "000.jpg").read_bytes() + b"\0")
    changed = asge.data.load_data("imagefolder", str(a), num_workers=0)
    assert changed.listings["test"] != data.listings["test"] and changed.listings["train"] == data.listings["train"]
