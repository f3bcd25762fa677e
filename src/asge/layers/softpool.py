"""SoftPool: softmax-weighted pooling over each window (Stergiou et al., ICCV 2021), in 1-D, 2-D and 3-D.

For every channel and every pooling window R the output is

    sum_{i in R} w_i * a_i,        w_i = exp(a_i) / sum_{j in R} exp(a_j),

i.e. a per-channel softmax over the window used as weights. Output shapes equal those of
``nn.MaxPool1d/2d/3d`` for the same ``kernel_size``, ``stride``, ``padding`` and ``ceil_mode``; padded
positions (and the positions a ``ceil_mode`` window hangs past the border) get weight exactly 0.

How it is computed, in pure PyTorch on every device (no compiled extension; autograd's gradients, hence
exact): the map is padded (logits ``-inf``: weight 0; values 0), then ``e = exp(a - max over the
window)`` and ``out = sum(e * a) / sum(e)`` per window. Disjoint windows (stride >= kernel, the usual
case) use pooling kernels only: ``max_pool``, then ``avg_pool(e * a) / avg_pool(e)``; overlapping ones
use ``Tensor.unfold`` views. Shifting every window by its *own* maximum means no input can overflow
``exp`` (1e4 is fine in any dtype) and no window can underflow to 0/0 (its maximum has ``e = 1``); a
per-(b, c) shift would not do, as a window far below the map's maximum would give 0/0. The arithmetic
runs in float32 (float64 stays float64), also under autocast, and the result has the input's dtype.

``legacy_channel_shared=True`` reproduces the reference repository's CPU fallback instead, which sums
``exp`` over the *channel* dimension: one spatial weight map ``exp(a_i) ~ sum_c exp(a_{c,i})`` shared by
all channels. That is **not** the paper's per-channel SoftPool; it is kept only to reproduce results made
with that code. It uses the same stable path, with logits ``logsumexp`` over channels.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import POOLS

_Size = Union[int, Sequence[int]]


def _tuple(v: _Size, n: int, name: str) -> Tuple[int, ...]:
    t = (int(v),) * n if isinstance(v, int) else tuple(int(i) for i in v)
    if len(t) != n:
        raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {v!r}")
    return t


def _out_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Output length of a max/avg pooling along one dimension (PyTorch's rule, dilation 1)."""
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window must start inside input or left pad
        out -= 1
    return out


def _soft_pool(x: torch.Tensor, n: int, kernel_size: _Size, stride: Optional[_Size], padding: _Size,
               ceil_mode: bool, legacy_channel_shared: bool) -> torch.Tensor:
    name = f"soft_pool{n}d"
    if x.dim() not in (n + 1, n + 2):
        raise ValueError(f"{name} expects a ({n + 1})-D (C, *spatial) or ({n + 2})-D (B, C, *spatial) "
                         f"input, got shape {tuple(x.shape)}")
    unbatched = x.dim() == n + 1
    if unbatched:
        x = x.unsqueeze(0)
    k = _tuple(kernel_size, n, "kernel_size")
    s = k if stride is None else _tuple(stride, n, "stride")
    p = _tuple(padding, n, "padding")
    sizes = tuple(x.shape[2:])
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ValueError(f"{name}: kernel_size and stride must be >= 1 and padding >= 0, "
                         f"got kernel_size={k}, stride={s}, padding={p}")
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f"{name}: padding should be at most half of kernel size, "
                         f"got padding={p} and kernel_size={k}")
    outs = tuple(_out_size(L, ki, si, pi, ceil_mode) for L, ki, si, pi in zip(sizes, k, s, p))
    if min(outs) < 1:
        raise ValueError(f"{name}: input of spatial size {sizes} is too small for kernel_size={k}, "
                         f"padding={p} (computed output size {outs})")

    # float32 arithmetic (float64 stays float64). Every op below keeps that dtype under autocast too:
    # logsumexp autocasts to float32; pad, pooling, views, exp, products and sums follow their inputs.
    values = x.to(torch.promote_types(x.dtype, torch.float32))
    logits = torch.logsumexp(values, dim=1, keepdim=True) if legacy_channel_shared else values
    disjoint = all(si >= ki for si, ki in zip(s, k))
    # Bring every spatial dim to the length its windows span: (o - 1) * s + k, or o * s when windows are
    # disjoint (so that position i lies in block i // s). Extra positions are padded (logits -inf:
    # weight 0; values 0), surplus ones (never read, as in MaxPool) are cut off.
    # F.pad wants (last-dim left, last-dim right, previous-dim left, ...).
    spans = [o * si if disjoint else (o - 1) * si + ki for ki, si, o in zip(k, s, outs)]
    pads = []
    for L, pi, span in reversed(list(zip(sizes, p, spans))):
        pads += [pi, max(span - L - pi, 0)]
    if any(pads):
        values = F.pad(values, pads, value=0.0)
        logits = F.pad(logits, pads, value=float("-inf"))
    for d, span in enumerate(spans):
        values, logits = values.narrow(2 + d, 0, span), logits.narrow(2 + d, 0, span)
    out = (_disjoint_windows if disjoint else _overlapping_windows)(values, logits, k, s)
    out = out.to(x.dtype)
    return out.squeeze(0) if unbatched else out


# Both evaluations shift each window by its own maximum: exp <= 1 everywhere and = 1 somewhere in every
# window (a window always holds at least one real position, since padding <= kernel / 2), hence no
# overflow and no 0/0. The shift is constant over a window and cancels exactly, so it is detached (its
# true gradient is 0) and autograd differentiates sum(e * a) / sum(e) alone.

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _disjoint_windows(values: torch.Tensor, logits: torch.Tensor, k, s) -> torch.Tensor:
    """stride >= kernel, every dim of length o * s: position i lies in window i // s (if i % s < k).

    Pooling kernels only: ``max_pool`` gives each window's maximum, ``repeat_interleave`` spreads it over
    the window's block, and ``avg_pool(e * a) / avg_pool(e)`` (the 1 / window-size factors cancel).
    """
    n = len(k)
    lg = logits.detach()
    shift = _MAX_POOL[n](lg, k, s)
    for d in range(n):
        shift = shift.repeat_interleave(s[d], dim=2 + d)
    if s != k:  # gap positions, read by no window, must not overflow: raise their shift to themselves
        shift = torch.maximum(shift, lg)  # (inside windows lg <= the window maximum: no change)
    e = torch.exp(logits - shift)
    pool = _AVG_POOL[n]
    return pool(e * values, k, s) / pool(e, k, s)


def _overlapping_windows(values: torch.Tensor, logits: torch.Tensor, k, s) -> torch.Tensor:
    """stride < kernel somewhere: windows as ``Tensor.unfold`` views, (B, C, *outs, *k), reduced directly."""
    n = len(k)
    for d in range(n):  # each unfold appends one window dim
        values, logits = values.unfold(2 + d, k[d], s[d]), logits.unfold(2 + d, k[d], s[d])
    window_dims = tuple(range(-n, 0))
    e = torch.exp(logits - logits.detach().amax(dim=window_dims, keepdim=True))
    return (e * values).sum(dim=window_dims) / e.sum(dim=window_dims)


def soft_pool1d(x: torch.Tensor, kernel_size: _Size, stride: Optional[_Size] = None, padding: _Size = 0,
                ceil_mode: bool = False, legacy_channel_shared: bool = False) -> torch.Tensor:
    """SoftPool over length. x: (B, C, L) or (C, L) -> (B, C, L') as ``F.max_pool1d``. See module docs."""
    return _soft_pool(x, 1, kernel_size, stride, padding, ceil_mode, legacy_channel_shared)


def soft_pool2d(x: torch.Tensor, kernel_size: _Size, stride: Optional[_Size] = None, padding: _Size = 0,
                ceil_mode: bool = False, legacy_channel_shared: bool = False) -> torch.Tensor:
    """SoftPool over (H, W). x: (B, C, H, W) or (C, H, W) -> (B, C, H', W') as ``F.max_pool2d``."""
    return _soft_pool(x, 2, kernel_size, stride, padding, ceil_mode, legacy_channel_shared)


def soft_pool3d(x: torch.Tensor, kernel_size: _Size, stride: Optional[_Size] = None, padding: _Size = 0,
                ceil_mode: bool = False, legacy_channel_shared: bool = False) -> torch.Tensor:
    """SoftPool over (T, H, W). x: (B, C, T, H, W) or (C, T, H, W) -> (B, C, T', H', W') as ``F.max_pool3d``."""
    return _soft_pool(x, 3, kernel_size, stride, padding, ceil_mode, legacy_channel_shared)


class _SoftPoolNd(nn.Module):
    _fn = staticmethod(soft_pool2d)

    def __init__(self, kernel_size: _Size, stride: Optional[_Size] = None, padding: _Size = 0,
                 ceil_mode: bool = False, legacy_channel_shared: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.legacy_channel_shared = ceil_mode, legacy_channel_shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                        self.legacy_channel_shared)

    def extra_repr(self) -> str:
        r = (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
             f"ceil_mode={self.ceil_mode}")
        return r + (", legacy_channel_shared=True" if self.legacy_channel_shared else "")


class SoftPool1d(_SoftPoolNd):
    """SoftPool over length: (B, C, L) -> (B, C, L'), L' as ``nn.MaxPool1d``. No parameters.

    ``legacy_channel_shared=True`` selects the reference code's channel-shared weights (not the paper's).
    """

    _fn = staticmethod(soft_pool1d)


class SoftPool2d(_SoftPoolNd):
    """SoftPool over (H, W): (B, C, H, W) -> (B, C, H', W'), shapes as ``nn.MaxPool2d``. No parameters.

    ``legacy_channel_shared=True`` selects the reference code's channel-shared weights (not the paper's).
    """

    _fn = staticmethod(soft_pool2d)


class SoftPool3d(_SoftPoolNd):
    """SoftPool over (T, H, W): (B, C, T, H, W) -> (B, C, T', H', W'), shapes as ``nn.MaxPool3d``.

    No parameters. ``legacy_channel_shared=True`` selects the reference code's channel-shared weights.
    """

    _fn = staticmethod(soft_pool3d)


@POOLS.register("soft")
def _soft(kernel_size=2, stride=None, **kw):
    return SoftPool2d(kernel_size, stride, **kw)


__all__ = ["SoftPool1d", "SoftPool2d", "SoftPool3d", "soft_pool1d", "soft_pool2d", "soft_pool3d"]
