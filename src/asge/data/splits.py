"""What every dataset is made of: :class:`Data` = three :class:`Split` objects + a :class:`DatasetInfo`.

A split yields ``(x, y)`` batches: x float32 ``(B, C, S, S)``, each image divided by its RMS; y int64 ``(B,)``.
:class:`TensorSplit` holds a whole split as one tensor on the device (the in-memory datasets); the
folder datasets use :class:`~asge.data.folders.FolderSplit`. The fixed train/val split and the ``subset``
draw live here too, shared by both kinds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

from .augment import AUGMENTATIONS, augment_cifar, crop_flip_random, hflip_random, skip_draws

#: Seed of every fixed train/val (and digits train/val/test) split; independent of the run seed.
SPLIT_SEED = 42

_RMS_EPS = 1e-8


class DatasetError(ValueError):
    """Missing or malformed dataset files. The message names the path(s) looked at and the layout expected."""


@dataclass
class DatasetInfo:
    """What the model needs to know about a dataset.

    ``image_size`` is the side S of the square (C, S, S) images the splits yield. ``classes`` holds the
    class names, index -> name (:mod:`asge.data.classes`; ImageFolder/ImageNet: the folder names).
    ``root`` is the directory the files were actually read from (None: no files, digits).
    ``resize`` is how the test split brought an image file to S x S (:data:`asge.data.preprocess.RESIZES`):
    ``stretch`` (the whole image resized, the in-memory datasets) or ``center-crop`` (trees decoded per batch);
    ``asge predict`` and exported models repeat it.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    classes: tuple[str, ...] = ()
    root: Optional[str] = field(default=None, compare=False)    # where, not what: not compared
    resize: str = "stretch"

    def to_dict(self) -> dict:
        """Plain data (JSON, checkpoints): what a run records of its dataset."""
        return {"name": self.name, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "image_size": self.image_size, "classes": list(self.classes), "root": self.root,
                "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetInfo":
        """The inverse of :meth:`to_dict`. Runs recorded before ``resize`` was: the folder datasets said
        ``center-crop``, the others ``stretch``."""
        root = d.get("root")
        resize = d.get("resize") or ("center-crop" if d["name"] in ("imagefolder", "imagenet") else "stretch")
        return cls(str(d["name"]), int(d["num_classes"]), int(d["in_channels"]), int(d["image_size"]),
                   tuple(d.get("classes") or ()), None if root is None else str(root), str(resize))


def rms_normalize(x: torch.Tensor, eps: float = _RMS_EPS) -> torch.Tensor:
    """Divide each image by its RMS over (C, H, W). x: (B, C, H, W) float -> same shape (in place)."""
    return x.div_(x.square().mean(dim=(1, 2, 3), keepdim=True).add_(eps).sqrt_())


class Split:
    """One split of a dataset: a length and a batch iterator (see the module docstring)."""

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} must define __len__")

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool, seed: int, device: torch.device | str,
                drop_last: bool = False, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)``: x float32 (B, C, S, S), per-image RMS 1; y int64 (B,); both on ``device``.

        ``augment`` has an effect only on splits built with an augmentation (train splits); val/test
        splits ignore it. Same ``seed`` -> bitwise the same batches. ``start``: begin at batch ``start``
        of that sequence, bitwise as if the first ``start`` batches had been taken (resuming mid-epoch).
        """
        raise TypeError(f"{type(self).__name__} must define batches")

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Number of batches ``batches`` yields for this batch size."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


class TensorSplit(Split):
    """A split held as one tensor on the device.

    images: (N, C, S, S) uint8 (pixel = value * ``scale``, e.g. 1/255) or float in [0, 1] (then scale 1);
    labels: (N,) integer. ``augmentation``: ``"none"``, ``"hflip"`` (random horizontal flip),
    ``"crop-flip"`` (:func:`~asge.data.augment.crop_flip_random`) or ``"cifar"`` (:func:`augment_cifar`).
    Both tensors are moved to ``device`` once, at construction.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, augmentation: str = "none",
                 scale: float | None = None, device: torch.device | str = "cpu"):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},), got shape {tuple(labels.shape)}")
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
        if scale is None:
            scale = 1.0 / 255 if images.dtype == torch.uint8 else 1.0
        device = torch.device(device)
        self.images = images.to(device).contiguous()
        self.labels = labels.to(device=device, dtype=torch.int64)
        self.augmentation = augmentation
        self.scale = float(scale)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (f"TensorSplit(n={len(self)}, shape={tuple(self.images.shape[1:])}, dtype={self.images.dtype}, "
                f"augmentation={self.augmentation!r}, device={self.images.device})")

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool, seed: int, device: torch.device | str,
                drop_last: bool = False, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """See :meth:`Split.batches`. x: float32 (B, C, S, S); y: int64 (B,)."""
        n_batches = self.num_batches(batch_size, drop_last)
        device = torch.device(device)
        images, labels = self.images, self.labels
        if images.device != device:  # the split lives elsewhere: move once per epoch
            images, labels = images.to(device), labels.to(device)
        g = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(len(self), generator=g).to(device) if shuffle else None
        aug = self.augmentation if augment else "none"
        for i in range(n_batches):
            lo, hi = i * batch_size, min((i + 1) * batch_size, len(self))
            if i < start:
                skip_draws(aug, hi - lo, g)
                continue
            if order is None:
                xb, yb = images[lo:hi], labels[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = images[idx], labels[idx]
            if aug == "cifar":
                x = augment_cifar(xb, g, scale=self.scale)
            elif aug == "crop-flip":
                x = crop_flip_random(xb, g, scale=self.scale)
            else:
                if aug == "hflip":
                    xb = hflip_random(xb, g)
                x = xb.to(torch.float32, copy=True)  # never a view of the stored split
                if self.scale != 1.0:
                    x.mul_(self.scale)
            yield rms_normalize(x), yb


@dataclass
class Data:
    """The three splits of a dataset and its :class:`DatasetInfo`.

    Folder datasets also say how they were read: ``reading`` (one line for the user: which path, how many
    images were already S x S), ``listings`` (per split, the sha256 of its sorted (relative path, bytes)
    list: two different trees cannot be told apart by their counts) and ``unreadable`` (files left out by
    ``skip_unreadable``).
    """

    train: Split
    val: Split
    test: Split
    info: DatasetInfo
    reading: Optional[str] = None
    listings: Optional[dict] = None
    unreadable: list = field(default_factory=list)


def fixed_split(n: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx) of a random split with the fixed seed 42, as ``random_split(.., [n - n_val, n_val])``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return perm[:n - n_val], perm[n - n_val:]


def subset_indices(n: int, subset: int | None, seed: int, name: str) -> torch.Tensor | None:
    """Indices of ``subset`` random training images drawn from the run ``seed`` (None: all)."""
    if subset is None:
        return None
    if subset <= 0:
        raise ValueError(f"subset must be a positive number of training images, got {subset}")
    if subset > n:
        raise ValueError(f"{name}: subset={subset} is larger than the training split ({n} images)")
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:subset]


def check_size(input_size: int | None, default: int) -> int:
    size = default if input_size is None else int(input_size)
    if size <= 0:
        raise ValueError(f"input_size must be positive, got {input_size}")
    return size
