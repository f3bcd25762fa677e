"""Tests of asge.data: every format written small into tmp_path, plus the real Debian Fashion-MNIST."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from asge import data as D
from asge.data import DATASETS, DatasetError, TensorSplit, load_data
from asge.data.classes import CIFAR10, CIFAR100, FASHION_MNIST

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------------

def data_write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def data_make_mnist(directory: Path, n_train=60, n_test=12, gz=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    return {k: data_write_idx(directory / k, v, gz) for k, v in arrays.items()}


def data_write_cifar_batch(path: Path, n: int, label_key: str, ncls: int, seed: int, bytes_keys=False,
                           old_numpy=False):
    rng = np.random.default_rng(seed)
    d = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: [int(i % ncls) for i in range(n)]}
    if bytes_keys:  # keys stored as bytes, as some re-pickled copies have them
        d = {k.encode(): v for k, v in d.items()}
    raw = pickle.dumps(d, protocol=2)
    if old_numpy:  # the original files name numpy 1's module path
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray" in raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def data_make_cifar10(root: Path, per_batch=10, n_test=10) -> Path:
    d = root / "cifar-10-batches-py"
    for i in range(1, 6):
        data_write_cifar_batch(d / f"data_batch_{i}", per_batch, "labels", 10, seed=i, bytes_keys=(i == 1),
                               old_numpy=(i == 2))
    data_write_cifar_batch(d / "test_batch", n_test, "labels", 10, seed=99)
    return d


def data_make_cifar100(root: Path, n_train=40, n_test=10) -> Path:
    d = root / "cifar-100-python"
    data_write_cifar_batch(d / "train", n_train, "fine_labels", 100, seed=1)
    data_write_cifar_batch(d / "test", n_test, "fine_labels", 100, seed=2)
    return d


def data_make_tree(root: Path, splits: dict[str, int], classes=("cat", "dog", "eel"), seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, per_class in splits.items():
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                mode = "L" if i == 0 else "RGB"  # a grey image must come out with 3 channels too
                img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
                img.save(d / f"{i:03d}.png")
            (d / "notes.txt").write_text("not an image")
    return root


def data_collect(split, seed=0, augment=False, shuffle=True, bs=16, **kw):
    return [(x.clone(), y.clone()) for x, y in split.batches(bs, shuffle=shuffle, augment=augment, seed=seed,
                                                              device="cpu", **kw)]


def data_check_batches(split, channels, size, num_classes):
    n = 0
    for x, y in split.batches(16, shuffle=False, augment=False, seed=0, device=torch.device("cpu")):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (channels, size, size) and y.shape == (x.shape[0],)
        assert x.min() >= 0
        rms = x.square().mean(dim=(1, 2, 3)).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-4, rtol=0)
        assert 0 <= y.min() and y.max() < num_classes
        n += x.shape[0]
    assert n == len(split)


def data_same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


@pytest.fixture
def data_no_debian(monkeypatch, tmp_path):
    monkeypatch.setattr(D.in_memory, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))


# ---------------------------------------------------------------------------------------------------
# names, digits, TensorSplit mechanics
# ---------------------------------------------------------------------------------------------------

def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        load_data("svhn")
    for name in DATASETS:
        assert name in str(e.value)


def test_digits_splits_shapes_and_stratification():
    data = load_data("digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1077, 360, 360)
    assert data.info == D.DatasetInfo("digits", 10, 1, 8, tuple("0123456789"))
    assert data.train.images.dtype == torch.uint8 and data.train.images.max() == 16
    for s in (data.train, data.val, data.test):
        data_check_batches(s, 1, 8, 10)
        counts = torch.bincount(s.labels, minlength=10)
        assert counts.min() >= 0.09 * len(s) and counts.max() <= 0.11 * len(s)  # stratified
    # splits are fixed: independent of the run seed
    other = load_data("digits", seed=5)
    assert torch.equal(other.val.images, data.val.images) and torch.equal(other.test.labels, data.test.labels)
    # digits has no augmentation
    assert data_same(data_collect(data.train, augment=True), data_collect(data.train, augment=False))


def test_digits_input_size_resizes():
    data = load_data("digits", input_size=16)
    assert data.info.image_size == 16
    data_check_batches(data.val, 1, 16, 10)


def test_tensor_split_order_determinism_and_counts():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone() + 1
    split = TensorSplit(x, torch.arange(10), augmentation="none")
    a, b = data_collect(split, seed=3, bs=4), data_collect(split, seed=3, bs=4)
    assert data_same(a, b)
    assert not data_same(a, data_collect(split, seed=4, bs=4))
    assert [len(y) for _, y in a] == [4, 4, 2] and split.num_batches(4) == 3
    assert sorted(torch.cat([y for _, y in a]).tolist()) == list(range(10))
    dl = data_collect(split, seed=3, bs=4, drop_last=True)
    assert [len(y) for _, y in dl] == [4, 4] and split.num_batches(4, drop_last=True) == 2
    plain = data_collect(split, shuffle=False, bs=4)
    assert torch.cat([y for _, y in plain]).tolist() == list(range(10))
    # the stored split is untouched by batching (no in-place normalisation of a view)
    assert torch.equal(split.images, x)
    fl = TensorSplit(x.float() / 255, torch.arange(10))
    data_collect(fl, shuffle=False, bs=4)
    torch.testing.assert_close(fl.images, x.float() / 255)


def test_rms_normalize_zero_image_is_finite():
    x = torch.zeros(2, 3, 4, 4)
    x[1] = 0.5
    y = D.rms_normalize(x.clone())
    assert torch.isfinite(y).all() and (y[0] == 0).all()
    torch.testing.assert_close(y[1], torch.ones(3, 4, 4))


# ---------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# ---------------------------------------------------------------------------------------------------

def test_mnist_torchvision_layout_gz(tmp_path):
    data_make_mnist(tmp_path / "MNIST" / "raw", gz=True)
    data = load_data("mnist", str(tmp_path))
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 12)
    assert data.info == D.DatasetInfo("mnist", 10, 1, 32, tuple("0123456789"))
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 32, 32)
    for s in (data.train, data.val, data.test):
        data_check_batches(s, 1, 32, 10)
    # mnist: no augmentation
    assert data_same(data_collect(data.train, augment=True), data_collect(data.train, augment=False))
    # the val split is fixed (seed 42), the train/val partition covers the official train set
    again = load_data("mnist", str(tmp_path), seed=7)
    assert torch.equal(again.val.images, data.val.images)


def test_fashion_raw_files_in_root_and_hflip(tmp_path, data_no_debian):
    data_make_mnist(tmp_path, gz=False)
    data = load_data("fashion-mnist", str(tmp_path), input_size=28)
    assert data.info.image_size == 28 and len(data.train) == 50
    plain = data_collect(data.train, seed=1, augment=False)
    aug = data_collect(data.train, seed=1, augment=True)
    flipped = unflipped = 0
    for (xa, ya), (xp, yp) in zip(aug, plain):
        assert torch.equal(ya, yp)  # augmentation does not change the order
        for ia, ip in zip(xa, xp):
            if torch.equal(ia, ip):
                unflipped += 1
            else:
                torch.testing.assert_close(ia, ip.flip(-1))  # RMS summation order may differ by 1 ulp
                flipped += 1
    assert flipped > 5 and unflipped > 5
    assert data_same(aug, data_collect(data.train, seed=1, augment=True))
    # val/test never augmented
    for s in (data.val, data.test):
        assert data_same(data_collect(s, augment=True), data_collect(s, augment=False))


def test_idx_resize_matches_reference(tmp_path):
    files = data_make_mnist(tmp_path / "MNIST" / "raw", gz=True)
    data = load_data("mnist", str(tmp_path))
    raw = D.read_idx(files["t10k-images-idx3-ubyte"], 3)
    ref = TF.resize(torch.from_numpy(raw.copy()).unsqueeze(1).float(), [32, 32], antialias=True)
    diff = (data.test.images.float() - ref.round().clamp(0, 255)).abs().max()
    assert diff <= 1


def test_mnist_missing_names_paths_and_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as e:
        load_data("mnist", str(tmp_path / "x"))
    msg = str(e.value)
    assert str(tmp_path / "x" / "MNIST" / "raw") in msg and str(tmp_path / "x") in msg
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert stem in msg
    assert "--data-root" in msg and "--download" in msg
    with pytest.raises(DatasetError, match=r"data[/\\]MNIST[/\\]raw"):  # root None -> ./data
        load_data("mnist")


def test_fashion_missing_lists_debian_path(tmp_path, data_no_debian, monkeypatch):
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    data_write_idx(tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte", np.zeros((2, 28, 28)), True)
    with pytest.raises(DatasetError) as e:
        load_data("fashion-mnist", str(tmp_path))
    msg = str(e.value)           # a root given is the only place looked in: Debian's path is not a fallback
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and str(tmp_path / "no-debian") not in msg
    assert "lacks" in msg and "t10k-labels-idx1-ubyte" in msg
    monkeypatch.chdir(tmp_path / "FashionMNIST")        # no root: ./data, then Debian's path
    with pytest.raises(DatasetError) as e:
        load_data("fashion-mnist")
    assert str(tmp_path / "no-debian") in str(e.value) and "data" in str(e.value)


def test_a_data_root_that_does_not_exist_is_refused_not_replaced(tmp_path):
    with pytest.raises(DatasetError, match=f"the data root {tmp_path / 'nowhere'} does not exist") as e:
        load_data("fashion-mnist", str(tmp_path / "nowhere"))
    assert "/usr/share/datasets" not in str(e.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="is not a directory"):
        load_data("cifar10", str(tmp_path / "afile"))
    with pytest.raises(DatasetError, match="no IDX files found"):   # exists, lacks the files: not Debian's
        load_data("fashion-mnist", str(tmp_path))


@pytest.mark.parametrize("defect", ["magic", "truncated", "count", "label-range", "bad-gzip"])
def test_idx_malformed(tmp_path, defect):
    files = data_make_mnist(tmp_path / "MNIST" / "raw", gz=False)
    img = files["train-images-idx3-ubyte"]
    if defect == "magic":
        img.write_bytes(b"\x00\x00\x09\x03" + img.read_bytes()[4:])
        pattern = "not an IDX file"
    elif defect == "truncated":
        img.write_bytes(img.read_bytes()[:-100])
        pattern = "truncated"
    elif defect == "count":
        data_write_idx(files["train-labels-idx1-ubyte"], np.zeros(59), gz=False)
        pattern = "60 images but .* 59 labels"
    elif defect == "label-range":
        data_write_idx(files["train-labels-idx1-ubyte"], np.full(60, 12), gz=False)
        pattern = r"labels must be in \[0, 9\]"
    else:
        img.write_bytes(gzip.compress(img.read_bytes())[:200])
        pattern = "gzip"
    with pytest.raises(DatasetError, match=pattern) as e:
        load_data("mnist", str(tmp_path))
    assert str(tmp_path) in str(e.value)


def test_mnist_download_uses_torchvision(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            data_make_mnist(Path(root) / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(DatasetError):
        load_data("mnist", str(tmp_path))
    assert not calls  # only when asked
    data = load_data("mnist", str(tmp_path), download=True)
    assert calls and calls[0] == (str(tmp_path), True, True) and len(data.test) == 12


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} absent (Debian package dataset-fashion-mnist)")
def test_real_debian_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = load_data("fashion-mnist")  # no --data-root and no ./data: falls back to the Debian path
    assert data.info.root == str(DEBIAN)
    assert (len(data.train), len(data.val), len(data.test)) == (50000, 10000, 10000)
    assert data.info == D.DatasetInfo("fashion-mnist", 10, 1, 32, FASHION_MNIST)
    assert data.train.images.dtype == torch.uint8
    assert torch.bincount(data.test.labels, minlength=10).tolist() == [1000] * 10
    x, y = next(data.train.batches(128, shuffle=True, augment=True, seed=0, device="cpu"))
    assert x.shape == (128, 1, 32, 32) and y.shape == (128,)
    torch.testing.assert_close(x.square().mean(dim=(1, 2, 3)), torch.ones(128), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------------

def test_cifar10_layout_splits_and_augmentation(tmp_path):
    folder = data_make_cifar10(tmp_path)
    data = load_data("cifar10", str(tmp_path))
    assert (len(data.train), len(data.val), len(data.test)) == (45, 5, 10)
    assert data.info == D.DatasetInfo("cifar10", 10, 3, 32, CIFAR10)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 32)
    for s in (data.train, data.val, data.test):
        data_check_batches(s, 3, 32, 10)
    direct = load_data("cifar10", str(folder))  # root pointing at the batches folder itself
    assert torch.equal(direct.test.images, data.test.images)
    aug = data_collect(data.train, seed=2, augment=True)
    plain = data_collect(data.train, seed=2, augment=False)
    assert data_same(aug, data_collect(data.train, seed=2, augment=True))
    assert not data_same(aug, data_collect(data.train, seed=3, augment=True))
    for (xa, ya), (xp, yp) in zip(aug, plain):
        assert torch.equal(ya, yp)
        assert all(not torch.equal(a, p) for a, p in zip(xa, xp))
    rms = torch.cat([x for x, _ in aug]).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-4, rtol=0)
    for s in (data.val, data.test):
        assert data_same(data_collect(s, augment=True), data_collect(s, augment=False))


def test_cifar100_fine_labels(tmp_path):
    data_make_cifar100(tmp_path)
    data = load_data("cifar100", str(tmp_path))
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 10)
    assert data.info == D.DatasetInfo("cifar100", 100, 3, 32, CIFAR100)
    data_check_batches(data.train, 3, 32, 100)
    labels = torch.cat([data.train.labels, data.val.labels]).sort().values
    assert labels.tolist() == list(range(40))


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_data("cifar10", str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg and "test_batch" in msg
    folder = data_make_cifar100(tmp_path)
    (folder / "test").write_bytes(b"garbage, not a pickle")
    with pytest.raises(DatasetError, match="not a CIFAR python batch file") as e:
        load_data("cifar100", str(tmp_path))
    assert str(folder / "test") in str(e.value)
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"uint8 \(N, 3072\)"):
        load_data("cifar100", str(tmp_path))
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match="fine_labels"):
        load_data("cifar100", str(tmp_path))
    with open(folder / "test", "wb") as f:  # a pickle that would run code is refused
        pickle.dump({"data": os.getcwd, "fine_labels": []}, f)
    with pytest.raises(DatasetError, match="unexpected object"):
        load_data("cifar100", str(tmp_path))


def test_augment_cifar_crop_flip_matches_torchvision():
    x = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    out = D.augment_cifar(x, torch.Generator().manual_seed(5), jitter=0.0, hue=0.0, p_gray=0.0)
    u = torch.rand(64, 8, generator=torch.Generator().manual_seed(5))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(64):
        oy, ox = int(u[i, 0] * 9), int(u[i, 1] * 9)
        ref = TF.crop(padded[i], oy, ox, 12, 12)
        if u[i, 2] < 0.5:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref.float() / 255)


def test_augment_cifar_jitter_and_grayscale_statistics():
    x = torch.rand(400, 3, 8, 8).mul(255).to(torch.uint8)
    out = D.augment_cifar(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 0.12 < gray.float().mean() < 0.28


def test_adjust_hue_batched_matches_torchvision():
    x = torch.rand(16, 3, 9, 9)
    x[0] = x[0, :1]  # grey image
    x[1, :, :3] = 1.0
    hue = torch.linspace(-0.5, 0.5, 16)
    ref = torch.stack([TF.adjust_hue(x[i], float(hue[i])) for i in range(16)])
    torch.testing.assert_close(D.adjust_hue_batched(x, hue), ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------
# ImageFolder / ImageNet
# ---------------------------------------------------------------------------------------------------

def test_imagefolder_splits_transforms_and_determinism(tmp_path):
    data_make_tree(tmp_path, {"train": 7, "test": 2})
    data = load_data("imagefolder", str(tmp_path), num_workers=0)
    assert (len(data.train), len(data.val), len(data.test)) == (19, 2, 6)
    assert data.info == D.DatasetInfo("imagefolder", 3, 3, 32, ("cat", "dog", "eel"), resize="center-crop")
    for s in (data.train, data.val, data.test):
        data_check_batches(s, 3, 32, 3)
    aug = data_collect(data.train, seed=1, augment=True, bs=8)
    assert data_same(aug, data_collect(data.train, seed=1, augment=True, bs=8))
    assert not data_same(aug, data_collect(data.train, seed=2, augment=True, bs=8))
    plain = data_collect(data.train, seed=1, augment=False, bs=8)
    for (xa, ya), (xp, yp) in zip(aug, plain):
        assert torch.equal(ya, yp) and not torch.equal(xa, xp)
    for s in (data.val, data.test):
        assert data_same(data_collect(s, augment=True), data_collect(s, augment=False))
    # shuffling really mixes the classes (ImageFolder lists are sorted by class)
    first = [y for _, y in data_collect(data.train, seed=0, bs=19)][0]
    assert first.tolist() != sorted(first.tolist())
    # worker processes give the same batches as the main process
    data.train.num_workers = 1
    assert data_same(aug, data_collect(data.train, seed=1, augment=True, bs=8))


def test_imagefolder_input_size_and_subset(tmp_path):
    data_make_tree(tmp_path, {"train": 7, "val": 1})  # val/ is accepted when there is no test/
    a = load_data("imagefolder", str(tmp_path), input_size=24, subset=5, seed=3, num_workers=0)
    b = load_data("imagefolder", str(tmp_path), input_size=24, subset=5, seed=3, num_workers=0)
    c = load_data("imagefolder", str(tmp_path), input_size=24, subset=5, seed=4, num_workers=0)
    assert len(a.train) == 5 and len(a.test) == 3 and a.info.image_size == 24
    assert a.train.samples == b.train.samples and a.train.samples != c.train.samples
    assert a.val.samples == c.val.samples
    x, _ = next(a.train.batches(5, shuffle=False, augment=True, seed=0, device="cpu"))
    assert x.shape == (5, 3, 24, 24)
    with pytest.raises(ValueError, match="larger than the training split"):
        load_data("imagefolder", str(tmp_path), subset=20, num_workers=0)


def test_imagenet_layout(tmp_path):
    data_make_tree(tmp_path, {"train": 4, "val": 1}, classes=("n01", "n02"))
    data = load_data("imagenet", str(tmp_path), num_workers=0)
    assert (len(data.train), len(data.val), len(data.test)) == (7, 1, 2)
    assert data.info == D.DatasetInfo("imagenet", 2, 3, 224, ("n01", "n02"), resize="center-crop")
    x, y = next(data.test.batches(2, shuffle=False, augment=False, seed=0, device="cpu"))
    assert x.shape == (2, 3, 224, 224) and y.tolist() == [0, 1]
    data_make_tree(tmp_path / "only-test", {"test": 1})
    with pytest.raises(DatasetError, match=r"train.*val"):
        load_data("imagenet", str(tmp_path / "only-test"))


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="--data-root"):
        load_data("imagefolder")
    with pytest.raises(DatasetError) as e:
        load_data("imagefolder", str(tmp_path))
    assert str(tmp_path / "train") in str(e.value) and str(tmp_path / "test") in str(e.value)
    assert "<root>/train/<class>" in str(e.value)
    data_make_tree(tmp_path, {"train": 2, "test": 1})
    (tmp_path / "train" / "fox").mkdir()
    with pytest.raises(DatasetError, match="empty class folder") as e:
        load_data("imagefolder", str(tmp_path))
    assert str(tmp_path / "train" / "fox") in str(e.value)
    (tmp_path / "train" / "fox").rmdir()
    (tmp_path / "test" / "yak").mkdir()
    with pytest.raises(DatasetError, match="not in train/: yak"):
        load_data("imagefolder", str(tmp_path))
    (tmp_path / "test" / "yak").rmdir()
    bad = tmp_path / "train" / "cat" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png.*--skip-unreadable leaves such files out"):
        load_data("imagefolder", str(tmp_path), num_workers=0)          # every header is read at load
    good = next(p for p in (tmp_path / "train" / "cat").iterdir() if p != bad).read_bytes()
    bad.write_bytes(good[:len(good) // 2])                               # a header that reads, pixels that don't
    data = load_data("imagefolder", str(tmp_path), num_workers=0)
    split = next(s for s in (data.train, data.val) if any(p == str(bad) for p, _ in s.samples))
    with pytest.raises(DatasetError, match="broken.png"):
        data_collect(split)


@pytest.mark.parametrize("augmentation", ["none", "hflip", "cifar"])
def test_batches_from_a_start_step_equal_the_rest_of_the_epoch(augmentation):
    """Resuming mid-epoch: batch k onwards is bitwise what a full pass yields from batch k."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (70, 3, 8, 8), dtype=torch.uint8, generator=g)
    split = TensorSplit(images, torch.arange(70) % 10, augmentation=augmentation)
    full = data_collect(split, seed=5, augment=True, bs=16)
    for start in (1, 3):
        assert data_same(data_collect(split, seed=5, augment=True, bs=16, start=start), full[start:])


def test_folder_batches_from_a_start_step_equal_the_rest_of_the_epoch(tmp_path):
    data = load_data("imagefolder", str(data_make_tree(tmp_path, {"train": 6, "test": 1})), num_workers=0)
    full = data_collect(data.train, seed=2, augment=True, bs=4)
    assert data_same(data_collect(data.train, seed=2, augment=True, bs=4, start=2), full[2:])


def test_unreadable_image_in_a_worker_is_one_line_naming_the_file(tmp_path):
    """A DataLoader worker's exception would reach the user wrapped in the worker's traceback."""
    data_make_tree(tmp_path, {"train": 3, "test": 1})
    good = tmp_path / "train" / "dog" / "001.png"
    bad = tmp_path / "train" / "dog" / "truncated.png"
    bad.write_bytes(good.read_bytes()[:60])           # a real PNG header, cut short
    data = load_data("imagefolder", str(tmp_path), num_workers=2)
    split = next(s for s in (data.train, data.val) if any(p == str(bad) for p, _ in s.samples))
    with pytest.raises(DatasetError) as e:
        data_collect(split)
    assert str(e.value).startswith(f"cannot read image {bad}") and "\n" not in str(e.value)


def test_subset_reproducible_and_checked(tmp_path):
    a = load_data("digits", subset=100, seed=1)
    b = load_data("digits", subset=100, seed=1)
    c = load_data("digits", subset=100, seed=2)
    assert len(a.train) == 100 and torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)
    full = load_data("digits")
    # subset images come from the training split only
    rows = {bytes(t.numpy()) for t in full.train.images}
    assert all(bytes(t.numpy()) in rows for t in a.train.images)
    with pytest.raises(ValueError, match="1077"):
        load_data("digits", subset=2000)
    data_make_cifar10(tmp_path)
    s1 = load_data("cifar10", str(tmp_path), subset=10, seed=0)
    s2 = load_data("cifar10", str(tmp_path), subset=10, seed=0)
    assert len(s1.train) == 10 and torch.equal(s1.train.images, s2.train.images)
