"""From image files to the float batch a trained network takes: a run's evaluation preprocessing.

:class:`Preprocessing` repeats what the run's test split did to its images, for images of any size and mode:

1. convert to the run's channels: 1 (grey: ITU-R 601-2 luma, PIL's ``L``) or 3 (RGB);
2. resize to S x S as the run's test split did (recorded per run, ``DatasetInfo.resize``): ``stretch`` (the
   datasets held in memory: digits, MNIST, Fashion-MNIST, CIFAR and ImageFolder trees of mostly S x S
   images: the whole image, bilinear with antialiasing, rounded to uint8, as they were resized at load) or
   ``center-crop`` (trees decoded per batch, ImageNet: shorter side to round(S * 8 / 7), then the centre
   S x S);
3. scale to [0, 1] (uint8 / 255) and divide each image by its RMS over (C, H, W).

The result, float32 ``(B, C, S, S)``, is what ``net.predict`` and the exported TorchScript / ONNX graphs take.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch

from . import rms_normalize
from .folders import IMAGE_EXTENSIONS, resize_center_crop
from .in_memory import resize_uint8
from ..errors import AsgeError

RESIZES = ("stretch", "center-crop")


class ImageReadError(AsgeError):
    """An image file that cannot be read (missing, not an image, truncated)."""


def read_image(path: Union[str, os.PathLike]):
    """Decode one image file into a PIL image (fully loaded). Raises :class:`ImageReadError` with the reason."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except Exception as e:  # UnidentifiedImageError (an OSError), truncated data, DecompressionBombError, ...
        raise ImageReadError(f"{path}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def find_images(paths: Iterable[Union[str, os.PathLike]]) -> tuple[list[str], list[str]]:
    """Expand files and folders (searched recursively, sorted, for :data:`IMAGE_EXTENSIONS`) into image files.

    Returns (files, errors): a path that does not exist, or a folder with no image in it, is an error line.
    A file named directly is kept whatever its extension (reading it may fail later).
    """
    files, errors = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(str(Path(d) / f) for d, _, names in os.walk(p, followlinks=True) for f in names
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            files.extend(found)
            if not found:
                errors.append(f"{p}: folder holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        elif p.is_file():
            files.append(str(p))
        else:
            errors.append(f"{p}: no such file or folder")
    return files, errors


def _to_pil(image):
    """A path, PIL image, uint8 numpy array (H, W) / (H, W, C) or uint8 tensor (H, W) / (C, H, W) -> PIL image."""
    from PIL import Image
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image.permute(1, 2, 0) if image.ndim == 3 else image).numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 1|3|4), got {image.dtype} {image.shape}")
        return Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    raise ValueError(f"cannot preprocess a {type(image).__name__}: expected a file path, a PIL image or a uint8 "
                     "array")


@dataclass(frozen=True)
class Preprocessing:
    """A run's evaluation preprocessing (module docstring): S = ``image_size``, C = ``in_channels``."""

    image_size: int
    in_channels: int
    resize: str = "stretch"

    def __post_init__(self):
        if self.resize not in RESIZES:
            raise ValueError(f"unknown resize {self.resize!r}; valid: {', '.join(RESIZES)}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3 to read images, got {self.in_channels}")

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(int(d["image_size"]), int(d["in_channels"]), str(d.get("resize", "stretch")))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The steps in words (model cards)."""
        s = self.image_size
        mode = "grey (ITU-R 601-2 luma)" if self.in_channels == 1 else "RGB"
        size = (f"resize the whole image to {s}x{s} (bilinear, antialiased, rounded to uint8)"
                if self.resize == "stretch" else
                f"resize the shorter side to {round(s * 8 / 7)} (bilinear, antialiased), crop the centre {s}x{s}")
        return (f"convert to {mode}; {size}; scale to [0, 1] (uint8 / 255); divide each image by its RMS over "
                f"(C, H, W) (sqrt(mean(x^2) + 1e-8)). Layout float32 (B, {self.in_channels}, {s}, {s}), NCHW.")

    def image(self, image) -> torch.Tensor:
        """One image -> uint8 (C, S, S)."""
        img = _to_pil(image)
        img = img.convert("L" if self.in_channels == 1 else "RGB")
        if self.resize == "center-crop":
            img = resize_center_crop(img, self.image_size)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        return resize_uint8(x.unsqueeze(0), self.image_size)[0] if self.resize == "stretch" else x

    def __call__(self, images, device=None) -> torch.Tensor:
        """Images (one, or a list of paths / PIL images / uint8 arrays) -> float32 (B, C, S, S) on ``device``."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        return self.batch([self.image(im) for im in images], device)

    @staticmethod
    def batch(rows, device=None) -> torch.Tensor:
        """uint8 images (C, S, S) from :meth:`image` -> float32 (B, C, S, S): / 255, then divided by the RMS."""
        return rms_normalize(torch.stack(rows).to(device=device, dtype=torch.float32).mul_(1.0 / 255))


__all__ = ["Preprocessing", "ImageReadError", "read_image", "find_images", "RESIZES"]
