"""The in-memory datasets: digits, MNIST, Fashion-MNIST, CIFAR-10/100.

Each is read whole, resized once to the input size, kept uint8 and held as :class:`TensorSplit` objects on
the device. Layouts are listed in :mod:`asge.data`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .classes import DIGITS, class_names
from .formats import cifar_arrays, read_idx
from .splits import SPLIT_SEED, Data, DatasetError, DatasetInfo, TensorSplit, check_size, fixed_split, subset_indices

#: Debian's ``dataset-fashion-mnist`` package installs the four IDX .gz files here.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
#: Default data root when ``root`` is None (then, for Fashion-MNIST, the Debian path).
DEFAULT_ROOT = "./data"


def root_note(root) -> str:
    """`` (the data root R does not exist)`` for a root given that is not a directory, else ``""``."""
    if root is None or Path(root).is_dir():
        return ""
    return f" (the data root {root} {'is not a directory' if Path(root).exists() else 'does not exist'})"


def _dedupe(paths: Sequence[Path]) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 images. x: (N, C, H, W) -> uint8 (N, C, size, size)."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        y = F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{where}: labels must be in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}")


def _in_memory(name: str, train_x, train_y, test_x, test_y, n_val: int, *, num_classes: int, augmentation: str,
               subset, seed, device, scale: float | None = None) -> Data:
    """Fixed train/val split of (N, C, S, S) tensors, optional subset, all three splits on ``device``."""
    tr, va = fixed_split(train_x.shape[0], n_val)
    sub = subset_indices(len(tr), subset, seed, name)
    if sub is not None:
        tr = tr[sub]
    c, s = train_x.shape[1], train_x.shape[-1]
    mk = lambda x, y, aug: TensorSplit(x, y, augmentation=aug, scale=scale, device=device)  # noqa: E731
    return Data(train=mk(train_x[tr], train_y[tr], augmentation), val=mk(train_x[va], train_y[va], "none"),
                test=mk(test_x, test_y, "none"),
                info=DatasetInfo(name=name, num_classes=num_classes, in_channels=c, image_size=s,
                                 classes=class_names(name, num_classes)))


def load_digits(*, subset, seed, device, input_size) -> Data:
    """scikit-learn's digits: 1797 8x8 images, values 0..16. Stratified 60/20/20 split with seed 42:
    train 1077, val 360, test 360. No augmentation. ``input_size`` other than 8 resizes once (bilinear)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    rest, te = train_test_split(idx, test_size=0.2, stratify=d.target, random_state=SPLIT_SEED)
    tr, va = train_test_split(rest, test_size=0.25, stratify=d.target[rest], random_state=SPLIT_SEED)
    size = check_size(input_size, 8)
    scale = 1.0 / 16
    if size != 8:  # back to 0..255 before resizing so the uint8 storage keeps the precision
        x = resize_uint8((x.float() * (255.0 / 16)).round_().to(torch.uint8), size)
        scale = 1.0 / 255
    sub = subset_indices(len(tr), subset, seed, "digits")
    if sub is not None:
        tr = tr[sub.numpy()]
    tr, va, te = (torch.from_numpy(np.asarray(a)) for a in (tr, va, te))
    mk = lambda i: TensorSplit(x[i], y[i], scale=scale, device=device)  # noqa: E731
    return Data(train=mk(tr), val=mk(va), test=mk(te),
                info=DatasetInfo(name="digits", num_classes=10, in_channels=1, image_size=size, classes=DIGITS))


_IDX_FILES = {  # role -> (file stem, IDX ndim)
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}


def _find_idx(directory: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # LeCun's site spells e.g. train-images.idx3-ubyte
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def idx_files(directory: Path) -> tuple[dict, list[str]]:
    """The four MNIST-layout files in ``directory`` (plain or .gz, either spelling): ({role: path} of those
    found, [stems of those missing])."""
    found = {role: _find_idx(Path(directory), stem) for role, (stem, _) in _IDX_FILES.items()}
    return ({r: p for r, p in found.items() if p is not None},
            [_IDX_FILES[r][0] for r, p in found.items() if p is None])


def idx_folder_problem(directory, name: str = "Fashion-MNIST") -> str | None:
    """What keeps ``directory`` from being read as the folder of ``name``'s four IDX files, in one line
    (``DIR: not a directory (...)``, ``DIR lacks ... (...)``), or None."""
    expected = f"expected the four {name} .gz files"
    if not Path(directory).is_dir():
        return f"{directory}: not a directory ({expected})"
    missing = idx_files(Path(directory))[1]
    return f"{directory} lacks {', '.join(missing)} ({expected})" if missing else None


def load_mnist_like(name: str, root, *, download, subset, seed, device, input_size) -> Data:
    """MNIST / Fashion-MNIST: 60k train -> 50k train + 10k val (seed 42), official 10k test; 28x28 resized
    once to ``input_size`` (default 32, bilinear antialias), kept uint8. Fashion-MNIST train: random hflip."""
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    base = Path(root) if root is not None else Path(DEFAULT_ROOT)
    candidates = [base / folder / "raw", base]
    if name == "fashion-mnist" and root is None:     # a --data-root given is used or refused, never replaced
        candidates.append(Path(DEBIAN_FASHION_MNIST))
    candidates = _dedupe(candidates)

    def search():
        partial = []
        for d in candidates:
            found, missing = idx_files(d)
            if not missing:
                return found, partial
            if found:
                partial.append(f"{d} lacks {', '.join(missing)}")
        return None, partial

    found, partial = search()
    if found is None and download:
        import torchvision

        dl_root = base
        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        try:
            for train in (True, False):
                cls(str(dl_root), train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise DatasetError(f"{name}: download into {dl_root / folder / 'raw'} failed: {e}") from e
        found, partial = search()
    if found is None:
        expected = ", ".join(f"{stem}[.gz]" for stem, _ in _IDX_FILES.values())
        extra = f" ({'; '.join(partial)})" if partial else ""
        raise DatasetError(f"{name}: no IDX files found; looked in {', '.join(map(str, candidates))}{extra}"
                           f"{root_note(root)}; "
                           f"expected {expected}; pass --data-root or --download")

    arrays = {role: read_idx(path, _IDX_FILES[role][1]) for role, path in found.items()}
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if xi.shape[0] != yi.shape[0]:
            raise DatasetError(f"{name}: {found[f'{split}_images']} has {xi.shape[0]} images but "
                               f"{found[f'{split}_labels']} has {yi.shape[0]} labels")
        if xi.shape[0] == 0:
            raise DatasetError(f"{name}: {found[f'{split}_images']} holds no images")
        _check_labels(yi, 10, str(found[f"{split}_labels"]))
    size = check_size(input_size, 32)
    tx = resize_uint8(torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1), size)
    ex = resize_uint8(torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1), size)
    ty = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    ey = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    n_val = tx.shape[0] // 6  # 10000 of the official 60000
    data = _in_memory(name, tx, ty, ex, ey, n_val, num_classes=10,
                      augmentation="hflip" if name == "fashion-mnist" else "none",
                      subset=subset, seed=seed, device=device)
    data.info.root = os.path.abspath(found["train_images"].parent)     # the directory actually read
    return data


def load_cifar(name: str, root, *, download, subset, seed, device, input_size) -> Data:
    """CIFAR-10/100 python batches: 50k train -> 45k train + 5k val (seed 42), official 10k test, uint8
    (N, 3, 32, 32). Train augmentation: :func:`augment_cifar`. CIFAR-100 uses the 100 fine labels."""
    if name == "cifar10":
        folder, train_files, test_files, label_key, ncls = (
            "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10)
    else:
        folder, train_files, test_files, label_key, ncls = ("cifar-100-python", ["train"], ["test"], "fine_labels", 100)
    base = Path(root) if root is not None else Path(DEFAULT_ROOT)
    candidates = _dedupe([base / folder, base])
    wanted = train_files + test_files

    def search():
        for d in candidates:
            if all((d / f).is_file() for f in wanted):
                return d
        return None

    directory = search()
    if directory is None and download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        try:
            cls(str(base), train=True, download=True)
        except Exception as e:  # network errors come in many types
            raise DatasetError(f"{name}: download into {base / folder} failed: {e}") from e
        directory = search()
    if directory is None:
        raise DatasetError(f"{name}: no CIFAR python batches found; looked in {', '.join(map(str, candidates))}"
                           f"{root_note(root)}; "
                           f"expected {folder}/{{{','.join(wanted)}}} (torchvision's layout); "
                           f"pass --data-root or --download")

    def read(files):
        parts = [cifar_arrays(directory / f, label_key) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        _check_labels(y, ncls, str(directory / files[0]))
        if x.shape[0] == 0:
            raise DatasetError(f"{name}: {directory / files[0]} holds no images")
        return torch.from_numpy(x), torch.from_numpy(y)

    tx, ty = read(train_files)
    ex, ey = read(test_files)
    size = check_size(input_size, 32)
    tx, ex = resize_uint8(tx, size), resize_uint8(ex, size)
    data = _in_memory(name, tx, ty, ex, ey, tx.shape[0] // 10, num_classes=ncls, augmentation="cifar",
                      subset=subset, seed=seed, device=device)
    data.info.root = os.path.abspath(directory)                          # the directory actually read
    return data
