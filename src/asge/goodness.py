"""Adaptive spatial goodness: the partition factor, patch energies, and the fixed random projection."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

GOODNESS_REDUCTIONS = ("mean", "sum")


def partition_factor(channels: int, last_channels: int, alpha: float = 1.0, size: Optional[int] = None) -> int:
    """``P_l = clamp(floor(alpha * C_L / C_l), 1, size)``: patches per side for a ``channels``-wide layer.

    ``last_channels`` is C_L, the width of the last conv block; ``size`` is ``min(H_l, W_l)`` (no upper clamp
    when None). Narrow, shallow layers get a fine grid, wide deep layers a coarse one.
    """
    if channels < 1 or last_channels < 1:
        raise ValueError(f"channel counts must be >= 1, got channels={channels}, last_channels={last_channels}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    p = max(1, math.floor(alpha * last_channels / channels))
    return p if size is None else max(1, min(p, size))


def _bin_sizes(n: int, p: int, device) -> torch.Tensor:
    """Sizes of the ``p`` adaptive bins over ``n`` positions, exactly as ``adaptive_avg_pool`` draws them."""
    i = torch.arange(p, device=device)
    start = torch.div(i * n, p, rounding_mode="floor")
    end = torch.div((i + 1) * n + p - 1, p, rounding_mode="floor")
    return (end - start).float()


def spatial_goodness(y: torch.Tensor, partition: int, reduce: str = "mean") -> torch.Tensor:
    """Energy of every patch of every channel. y: (B, C, H, W) -> g: (B, C * P * P), P = ``partition``.

    Each channel is split into a P x P grid (adaptive bins when H or W is not a multiple of P, as
    ``adaptive_avg_pool2d``); a patch's goodness is the mean of y**2 over it (``reduce="mean"``, the authors'
    code) or the sum (``"sum"``, the seed's words). Flattened channel-major: index ``c * P * P + i * P + j``.
    """
    if reduce not in GOODNESS_REDUCTIONS:
        raise ValueError(f"unknown goodness reduction {reduce!r}; valid: {', '.join(GOODNESS_REDUCTIONS)}")
    b, c, h, w = y.shape
    if h % partition == 0 and w % partition == 0:   # equal patches: a reshape-mean, cheaper to differentiate
        p = partition
        g = y.square().reshape(b, c, p, h // p, p, w // p).mean(dim=(3, 5))
    else:
        g = F.adaptive_avg_pool2d(y.square(), partition)
    if reduce == "sum":
        area = _bin_sizes(h, partition, y.device)[:, None] * _bin_sizes(w, partition, y.device)[None, :]
        g = g * area.to(g.dtype)
    return g.flatten(1)


class GoodnessProjection(nn.Module):
    """Fixed random linear map ``a = g @ W + b`` from goodness to class scores.

    W: (in_features, num_classes), b: (num_classes,), entries N(0, 1) / sqrt(num_classes), drawn once from
    ``generator`` and stored as buffers: saved in ``state_dict()``, never in ``parameters()``, never trained.
    g: (B, in_features) -> a: (B, num_classes).
    """

    def __init__(self, in_features: int, num_classes: int, generator: Optional[torch.Generator] = None,
                 device=None, dtype=None):
        super().__init__()
        scale = 1.0 / math.sqrt(num_classes)
        w = torch.randn(in_features, num_classes, generator=generator) * scale
        b = torch.randn(num_classes, generator=generator) * scale
        self.register_buffer("weight", w.to(device=device, dtype=dtype or torch.float32))
        self.register_buffer("bias", b.to(device=device, dtype=dtype or torch.float32))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias.to(g.dtype), g, self.weight.to(g.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[0]}, num_classes={self.weight.shape[1]}, fixed"


__all__ = ["partition_factor", "spatial_goodness", "GoodnessProjection", "GOODNESS_REDUCTIONS"]
