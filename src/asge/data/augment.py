"""Batched augmentation on the device: per-image random parameters, one generator, no Python loop over images.

Every function takes x: (B, C, H, W) on any device and draws its parameters from a CPU ``torch.Generator``,
so the same generator state gives bitwise the same batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Names a :class:`~asge.data.splits.TensorSplit` accepts for its ``augmentation``, and how many uniform
#: numbers each draws per image from the generator (``skip_draws`` relies on it).
DRAWS_PER_IMAGE = {"none": 0, "hflip": 1, "crop-flip": 3, "cifar": 8}
AUGMENTATIONS = tuple(DRAWS_PER_IMAGE)
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


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
    u = torch.rand(b, DRAWS_PER_IMAGE["cifar"], generator=g).to(x.device, non_blocking=True)
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


def crop_flip_random(x: torch.Tensor, g: torch.Generator, scale: float = 1.0 / 255, pad: int = 4) -> torch.Tensor:
    """RandomCrop(H, padding=pad) + RandomHorizontalFlip of :func:`augment_cifar`, without its colour
    changes. x: (B, C, H, W) uint8 (or float) -> float32 (B, C, H, W) times ``scale``. Draws
    ``torch.rand(B, 3, generator=g)``."""
    u = torch.rand(x.shape[0], DRAWS_PER_IMAGE["crop-flip"], generator=g).to(x.device, non_blocking=True)
    n_off = 2 * pad + 1
    oy = (u[:, 0] * n_off).long().clamp_(max=n_off - 1)
    ox = (u[:, 1] * n_off).long().clamp_(max=n_off - 1)
    return _crop_flip(x, oy, ox, u[:, 2] < 0.5, pad).float().mul_(scale)


def hflip_random(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2. x: (B, C, H, W) -> same."""
    flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device, non_blocking=True)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def skip_draws(augmentation: str, batch: int, g: torch.Generator) -> None:
    """Advance ``g`` as augmenting a batch of ``batch`` images would, without augmenting anything: a run
    resumed in the middle of an epoch draws the same parameters for the batches it still has to train."""
    per_image = DRAWS_PER_IMAGE[augmentation]
    if per_image:
        torch.rand(batch * per_image, generator=g)
