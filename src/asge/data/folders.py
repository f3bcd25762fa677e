"""The folder datasets: ImageFolder trees and ImageNet, decoded from image files by a ``DataLoader``.

Each sample's random crop/flip comes from its own seed, drawn from the epoch's generator, so the batches do
not depend on the number of workers. Layouts are listed in :mod:`asge.data`.
"""
from __future__ import annotations

import math
import os
import random
import signal
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .splits import (SPLIT_SEED, Data, DatasetError, DatasetInfo, Split, TensorSplit, check_size, fixed_split,
                     rms_normalize, subset_indices)

#: Images held out of ImageNet's train/ for validation (at most; 10% of train for small trees).
IMAGENET_VAL_SIZE = 10000
#: Fraction of an ImageFolder train/ tree held out for validation.
IMAGEFOLDER_VAL_FRACTION = 0.1

#: The per-batch trees' training augmentation: RandomResizedCrop(S, scale 0.08-1, ratio 3/4-4/3) + flip.
RANDOM_RESIZED_CROP = "random-resized-crop-flip"

#: File extensions read as images (folder datasets, ``asge predict``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class _FolderDataset(torch.utils.data.Dataset):
    """Decodes one image file per key ``(index, sample_seed)`` into uint8 (3, S, S), or returns why it could
    not (a string naming the file): an exception raised in a DataLoader worker reaches the main process
    wrapped in the worker's traceback, a returned message reaches it as it is."""

    def __init__(self, samples: Sequence[tuple[str, int]], size: int, train: bool):
        self.samples, self.size, self.train = samples, size, train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int] | str:
        import torchvision.transforms.v2.functional as TF
        from PIL import Image

        index, sample_seed = key
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except Exception as e:  # truncated, corrupt, not an image: PIL raises OSError, SyntaxError, ValueError...
            # raised as a DatasetError in the main process
            return f"cannot read image {path}: {e} (--skip-unreadable leaves such files out)"
        s = self.size
        if self.train:  # RandomResizedCrop(s, scale=(0.08, 1), ratio=(3/4, 4/3)) + RandomHorizontalFlip
            rng = random.Random(sample_seed)
            top, left, h, w = _random_resized_crop_params(img.height, img.width, rng)
            img = TF.resized_crop(img, top, left, h, w, [s, s], antialias=True)
            if rng.random() < 0.5:
                img = TF.horizontal_flip(img)
        else:
            img = resize_center_crop(img, s)
        return TF.pil_to_tensor(img), label


def resize_center_crop(img, size: int):
    """The evaluation transform of the folder datasets (also ``asge predict``'s): Resize(round(S * 8 / 7)) of
    the shorter side, then CenterCrop(S). PIL image -> PIL image S x S."""
    import torchvision.transforms.v2.functional as TF
    return TF.center_crop(TF.resize(img, [round(size * 8 / 7)], antialias=True), [size, size])


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

    @property
    def augmentation(self) -> str:
        """The training augmentation this split applies: RandomResizedCrop + flip, or none."""
        return RANDOM_RESIZED_CROP if self.train else "none"

    def __repr__(self) -> str:
        return f"FolderSplit(n={len(self)}, image_size={self.image_size}, train={self.train})"

    def batches(self, batch_size: int, *, shuffle: bool, augment: bool, seed: int, device: torch.device | str,
                drop_last: bool = False, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """See :meth:`Split.batches`. x: float32 (B, 3, S, S); y: int64 (B,). An unreadable image or a failing
        worker raises :class:`DatasetError` (one line naming the file or the failure)."""
        self.num_batches(batch_size, drop_last)  # validates batch_size
        device = torch.device(device)
        g = torch.Generator().manual_seed(int(seed))
        n = len(self)
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        train = augment and self.train
        seeds = torch.randint(0, 2**62, (n,), generator=g) if train else torch.zeros(n, dtype=torch.int64)
        keys = list(zip(order.tolist(), seeds.tolist()))[start * batch_size:]
        loader = torch.utils.data.DataLoader(
            _FolderDataset(self.samples, self.image_size, train), batch_size=batch_size, sampler=keys,
            num_workers=self.num_workers, drop_last=drop_last, pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(int(seed)), collate_fn=_collate,
            worker_init_fn=_worker_init)
        for xb, yb in _loader_batches(loader):
            x = xb.to(device, non_blocking=True).to(torch.float32).mul_(1.0 / 255)
            yield rms_normalize(x), yb.to(device=device, dtype=torch.int64, non_blocking=True)


def _collate(samples: list) -> tuple[torch.Tensor, torch.Tensor] | str:
    """A batch, or the first sample's reason for being unreadable."""
    bad = next((s for s in samples if isinstance(s, str)), None)
    return bad if bad is not None else torch.utils.data.default_collate(samples)


def _worker_init(worker_id: int) -> None:
    """The main process decides when the workers stop: a Ctrl-C or SIGTERM to the process group must not end
    them under a run that is finishing its step and writing its checkpoint (the run's stop signals,
    :mod:`asge.runs.preempt`, which sits above the data and is not imported here)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def _loader_batches(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches; an unreadable file or a failing worker becomes one :class:`DatasetError` line."""
    batches = iter(loader)
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # raised in a worker ("Caught X in DataLoader worker process N. ...") or a dead one
                lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
                what = lines[-1] if lines and lines[0].startswith("Caught ") else (lines[0] if lines else repr(e))
                raise DatasetError(f"loading images failed: {what}") from None
            if isinstance(batch, str):
                raise DatasetError(batch)
            yield batch
    finally:                            # workers ignore SIGTERM: stop them here, whatever ends the epoch
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


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
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            empty.append(str(split_dir / c))
        samples.extend((f, index[c]) for f in files)
    if empty:
        raise DatasetError(f"{name}: empty class folder(s) (no {'/'.join(IMAGE_EXTENSIONS)} files): "
                           f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}; expected {layout}")
    return samples, list(classes)


def _header_sizes(paths: Sequence[str]) -> list[tuple[int, int] | str]:
    """Each image's (width, height) read from its header (cheap: no pixel is decoded), or why it cannot be."""
    from PIL import Image
    out: list[tuple[int, int] | str] = []
    for path in paths:
        try:
            with Image.open(path) as im:
                out.append(im.size)
        except Exception as e:  # not an image, truncated header, unreadable file
            out.append(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return out


def _decode_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded whole (a truncated JPEG passes the header read), or None."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.convert("RGB")
        return None
    except Exception as e:
        return f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def _unreadable(paths: Sequence[str], sizes: Sequence[tuple[int, int] | str], decode: bool,
                workers: int) -> list[str]:
    """Why each unreadable file of ``paths`` is (one line each): its header, and with ``decode`` its pixels
    (decoded in ``workers`` threads; PIL releases the GIL while decoding)."""
    bad = [s for s in sizes if isinstance(s, str)]
    if decode:
        from concurrent.futures import ThreadPoolExecutor
        ok = [p for p, s in zip(paths, sizes) if not isinstance(s, str)]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            bad += [r for r in pool.map(_decode_problem, ok, chunksize=256) if r is not None]
    return bad


def listing_sha256(samples: Sequence[tuple[str, int]], root: Path) -> str:
    """sha256 of a split's sorted ``relative path<TAB>bytes`` lines: what tells two trees apart cheaply."""
    import hashlib
    lines = sorted(f"{os.path.relpath(path, root)}\t{os.path.getsize(path)}\n" for path, _ in samples)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _decode_all(samples: Sequence[tuple[str, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``samples`` as uint8 (N, 3, size, size) RGB (an image of another size is resized, with
    antialiasing) and its labels (N,). An unreadable file raises :class:`DatasetError` naming it."""
    import numpy as np
    from PIL import Image

    from .in_memory import resize_uint8
    images = torch.empty(len(samples), 3, size, size, dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DatasetError(f"cannot read image {path}: {e} (--skip-unreadable leaves such files out)") from None
        img = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        images[i] = img if img.shape[-2:] == (size, size) else resize_uint8(img[None], size)[0]
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def held_out_test(labels: Sequence[int], n_test: int, name: str) -> tuple[list[int], list[int]]:
    """(kept, test) indices: a class-balanced (stratified) test split of ``n_test`` of ``labels``, drawn with the
    fixed split seed, so every run and method holds back the same images."""
    from sklearn.model_selection import train_test_split
    n = len(labels)
    if not 0 < n_test < n:
        raise DatasetError(f"{name}: test_split={n_test} must be between 1 and {n - 1} (train/ holds {n} images)")
    try:
        kept, test = train_test_split(list(range(n)), test_size=n_test, stratify=list(labels),
                                      random_state=SPLIT_SEED)
    except ValueError as e:  # too few images of a class to stratify
        raise DatasetError(f"{name}: cannot hold back a class-balanced test split of {n_test}: {e}") from None
    return sorted(kept), sorted(test)


def load_folder(name: str, root, *, download, subset, seed, input_size, num_workers, test_split=None,
                device="cpu", skip_unreadable: bool = False) -> Data:
    """ImageFolder trees. ``imagefolder``: train/ and test/ (or val/), val = 10% of train (seed 42),
    default input_size 32; without test/ (or val/), ``test_split`` N holds back a class-balanced test split
    of N images of train/ (seed 42) first. ``imagenet``: train/ and val/ (the test split), val = min(10000,
    10% of train) held out of train (seed 42), default input_size 224.

    How the tree is read is decided from every image's size (read from the headers): when most images are
    already S x S (e.g. a JPEG copy of CIFAR-10) the tree is decoded once and held in memory on ``device``
    (:class:`TensorSplit`, the CIFAR augmentation; an image of another size is resized whole to S x S, for
    training and test alike); otherwise it is decoded per batch (:class:`FolderSplit`: RandomResizedCrop for
    training, the shorter side resized and the centre cropped for evaluation). ``Data.reading`` says which.
    An unreadable file stops the load naming it; ``skip_unreadable`` leaves such files out instead (every
    image is then decoded once to find them) and lists them in ``Data.unreadable``."""
    test_names = ("test", "val") if name == "imagefolder" else ("val",)
    layout = (f"<root>/train/<class>/*.jpg and <root>/{'test' if name == 'imagefolder' else 'val'}/<class>/*.jpg"
              f" (ImageFolder layout)")
    if name == "imagefolder":
        layout += ", or train/ alone with --test-split N"
    if download:
        raise DatasetError(f"{name}: cannot be downloaded; prepare {layout} and pass --data-root")
    if root is None:
        raise DatasetError(f"{name}: needs --data-root; expected {layout}")
    root = Path(root)
    train_dir = root / "train"
    test_dirs = [root / t for t in test_names]
    test_dir = next((d for d in test_dirs if d.is_dir()), None)
    if test_split is not None and test_dir is not None:
        raise DatasetError(f"{name}: {test_dir} exists and test_split={test_split} was given; use one test "
                           f"split: drop --test-split, or point --data-root at a tree without {test_dir.name}/")
    if not train_dir.is_dir() or (test_dir is None and test_split is None):
        looked = [str(train_dir)] + ([str(d) for d in test_dirs] if test_split is None else [])
        raise DatasetError(f"{name}: missing folder(s); looked for {', '.join(looked)}; expected {layout}"
                           + _did_you_mean(root))
    train_samples, classes = _scan_folder(train_dir, None, name, layout)
    test_samples = [] if test_dir is None else _scan_folder(test_dir, classes, name, layout)[0]
    size = check_size(input_size, 32 if name == "imagefolder" else 224)     # asge.data.native_size

    paths = [p for p, _ in train_samples + test_samples]
    sizes = _header_sizes(paths)
    unreadable = _unreadable(paths, sizes, skip_unreadable, num_workers or os.cpu_count() or 1)
    if unreadable and not skip_unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise DatasetError(f"cannot read image {unreadable[0]}{more}; --skip-unreadable leaves such files out")
    if unreadable:
        bad = {line.split(": ", 1)[0] for line in unreadable}
        train_samples = [s for s in train_samples if s[0] not in bad]
        test_samples = [s for s in test_samples if s[0] not in bad]
    readable = [wh for wh in sizes if not isinstance(wh, str)]
    square = sum(wh == (size, size) for wh in readable)
    in_memory = name == "imagefolder" and 2 * square > len(readable)

    if test_split is not None:
        kept, held = held_out_test([c for _, c in train_samples], test_split, name)
        test_samples, train_samples = [train_samples[i] for i in held], [train_samples[i] for i in kept]
    n = len(train_samples)
    if name == "imagefolder":
        n_val = max(1, round(n * IMAGEFOLDER_VAL_FRACTION)) if n > 1 else 0
    else:
        n_val = min(IMAGENET_VAL_SIZE, max(1, n // 10)) if n > 1 else 0
    tr, va = fixed_split(n, n_val)
    sub = subset_indices(len(tr), subset, seed, name)
    if sub is not None:
        tr = tr[sub]
    splits = {"train": [train_samples[i] for i in tr.tolist()], "val": [train_samples[i] for i in va.tolist()],
              "test": test_samples}
    info = DatasetInfo(name=name, num_classes=len(classes), in_channels=3, image_size=size, classes=tuple(classes),
                       resize="stretch" if in_memory else "center-crop")
    census = f"{name}: {square:,} of {len(readable):,} images are {size}x{size}"
    extras = dict(listings={k: listing_sha256(v, root) for k, v in splits.items()}, unreadable=unreadable)
    if in_memory:
        other = len(readable) - square
        reading = (f"{census}: decoded once into memory"
                   + (f" (the other {other:,} resized whole to {size}x{size}, for training and test alike)"
                      if other else "") + "; evaluation uses them as loaded")
        mk = lambda samples, aug: TensorSplit(*_decode_all(samples, size), augmentation=aug,  # noqa: E731
                                              device=device)
        return Data(train=mk(splits["train"], "cifar"), val=mk(splits["val"], "none"),
                    test=mk(splits["test"], "none"), info=info, reading=reading, **extras)
    reading = (f"{census}: decoded per batch; evaluation resizes the shorter side to {round(size * 8 / 7)} and "
               f"crops the centre {size}x{size}")
    return Data(train=FolderSplit(splits["train"], size, train=True, num_workers=num_workers),
                val=FolderSplit(splits["val"], size, num_workers=num_workers),
                test=FolderSplit(splits["test"], size, num_workers=num_workers), info=info, reading=reading,
                **extras)


def _did_you_mean(root: Path) -> str:
    """A hint when ``root`` itself holds class folders of images (a split folder, or a tree without train/)."""
    try:
        holds_classes = any(e.is_dir() and any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(e.path))
                            for e in os.scandir(root))
    except OSError:
        return ""
    if not holds_classes:
        return ""
    if (root.parent / "train").is_dir() and root.name in ("train", "test", "val"):
        return f"; {root} itself holds class folders: did you mean --data-root {root.parent}?"
    return (f"; {root} itself holds class folders: put them under {root / 'train'} (and a test/ beside it, or "
            "pass --test-split N)")
