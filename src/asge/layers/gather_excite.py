"""Gather-Excite (Hu, Shen, Albanie, Sun and Vedaldi, NeurIPS 2018).

``y = x * sigmoid(interp(gather(x)))``: a gather operator summarises each channel over a neighbourhood
(extent ratio e in {2, 4, 8}, or the whole map for ``extent=0``), and the excite operator resizes that
summary back to H x W by nearest interpolation and uses it as a sigmoid gate.

Variants (``variant=``):

- ``"minus"`` (GE-theta-minus, no parameters): gather = average pooling; global mean for extent 0, else
  ``avg_pool2d`` with kernel = stride = e and ``ceil_mode=True`` (output ceil(H/e) x ceil(W/e); a
  partial border window averages only its in-image positions). The paper's selection operator reads a
  (2e-1) x (2e-1) neighbourhood around every e-th position; disjoint e x e blocks are the common,
  simpler reading, and each pixel is then gated by (nearly, see below) its own block's mean.
- ``"theta"`` (GE-theta): gather = depthwise convolutions with BN. Extent e: log2(e) depthwise 3x3
  stride-2 convs (padding 1), each followed by BN, with ReLU between them (output ceil(H/e) x ceil(W/e)).
  Global extent: one depthwise conv whose kernel covers the whole map, followed by BN. That kernel is
  ``feat_size`` (the map size the module will see) when given; with ``feat_size=None`` it is 8 x 8 and
  the map is first adaptive-average-pooled to 8 x 8. In both cases the map is adaptive-pooled to the
  kernel size whenever its size differs, so any input size works, and for maps of exactly
  ``feat_size`` it is the paper's global depthwise conv.
- ``"plus"`` (GE-theta-plus): GE-theta's gather followed by an SE-style MLP of 1x1 convs
  (C -> C // reduction -> C, ReLU between), applied at every gathered position.

Excite: ``F.interpolate(..., mode="nearest")`` to H x W (output row y reads row floor(y * h' / H)); when
e divides H and W this is exactly "each pixel gets its block's value". A global (1 x 1) summary is
broadcast. In training mode the BatchNorms of ``theta``/``plus`` need more than one value per channel
(for the global extent: batch > 1), as any BatchNorm; a batch that has one is refused with a ValueError that
says so (:meth:`GatherExcite.check_batch`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .context import CONTEXTS, forwards_options

_VARIANTS = ("minus", "theta", "plus")
_EXTENTS = (0, 2, 4, 8)
#: kernel of the global depthwise gather when ``feat_size`` is not given (the map is pooled to it).
DEFAULT_GLOBAL_KERNEL = 8


class GatherExcite(nn.Module):
    """Gather-Excite context module. x: (B, C, H, W) -> (B, C, H, W). See the module docstring.

    Args:
        channels: C.
        variant: ``"minus"`` | ``"theta"`` | ``"plus"``.
        extent: 0 (global) or 2, 4, 8.
        feat_size: spatial size (int or (H, W)) of the maps, for the global depthwise kernel of
            ``theta``/``plus``; ignored otherwise. None -> 8 x 8 kernel on adaptively pooled maps.
        reduction: MLP reduction of ``plus`` (hidden width ``max(1, C // reduction)``); ignored otherwise.
    """

    def __init__(self, channels: int, variant: str = "minus", extent: int = 0,
                 feat_size: Optional[Union[int, Sequence[int]]] = None, reduction: int = 16,
                 device=None, dtype=None):
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"GatherExcite: variant must be one of {_VARIANTS}, got {variant!r}")
        if isinstance(extent, bool) or not isinstance(extent, int) or extent not in _EXTENTS:
            raise ValueError(f"GatherExcite: extent must be 0 (global), 2, 4 or 8, got {extent!r}")
        if reduction < 1:
            raise ValueError(f"GatherExcite: reduction must be >= 1, got {reduction}")
        dd = dict(device=device, dtype=dtype)
        self.channels, self.variant, self.extent = channels, variant, extent
        self.global_kernel = None
        self.gather = None
        if variant != "minus":
            if extent == 0:
                k = DEFAULT_GLOBAL_KERNEL if feat_size is None else feat_size
                kh, kw = (k, k) if isinstance(k, int) else tuple(k)
                self.global_kernel = (int(kh), int(kw))
                self.gather = nn.Sequential(
                    nn.Conv2d(channels, channels, self.global_kernel, groups=channels, bias=False, **dd),
                    nn.BatchNorm2d(channels, **dd),
                )
            else:
                layers = []
                for i in range(int(math.log2(extent))):
                    if i:
                        layers.append(nn.ReLU())
                    layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels,
                                         bias=False, **dd),
                               nn.BatchNorm2d(channels, **dd)]
                self.gather = nn.Sequential(*layers)
        self.mlp = None
        if variant == "plus":
            hidden = max(1, channels // reduction)
            self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, **dd), nn.ReLU(),
                                     nn.Conv2d(hidden, channels, 1, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.gather is not None and self.training:
            self.check_batch(x)
        if self.gather is None:  # minus
            if self.extent == 0:
                g = x.mean(dim=(2, 3), keepdim=True)
            else:
                g = F.avg_pool2d(x, self.extent, self.extent, ceil_mode=True)
        elif self.global_kernel is not None:
            g = self.global_gather(x if (h, w) == self.global_kernel else F.adaptive_avg_pool2d(x, self.global_kernel))
        else:
            g = self.gather(x)
        if self.mlp is not None:
            g = self.mlp(g)
        if g.shape[-2:] != (1, 1):  # a 1 x 1 summary broadcasts; nearest resize otherwise
            g = F.interpolate(g, size=(h, w), mode="nearest")
        return x * torch.sigmoid(g).to(x.dtype)

    def check_batch(self, x: torch.Tensor) -> None:
        """ValueError, one line, when the gather's BatchNorm (``theta``/``plus``, training mode) would see a
        single value per channel: batch x gathered map (1 x 1 for the global extent, ceil(H/e) x ceil(W/e)
        otherwise) must hold at least 2 values. x: (B, C, H, W)."""
        b, (h, w) = x.shape[0], x.shape[-2:]
        gathered = 1 if self.extent == 0 else math.ceil(h / self.extent) * math.ceil(w / self.extent)
        if b * gathered < 2:
            where = "global extent" if self.extent == 0 else f"extent {self.extent} on a {h}x{w} map"
            raise ValueError(f"GatherExcite (variant {self.variant!r}, {where}) in training mode needs at least "
                             f"2 images per batch, got {b}: its BatchNorm needs more than one value per channel "
                             "(call .eval() to run a single image)")

    def global_gather(self, x: torch.Tensor) -> torch.Tensor:
        """The global gather: the depthwise conv whose kernel covers the map, then BN. (B, C, kh, kw) -> (B, C, 1, 1).

        The conv is computed as what it is, a per-channel weighted sum: the same values up to rounding, and
        2-6x faster forward + backward on CPU than a depthwise conv with an H x W kernel. In the layout x
        has: one einsum for contiguous x; for channels_last x, a product and a sum over the (H, W) of its
        (B, H, W, C) view, which no einsum or strided reduction matches (3x faster; no layout copy).
        """
        conv, bn = self.gather
        w = conv.weight[:, 0].to(x.dtype)                                  # (C, kh, kw)
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            g = (x.permute(0, 2, 3, 1) * w.permute(1, 2, 0)).sum(dim=(1, 2))
        else:
            g = torch.einsum("bchw,chw->bc", x, w)
        return bn(g[:, :, None, None])

    def extra_repr(self) -> str:
        r = f"{self.channels}, variant={self.variant!r}, extent={self.extent}"
        return r + (f", global_kernel={self.global_kernel}" if self.global_kernel else "")


@CONTEXTS.register("ge-minus")
@forwards_options(GatherExcite, fixed=("variant",))
def _ge_minus(channels: int, **kw):
    return GatherExcite(channels, variant="minus", **kw)


@CONTEXTS.register("ge")
@forwards_options(GatherExcite, fixed=("variant",))
def _ge(channels: int, **kw):
    return GatherExcite(channels, variant="theta", **kw)


@CONTEXTS.register("ge-plus")
@forwards_options(GatherExcite, fixed=("variant",))
def _ge_plus(channels: int, **kw):
    return GatherExcite(channels, variant="plus", **kw)


__all__ = ["GatherExcite"]
