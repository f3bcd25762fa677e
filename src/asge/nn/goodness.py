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
    if equal_patches(h, w, partition):              # equal patches: a reshape-mean, cheaper to differentiate
        p = partition
        g = y.square().reshape(b, c, p, h // p, p, w // p).mean(dim=(3, 5))
    else:
        g = F.adaptive_avg_pool2d(y.square(), partition)
    if reduce == "sum":
        area = _bin_sizes(h, partition, y.device)[:, None] * _bin_sizes(w, partition, y.device)[None, :]
        g = g * area.to(g.dtype)
    return g.flatten(1)


def equal_patches(h: int, w: int, partition: int) -> bool:
    """Whether a P x P grid splits an h x w map into equal patches (every preset: then goodness is a reshape-mean)."""
    return h % partition == 0 and w % partition == 0


def _sum_over_batch(t: torch.Tensor) -> torch.Tensor:
    """``t.sum(0, keepdim=True)`` read in ``t``'s own memory order (summing a channels_last tensor over its
    batch through the generic path is ~30x slower on CPU)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).sum(0, keepdim=True).permute(0, 3, 1, 2)
    return t.sum(0, keepdim=True)


class _ReluGoodness(torch.autograd.Function):
    """``y = relu(z + shift)`` and the patch goodness of y, with a backward that makes one pass over y.

    The plain autograd graph of ``spatial_goodness(relu(z + shift))`` differentiates through the mean
    (a full-resolution division), the square (two multiplications) and the ReLU (a threshold whose inputs
    arrive in different memory layouts), and sums the shift's gradient over the batch in the slow order.
    Here ``dL/dz = y * 2 * up(dL/dg / area)`` in y's layout: the ReLU's own mask is implied, since y = 0
    wherever z + shift <= 0. The patch means are window averages (``avg_pool2d``, one pass in any layout)
    rather than :func:`spatial_goodness`'s reshape-mean, so g equals it to float rounding; values and
    gradients are bitwise those of the plain autograd graph of relu -> square -> avg_pool2d
    (tests/test_fast_paths.py).

    Returns (g (B, C, P, P), y, y**2); y and y**2 are not differentiable (the block's output and its pooled
    energy are handed on without a graph). Saves only y.
    """

    @staticmethod
    def forward(ctx, z, shift, partition: int, reduce: str):
        # (not aten._add_relu: on CPU its channels_last path turns NaN into 0, hiding a diverged block)
        y = torch.relu(z) if shift is None else (z + shift).relu_()
        sq = y.square()
        b, c, h, w = y.shape
        p = partition
        if p == 1:
            g = sq.mean(dim=(2, 3), keepdim=True)
        else:   # a window average: on CPU 3-5x faster than the reshape-mean for channels_last maps
            g = F.avg_pool2d(sq, (h // p, w // p))
        area = None
        if reduce == "sum":
            area = _bin_sizes(h, p, y.device)[:, None] * _bin_sizes(w, p, y.device)[None, :]
            g = g * area.to(g.dtype)
        ctx.save_for_backward(y)
        ctx.partition, ctx.area, ctx.shift_shape = p, area, None if shift is None else shift.shape
        ctx.mark_non_differentiable(y, sq)
        ctx.set_materialize_grads(False)                    # no zero-filled gradients for y and y**2
        return g, y, sq

    @staticmethod
    def backward(ctx, grad_g, _grad_y, _grad_sq):
        (y,) = ctx.saved_tensors
        b, c, h, w = y.shape
        p = ctx.partition
        if ctx.area is not None:
            grad_g = grad_g * ctx.area.to(grad_g.dtype)
        grad_g = grad_g / ((h // p) * (w // p))                          # the mean's backward
        grad_z = (y.reshape(b, c, p, h // p, p, w // p) * (2 * grad_g)[:, :, :, None, :, None]).reshape(b, c, h, w)
        grad_shift = None
        if ctx.shift_shape is not None and ctx.needs_input_grad[1]:
            grad_shift = (_sum_over_batch(grad_z) if ctx.shift_shape == (1, c, h, w)
                          else grad_z.sum_to_size(ctx.shift_shape))
        return grad_z, grad_shift, None, None


def relu_spatial_goodness(z: torch.Tensor, partition: int, reduce: str = "mean",
                          shift: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = relu(z + shift)`` and ``spatial_goodness(y, partition, reduce)`` with a one-pass backward.

    z: (B, C, H, W); shift: None or broadcastable to z (e.g. a (1, C, H, W) map); H and W multiples of P.
    Returns (g (B, C * P * P), y, y**2), y and y**2 without a graph. Same values as the unfused
    formulation to float rounding (see ``_ReluGoodness``), one pass over y in the backward.
    """
    if reduce not in GOODNESS_REDUCTIONS:
        raise ValueError(f"unknown goodness reduction {reduce!r}; valid: {', '.join(GOODNESS_REDUCTIONS)}")
    if not equal_patches(z.shape[-2], z.shape[-1], partition):
        raise ValueError(f"relu_spatial_goodness needs equal patches: {tuple(z.shape[-2:])} is not a multiple "
                         f"of {partition}")
    g, y, sq = _ReluGoodness.apply(z, shift, partition, reduce)
    return g.flatten(1), y, sq


#: What a block's goodness projection may be: the paper's fixed random map, or a learned one (an option
#: that leaves the paper's method: the block then also learns its own linear read-out of the goodness).
PROJECTIONS = ("fixed", "learned")


class GoodnessProjection(nn.Module):
    """Random linear map ``a = g @ W + b`` from goodness to class scores, fixed (the paper) or learned.

    W: (in_features, num_classes), b: (num_classes,), entries N(0, 1) / sqrt(num_classes), drawn once from
    ``generator``. ``kind="fixed"``: stored as buffers: saved in ``state_dict()``, never in ``parameters()``,
    never trained. ``kind="learned"``: the same initial values as parameters, trained with the block by the
    block's own local loss (same state-dict keys). g: (B, in_features) -> a: (B, num_classes).
    """

    def __init__(self, in_features: int, num_classes: int, generator: Optional[torch.Generator] = None,
                 device=None, dtype=None, kind: str = "fixed"):
        super().__init__()
        if kind not in PROJECTIONS:
            raise ValueError(f"unknown projection {kind!r}; valid: {', '.join(PROJECTIONS)}")
        self.kind = kind
        scale = 1.0 / math.sqrt(num_classes)
        w = torch.randn(in_features, num_classes, generator=generator) * scale
        b = torch.randn(num_classes, generator=generator) * scale
        w, b = w.to(device=device, dtype=dtype or torch.float32), b.to(device=device, dtype=dtype or torch.float32)
        if kind == "learned":
            self.weight, self.bias = nn.Parameter(w), nn.Parameter(b)
        else:
            self.register_buffer("weight", w)
            self.register_buffer("bias", b)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias.to(g.dtype), g, self.weight.to(g.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[0]}, num_classes={self.weight.shape[1]}, {self.kind}"


__all__ = ["partition_factor", "spatial_goodness", "relu_spatial_goodness", "equal_patches", "GoodnessProjection", "GOODNESS_REDUCTIONS",
           "PROJECTIONS"]
