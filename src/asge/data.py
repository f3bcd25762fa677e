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
``fashion-mnist``   IDX files in ``<root>/FashionMNIST/raw``, ``<root>`` or Debian's
                    ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).
``cifar10``         ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (or ``<root>`` itself).
``cifar100``        ``<root>/cifar-100-python/{train,test}`` (or ``<root>`` itself).
``imagefolder``     ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (``val/`` if no ``test/``).
``imagenet``        ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` (val is the test split).
=================  ==============================================================================
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
    "read_idx",
    "rms_normalize",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "imagenet")

#: Seed of every fixed train/val (and digits train/val/test) split; independent of the run seed.
SPLIT_SEED = 42
#: Debian's ``dataset-fashion-mnist`` package installs the four IDX .gz files here.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
#: Default data root when ``root`` is None (then, for Fashion-MNIST, the Debian path).
DEFAULT_ROOT = "./data"
#: Images held out of ImageNet's train/ for validation (at most; 10% of train for small trees).
IMAGENET_VAL_SIZE = 10000
#: Fraction of an ImageFolder train/ tree held out for validation.
IMAGEFOLDER_VAL_FRACTION = 0.1

_RMS_EPS = 1e-8
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """Missing or malformed dataset files. The message names the path(s) looked at and the layout expected."""


@dataclass
class DatasetInfo:
    """What the model needs to know about a dataset.

    ``image_size`` is the side S of the square (C, S, S) images the splits yield. ``classes`` holds the
    class names when the dataset has them (ImageFolder/ImageNet folder names), else is empty.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    classes: tuple[str, ...] = ()


def rms_normalize(x: torch.Tensor, eps: float = _RMS_EPS) -> torch.Tensor:
    """Divide each image by its RMS over (C, H, W). x: (B, C, H, W) float -> same shape (in place)."""
    return x.div_(x.square().mean(dim=(1, 2, 3), keepdim=True).add_(eps).sqrt_())


# ----------------------------------------------------------------------------------------------------
# Batched augmentation (on the device)
# ----------------------------------------------------------------------------------------------------

def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images. x: (B, 3, H, W) -> (B, 1, H, W)."""
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_hue_batched(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by its own factor, as torchvision's ``adjust_hue`` does per image.

    x: (B, 3, H, W) float in [0, 1]; hue: (B,) in [-0.5, 0.5] (fraction of the colour wheel).
    Returns (B, 3, H, W). RGB -> HSV -> shift H -> RGB, written so that S never needs to be formed:
    with chroma = max - min, ``rgb = max - chroma * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` and n = 5, 3, 1 for R, G, B.
    """
    minc, maxc = torch.aminmax(x, dim=1)  # (B, H, W)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / safe.unsqueeze(1)).unbind(1)
    r, g, _ = x.unbind(1)
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.remainder(h * (1.0 / 6.0) + hue.view(-1, 1, 1), 1.0)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * w


def _crop_flip(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop (zero padding ``pad``) then horizontal flip, one gather for the whole batch.

    x: (B, C, H, W) any dtype; oy, ox: (B,) int64 offsets in [0, 2*pad]; flip: (B,) bool -> (B, C, H, W).
    """
    b, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = oy.unsqueeze(1) + ar_h  # (B, H)
    cols = ox.unsqueeze(1) + torch.where(flip.unsqueeze(1), (w - 1) - ar_w, ar_w)  # (B, W)
    idx = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, idx).view(b, c, h, w)


def augment_cifar(x: torch.Tensor, g: torch.Generator, scale: float = 1.0 / 255, pad: int = 4,
                  jitter: float = 0.4, hue: float = 0.1, p_gray: float = 0.2) -> torch.Tensor:
    """The CIFAR recipe on a whole batch, with per-image random parameters drawn from ``g`` (a CPU generator).

    x: (B, 3, H, W) uint8 (or float) on any device -> float32 (B, 3, H, W) in [0, 1] on the same device.
    Order: RandomCrop(H, padding=pad) -> RandomHorizontalFlip -> ColorJitter(jitter, jitter, jitter, hue)
    -> RandomGrayscale(p_gray). The jitter order is fixed (brightness, contrast, saturation, hue), where
    torchvision draws a random order per image; factors are uniform in [1 - jitter, 1 + jitter], hue
    shift uniform in [-hue, hue]. All parameters come from one ``torch.rand(B, 8, generator=g)``.
    """
    b = x.shape[0]
    u = torch.rand(b, 8, generator=g).to(x.device, non_blocking=True)
    n_off = 2 * pad + 1
    oy = (u[:, 0] * n_off).long().clamp_(max=n_off - 1)
    ox = (u[:, 1] * n_off).long().clamp_(max=n_off - 1)
    flip = u[:, 2] < 0.5
    fb, fc, fs = (1.0 - jitter + 2.0 * jitter * u[:, 3:6]).unbind(1)
    fh = (2.0 * u[:, 6] - 1.0) * hue
    gray = u[:, 7] < p_gray

    x = _crop_flip(x, oy, ox, flip, pad).float().mul_(scale)
    v = lambda t: t.view(b, 1, 1, 1)  # noqa: E731
    x = x.mul_(v(fb)).clamp_(0.0, 1.0)  # brightness: blend with black
    m = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = x.mul_(v(fc)).add_(m * v(1.0 - fc)).clamp_(0.0, 1.0)  # contrast: blend with mean luma
    x = x.mul_(v(fs)).add_(_gray(x) * v(1.0 - fs)).clamp_(0.0, 1.0)  # saturation: blend with luma
    x = adjust_hue_batched(x, fh)
    return torch.where(v(gray), _gray(x).expand_as(x), x)


def _hflip_random(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2. x: (B, C, H, W) -> same."""
    flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device, non_blocking=True)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


_AUGMENTATIONS = ("none", "hflip", "cifar")


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------

class Split:
    """One split of a dataset: a length and a batch iterator (see the module docstring)."""

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} must define __len__")

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool, seed: int, device: torch.device | str,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)``: x float32 (B, C, S, S), per-image RMS 1; y int64 (B,); both on ``device``.

        ``augment`` has an effect only on splits built with an augmentation (train splits); val/test
        splits ignore it. Same ``seed`` -> bitwise the same batches.
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
    labels: (N,) integer. ``augmentation``: ``"none"``, ``"hflip"`` (random horizontal flip) or
    ``"cifar"`` (:func:`augment_cifar`). Both tensors are moved to ``device`` once, at construction.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, augmentation: str = "none",
                 scale: float | None = None, device: torch.device | str = "cpu"):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},), got shape {tuple(labels.shape)}")
        if augmentation not in _AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {_AUGMENTATIONS}, got {augmentation!r}")
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
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
            if order is None:
                xb, yb = images[lo:hi], labels[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = images[idx], labels[idx]
            if aug == "cifar":
                x = augment_cifar(xb, g, scale=self.scale)
            else:
                if aug == "hflip":
                    xb = _hflip_random(xb, g)
                x = xb.to(torch.float32, copy=True)  # never a view of the stored split
                if self.scale != 1.0:
                    x.mul_(self.scale)
            yield rms_normalize(x), yb


class _FolderDataset(torch.utils.data.Dataset):
    """Decodes one image file per key ``(index, sample_seed)`` into uint8 (3, S, S)."""

    def __init__(self, samples: Sequence[tuple[str, int]], size: int, train: bool):
        self.samples, self.size, self.train = samples, size, train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        import torchvision.transforms.v2.functional as TF
        from PIL import Image

        index, sample_seed = key
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
            raise DatasetError(f"cannot read image {path}: {e}") from e
        s = self.size
        if self.train:  # RandomResizedCrop(s, scale=(0.08, 1), ratio=(3/4, 4/3)) + RandomHorizontalFlip
            rng = random.Random(sample_seed)
            top, left, h, w = _random_resized_crop_params(img.height, img.width, rng)
            img = TF.resized_crop(img, top, left, h, w, [s, s], antialias=True)
            if rng.random() < 0.5:
                img = TF.horizontal_flip(img)
        else:  # Resize(round(s * 8 / 7)) + CenterCrop(s)
            img = TF.center_crop(TF.resize(img, [round(s * 8 / 7)], antialias=True), [s, s])
        return TF.pil_to_tensor(img), label


def _random_resized_crop_params(height: int, width: int, rng: random.Random,
                                scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from ``rng``. Returns (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class FolderSplit(Split):
    """A split of image files decoded by a ``DataLoader``.

    samples: list of ``(path, class_index)``; ``image_size`` S. With ``augment`` (train splits only):
    RandomResizedCrop(S) + RandomHorizontalFlip; otherwise Resize(round(S * 8 / 7)) + CenterCrop(S).
    Images are converted to RGB, uint8 in the workers, then on ``device`` to float [0, 1] and per-image RMS.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], image_size: int, *, train: bool = False,
                 num_workers: int = 2):
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.train = train
        self.num_workers = int(num_workers)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"FolderSplit(n={len(self)}, image_size={self.image_size}, train={self.train})"

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool, seed: int, device: torch.device | str,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """See :meth:`Split.batches`. x: float32 (B, 3, S, S); y: int64 (B,)."""
        self.num_batches(batch_size, drop_last)  # validates batch_size
        device = torch.device(device)
        g = torch.Generator().manual_seed(int(seed))
        n = len(self)
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        train = augment and self.train
        seeds = torch.randint(0, 2**62, (n,), generator=g) if train else torch.zeros(n, dtype=torch.int64)
        keys = list(zip(order.tolist(), seeds.tolist()))
        loader = torch.utils.data.DataLoader(
            _FolderDataset(self.samples, self.image_size, train), batch_size=batch_size, sampler=keys,
            num_workers=self.num_workers, drop_last=drop_last, pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(int(seed)))
        for xb, yb in loader:
            x = xb.to(device, non_blocking=True).to(torch.float32).mul_(1.0 / 255)
            yield rms_normalize(x), yb.to(device=device, dtype=torch.int64, non_blocking=True)


@dataclass
class Data:
    """The three splits of a dataset and its :class:`DatasetInfo`."""

    train: Split
    val: Split
    test: Split
    info: DatasetInfo


# ----------------------------------------------------------------------------------------------------
# File formats
# ----------------------------------------------------------------------------------------------------

def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({e})") from e
    return raw


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) of unsigned bytes into a uint8 array of its stored shape.

    Format: magic ``00 00 08 <ndim>``, ``ndim`` big-endian int32 sizes, then the data. Raises
    :class:`DatasetError` on a wrong magic, a dimension count other than ``ndim`` or a size mismatch.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex() or 'empty'}, "
                           f"expected 000008xx)")
    nd = data[3]
    if ndim is not None and nd != ndim:
        raise DatasetError(f"{path}: IDX file has {nd} dimensions, expected {ndim}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=nd, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise DatasetError(f"{path}: IDX size mismatch: header says {shape} ({expected} bytes), "
                           f"file has {len(data)} bytes (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric  # numpy >= 2
    allowed = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    import codecs
    allowed[("_codecs", "encode")] = codecs.encode  # how protocol-2 pickles spell bytes
    return allowed


try:
    _PICKLE_GLOBALS = _numpy_pickle_globals()
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _ma, numeric as _nm
    import codecs as _codecs
    _PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _ma._reconstruct,
                       ("numpy.core.numeric", "_frombuffer"): _nm._frombuffer,
                       ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                       ("_codecs", "encode"): _codecs.encode}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, dicts, lists, strings and numbers."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch file") from None


def _load_cifar_pickle(path: Path) -> dict:
    # The CIFAR "python version" files are, by the dataset authors' design, Python-2 pickles of a dict of
    # numpy arrays and lists (these are the standard dataset files, not checkpoints). They are read as
    # pickle.load(f, encoding="latin1") would, through an unpickler that accepts numpy arrays only.
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"{path}: not a CIFAR python batch file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_cifar_pickle(path)
    if "data" not in d or label_key not in d:
        raise DatasetError(f"{path}: CIFAR batch lacks key 'data' or {label_key!r} (has {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------

def _dedupe(paths: Sequence[Path]) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _resize_uint8(x: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 images. x: (N, C, H, W) -> uint8 (N, C, size, size)."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        y = F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _fixed_split(n: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx) of a random split with the fixed seed 42, as ``random_split(.., [n - n_val, n_val])``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return perm[:n - n_val], perm[n - n_val:]


def _subset_indices(n: int, subset: int | None, seed: int, name: str) -> torch.Tensor | None:
    """Indices of ``subset`` random training images drawn from the run ``seed`` (None: all)."""
    if subset is None:
        return None
    if subset <= 0:
        raise ValueError(f"subset must be a positive number of training images, got {subset}")
    if subset > n:
        raise ValueError(f"{name}: subset={subset} is larger than the training split ({n} images)")
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:subset]


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{where}: labels must be in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}")


def _check_size(input_size: int | None, default: int) -> int:
    size = default if input_size is None else int(input_size)
    if size <= 0:
        raise ValueError(f"input_size must be positive, got {input_size}")
    return size


# ----------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------

def _in_memory(name: str, train_x, train_y, test_x, test_y, n_val: int, *, num_classes: int, augmentation: str,
               subset, seed, device, scale: float | None = None) -> Data:
    """Fixed train/val split of (N, C, S, S) tensors, optional subset, all three splits on ``device``."""
    tr, va = _fixed_split(train_x.shape[0], n_val)
    sub = _subset_indices(len(tr), subset, seed, name)
    if sub is not None:
        tr = tr[sub]
    c, s = train_x.shape[1], train_x.shape[-1]
    mk = lambda x, y, aug: TensorSplit(x, y, augmentation=aug, scale=scale, device=device)  # noqa: E731
    return Data(train=mk(train_x[tr], train_y[tr], augmentation), val=mk(train_x[va], train_y[va], "none"),
                test=mk(test_x, test_y, "none"),
                info=DatasetInfo(name=name, num_classes=num_classes, in_channels=c, image_size=s))


def _load_digits(*, subset, seed, device, input_size) -> Data:
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
    size = _check_size(input_size, 8)
    scale = 1.0 / 16
    if size != 8:  # back to 0..255 before resizing so the uint8 storage keeps the precision
        x = _resize_uint8((x.float() * (255.0 / 16)).round_().to(torch.uint8), size)
        scale = 1.0 / 255
    sub = _subset_indices(len(tr), subset, seed, "digits")
    if sub is not None:
        tr = tr[sub.numpy()]
    tr, va, te = (torch.from_numpy(np.asarray(a)) for a in (tr, va, te))
    mk = lambda i: TensorSplit(x[i], y[i], scale=scale, device=device)  # noqa: E731
    return Data(train=mk(tr), val=mk(va), test=mk(te),
                info=DatasetInfo(name="digits", num_classes=10, in_channels=1, image_size=size))


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


def _load_mnist_like(name: str, root, *, download, subset, seed, device, input_size) -> Data:
    """MNIST / Fashion-MNIST: 60k train -> 50k train + 10k val (seed 42), official 10k test; 28x28 resized
    once to ``input_size`` (default 32, bilinear antialias), kept uint8. Fashion-MNIST train: random hflip."""
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    base = Path(root) if root is not None else Path(DEFAULT_ROOT)
    candidates = [base / folder / "raw", base]
    if name == "fashion-mnist":
        candidates.append(Path(DEBIAN_FASHION_MNIST))
    candidates = _dedupe(candidates)

    def search():
        partial = []
        for d in candidates:
            found = {role: _find_idx(d, stem) for role, (stem, _) in _IDX_FILES.items()}
            if all(found.values()):
                return found, partial
            if any(found.values()):
                missing = [_IDX_FILES[r][0] for r, p in found.items() if p is None]
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
        raise DatasetError(f"{name}: no IDX files found; looked in {', '.join(map(str, candidates))}{extra}; "
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
    size = _check_size(input_size, 32)
    tx = _resize_uint8(torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1), size)
    ex = _resize_uint8(torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1), size)
    ty = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    ey = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    n_val = tx.shape[0] // 6  # 10000 of the official 60000
    return _in_memory(name, tx, ty, ex, ey, n_val, num_classes=10,
                      augmentation="hflip" if name == "fashion-mnist" else "none",
                      subset=subset, seed=seed, device=device)


def _load_cifar(name: str, root, *, download, subset, seed, device, input_size) -> Data:
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
        raise DatasetError(f"{name}: no CIFAR python batches found; looked in {', '.join(map(str, candidates))}; "
                           f"expected {folder}/{{{','.join(wanted)}}} (torchvision's layout); "
                           f"pass --data-root or --download")

    def read(files):
        parts = [_cifar_arrays(directory / f, label_key) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        _check_labels(y, ncls, str(directory / files[0]))
        if x.shape[0] == 0:
            raise DatasetError(f"{name}: {directory / files[0]} holds no images")
        return torch.from_numpy(x), torch.from_numpy(y)

    tx, ty = read(train_files)
    ex, ey = read(test_files)
    size = _check_size(input_size, 32)
    tx, ex = _resize_uint8(tx, size), _resize_uint8(ex, size)
    return _in_memory(name, tx, ty, ex, ey, tx.shape[0] // 10, num_classes=ncls, augmentation="cifar",
                      subset=subset, seed=seed, device=device)


def _scan_folder(split_dir: Path, classes: Sequence[str] | None, name: str, layout: str
                 ) -> tuple[list[tuple[str, int]], list[str]]:
    """ImageFolder scan: sorted class folders, image files under each (recursively, sorted).

    ``classes`` given: ``split_dir``'s class folders must be among them (their indices are reused).
    Returns (samples, class names). Raises :class:`DatasetError` on no class folders or empty ones.
    """
    dirs = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not dirs:
        raise DatasetError(f"{name}: no class folders in {split_dir}; expected {layout}")
    if classes is None:
        classes = dirs
    else:
        unknown = [d for d in dirs if d not in classes]
        if unknown:
            raise DatasetError(f"{name}: {split_dir} has class folders not in train/: {', '.join(unknown[:10])}")
    index = {c: i for i, c in enumerate(classes)}
    samples, empty = [], []
    for c in dirs:
        files = []
        for dirpath, _, filenames in sorted(os.walk(split_dir / c, followlinks=True)):
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(_IMG_EXTENSIONS))
        if not files:
            empty.append(str(split_dir / c))
        samples.extend((f, index[c]) for f in files)
    if empty:
        raise DatasetError(f"{name}: empty class folder(s) (no {'/'.join(_IMG_EXTENSIONS)} files): "
                           f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}; expected {layout}")
    return samples, list(classes)


def _load_folder(name: str, root, *, download, subset, seed, input_size, num_workers) -> Data:
    """ImageFolder trees. ``imagefolder``: train/ and test/ (or val/), val = 10% of train (seed 42),
    default input_size 32. ``imagenet``: train/ and val/ (the test split), val = min(10000, 10% of train)
    held out of train (seed 42), default input_size 224."""
    test_names = ("test", "val") if name == "imagefolder" else ("val",)
    layout = (f"<root>/train/<class>/*.jpg and <root>/{'test' if name == 'imagefolder' else 'val'}/<class>/*.jpg"
              f" (ImageFolder layout)")
    if download:
        raise DatasetError(f"{name}: cannot be downloaded; prepare {layout} and pass --data-root")
    if root is None:
        raise DatasetError(f"{name}: needs --data-root; expected {layout}")
    root = Path(root)
    train_dir = root / "train"
    test_dirs = [root / t for t in test_names]
    test_dir = next((d for d in test_dirs if d.is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        looked = [str(train_dir)] + [str(d) for d in test_dirs]
        raise DatasetError(f"{name}: missing folder(s); looked for {', '.join(looked)}; expected {layout}")
    train_samples, classes = _scan_folder(train_dir, None, name, layout)
    test_samples, _ = _scan_folder(test_dir, classes, name, layout)
    n = len(train_samples)
    if name == "imagefolder":
        n_val = max(1, round(n * IMAGEFOLDER_VAL_FRACTION)) if n > 1 else 0
    else:
        n_val = min(IMAGENET_VAL_SIZE, max(1, n // 10)) if n > 1 else 0
    tr, va = _fixed_split(n, n_val)
    sub = _subset_indices(len(tr), subset, seed, name)
    if sub is not None:
        tr = tr[sub]
    size = _check_size(input_size, 32 if name == "imagefolder" else 224)
    pick = lambda idx: [train_samples[i] for i in idx.tolist()]  # noqa: E731
    return Data(train=FolderSplit(pick(tr), size, train=True, num_workers=num_workers),
                val=FolderSplit(pick(va), size, num_workers=num_workers),
                test=FolderSplit(test_samples, size, num_workers=num_workers),
                info=DatasetInfo(name=name, num_classes=len(classes), in_channels=3, image_size=size,
                                 classes=tuple(classes)))


def load_data(name: str, root: str | None = None, *, download: bool = False, subset: int | None = None,
              seed: int = 0, device="cpu", input_size: int | None = None, num_workers: int = 2) -> Data:
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

    Split sizes: digits 1077/360/360 (stratified 60/20/20); MNIST and Fashion-MNIST 50000/10000/10000;
    CIFAR 45000/5000/10000; imagefolder 90%/10% of train/ and test/; imagenet train/ minus 10000, 10000, val/.
    """
    key = str(name).lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    device = torch.device(device)
    if key == "digits":
        return _load_digits(subset=subset, seed=seed, device=device, input_size=input_size)
    if key in ("mnist", "fashion-mnist"):
        return _load_mnist_like(key, root, download=download, subset=subset, seed=seed, device=device,
                                input_size=input_size)
    if key in ("cifar10", "cifar100"):
        return _load_cifar(key, root, download=download, subset=subset, seed=seed, device=device,
                           input_size=input_size)
    return _load_folder(key, root, download=download, subset=subset, seed=seed, input_size=input_size,
                        num_workers=num_workers)
