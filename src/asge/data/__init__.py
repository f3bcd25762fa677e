"""Datasets, fixed splits, augmentation and device-resident batching.

Every dataset is exposed as a :class:`Data` of three :class:`Split` objects (train / val / test) plus a
:class:`DatasetInfo`. A split yields ``(x, y)`` batches:

* ``x``: float32 ``(B, C, S, S)`` on the requested device. Pixels are scaled to [0, 1] (no mean/std
  normalisation) and then each image is divided by its RMS: ``x / sqrt(mean_{C,H,W}(x^2) + 1e-8)``.
* ``y``: int64 ``(B,)`` on the same device.

Everything random in an epoch (sample order, augmentation parameters) is drawn from
``torch.Generator().manual_seed(seed)``: the same ``seed`` gives bitwise the same batches on the same
device. The train/val split of each dataset uses a fixed seed (42) that does not depend on the run seed;
``subset`` draws its images from the run seed.

Two kinds of split:

* :class:`TensorSplit` (digits, MNIST, Fashion-MNIST, CIFAR-10/100): the whole split is one uint8 tensor
  on the device; a batch is one index operation plus batched augmentation on the device.
* :class:`FolderSplit` (ImageFolder trees, ImageNet): images decoded from files by a ``DataLoader`` with
  ``num_workers`` workers; each sample's random crop/flip comes from its own seed, itself drawn from the
  epoch's generator, so the batches do not depend on the number of workers.

Layouts read (no network access unless ``download=True``):

=================  ==============================================================================
``digits``          scikit-learn's bundled ``load_digits`` (8x8 grey, 10 classes); no files.
``mnist``           IDX files (gzipped or not) in ``<root>/MNIST/raw`` or ``<root>``.
``fashion-mnist``   IDX files in ``<root>/FashionMNIST/raw`` or ``<root>``; without a root, also Debian's
                    ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).
``cifar10``         ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (or ``<root>`` itself).
``cifar100``        ``<root>/cifar-100-python/{train,test}`` (or ``<root>`` itself).
``imagefolder``     ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (``val/`` if no ``test/``).
``imagenet``        ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` (val is the test split).
=================  ==============================================================================

The package, one file per concern: ``splits`` (Data, Split, TensorSplit, the fixed train/val split),
``augment`` (batched on-device augmentation), ``formats`` (IDX and CIFAR batch files), ``in_memory``
(digits, MNIST, Fashion-MNIST, CIFAR), ``folders`` (ImageFolder, ImageNet: FolderSplit).
"""
from __future__ import annotations

import os

import torch

from .augment import AUGMENTATIONS, adjust_hue_batched, augment_cifar
from .folders import IMAGEFOLDER_VAL_FRACTION, IMAGENET_VAL_SIZE, FolderSplit, load_folder
from .formats import read_idx
from .in_memory import DEBIAN_FASHION_MNIST, DEFAULT_ROOT, load_cifar, load_digits, load_mnist_like
from .splits import SPLIT_SEED, Data, DatasetError, DatasetInfo, Split, TensorSplit, rms_normalize

__all__ = [
    "DATASETS",
    "Data",
    "DatasetError",
    "DatasetInfo",
    "FolderSplit",
    "Split",
    "TensorSplit",
    "augment_cifar",
    "adjust_hue_batched",
    "load_data",
    "native_size",
    "read_idx",
    "rms_normalize",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "imagenet")


def native_size(name: str) -> int:
    """The image side S a dataset is read at without ``input_size``: digits 8, imagenet 224, the others 32."""
    return {"digits": 8, "imagenet": 224}.get(str(name).lower().replace("_", "-"), 32)


def load_data(name: str, root: str | None = None, *, download: bool = False, subset: int | None = None,
              seed: int = 0, device="cpu", input_size: int | None = None, num_workers: int = 2,
              augment: str = "auto", test_split: int | None = None, skip_unreadable: bool = False) -> Data:
    """Load a dataset as fixed train/val/test splits.

    name: one of :data:`DATASETS` (case-insensitive, ``_`` accepted for ``-``).
    root: data directory (layouts in the module docstring); None: ``./data`` (and, for Fashion-MNIST,
        Debian's ``/usr/share/datasets/fashion-mnist``). Not used by ``digits``.
    download: fetch MNIST / Fashion-MNIST / CIFAR with torchvision into ``root`` when not found locally.
    subset: keep N random training images (after the val split), drawn from ``seed``.
    seed: the run seed; only ``subset`` uses it (splits use the fixed seed 42).
    device: where the in-memory datasets are stored and where every split yields its batches by default.
    input_size: side S of the images. Defaults: digits 8, MNIST/Fashion-MNIST/CIFAR 32, imagefolder 32,
        imagenet 224. In-memory datasets are resized to S once, at load.
    num_workers: DataLoader workers for imagefolder / imagenet.
    augment: the training split's augmentation: ``auto`` (the dataset's own: CIFAR and small ImageFolder
        trees ``cifar``, Fashion-MNIST ``hflip``, digits and MNIST ``none``, large ImageFolder trees and
        ImageNet RandomResizedCrop + flip), or one of ``none``, ``hflip``, ``crop-flip`` (random crop with
        4 px zero padding + flip), ``cifar`` (crop, flip, ColorJitter 0.4/0.4/0.4/0.1, RandomGrayscale 0.2).
        Trees decoded per batch take ``auto`` or ``none`` only.
    test_split: imagefolder without a test/ folder: hold back N class-balanced images of train/ (seed 42).
    skip_unreadable: imagefolder / imagenet: leave unreadable image files out (listed in ``Data.unreadable``)
        instead of stopping at the first one.

    Split sizes: digits 1077/360/360 (stratified 60/20/20); MNIST and Fashion-MNIST 50000/10000/10000;
    CIFAR 45000/5000/10000; imagefolder 90%/10% of train/ and test/; imagenet train/ minus 10000, 10000, val/.
    """
    key = str(name).lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if augment != "auto" and augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; valid: auto, {', '.join(AUGMENTATIONS)}")
    if test_split is not None and key != "imagefolder":
        raise DatasetError(f"{key}: test_split applies to imagefolder only ({key} has its own test split)")
    if skip_unreadable and key not in ("imagefolder", "imagenet"):
        raise DatasetError(f"{key}: skip_unreadable applies to image folders only (imagefolder, imagenet)")
    data = _load(key, root, download=download, subset=subset, seed=seed, device=torch.device(device),
                 input_size=input_size, num_workers=num_workers, test_split=test_split,
                 skip_unreadable=skip_unreadable)
    if data.info.root is None and root is not None and key in ("imagefolder", "imagenet"):
        data.info.root = os.path.abspath(root)           # the directory actually read (summary.json's data)
    if augment == "auto":
        return data
    if isinstance(data.train, TensorSplit):
        data.train.augmentation = augment
    elif augment == "none":
        data.train.train = False          # the evaluation transform (resize + centre crop) for training too
    else:
        raise DatasetError(f"{key}: augment {augment!r} needs images held in memory; {key} images decoded per "
                           f"batch take augment auto (RandomResizedCrop + flip) or none")
    return data


def _load(key: str, root, *, download, subset, seed, device, input_size, num_workers, test_split,
          skip_unreadable) -> Data:
    if key == "digits":
        return load_digits(subset=subset, seed=seed, device=device, input_size=input_size)
    if key in ("mnist", "fashion-mnist"):
        return load_mnist_like(key, root, download=download, subset=subset, seed=seed, device=device,
                                input_size=input_size)
    if key in ("cifar10", "cifar100"):
        return load_cifar(key, root, download=download, subset=subset, seed=seed, device=device,
                           input_size=input_size)
    return load_folder(key, root, download=download, subset=subset, seed=seed, input_size=input_size,
                       num_workers=num_workers, test_split=test_split, device=device, skip_unreadable=skip_unreadable)
