"""The ASGE block: norm -> conv3x3 -> ReLU -> [context] -> Y; Y -> goodness -> fixed projection (local scores);
Y -> [pool] -> dropout -> output for the next block."""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .goodness import (GoodnessProjection, GOODNESS_REDUCTIONS, equal_patches, relu_spatial_goodness,
                       spatial_goodness)
from .heads import head_feature_dim
from .local_block import LocalBlock
from ..layers import ChannelLayerNorm, Dropout16, RMSPool2d, create_context, create_norm, create_pool


def affine_norm_conv(norm: nn.Module, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(norm(x))`` for a norm with per-channel gamma/beta, computed as
    ``conv_{W * gamma}(x_hat) + conv_W(beta)``, where x_hat is the normalised x without its affine part.

    The two are equal (zero padding included: the beta map is padded with zeros as the normalised map is).
    The point is the gradient: gamma and beta are reached through the conv's *weight* gradient and a
    one-image conv of the beta map, so when x needs no gradient (a detached block input) no conv computes
    the gradient of its input, yet the norm's gamma and beta still learn from the block's loss.
    x: (B, C_in, H, W) -> (B, C_out, H, W).
    """
    out, beta_map = affine_norm_conv_parts(norm, conv, x)
    return out + beta_map


def affine_norm_conv_parts(norm: nn.Module, conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of :func:`affine_norm_conv`: ``conv_{W * gamma}(x_hat)`` (B, C_out, H, W) and the beta
    map ``conv_W(beta)`` (1, C_out, H, W), so that a caller can fuse their sum into the next operation."""
    if isinstance(norm, ChannelLayerNorm):
        x_hat = norm.normalize(x)
    else:  # nn.GroupNorm
        x_hat = F.group_norm(x, norm.num_groups, None, None, norm.eps)
    gamma = norm.weight.view(1, -1, 1, 1)
    out = conv._conv_forward(x_hat, conv.weight * gamma, conv.bias)
    return out, beta_map(conv, norm.bias, *x.shape[-2:])


def beta_map(conv: nn.Conv2d, beta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``conv_W`` (no bias) of the constant map ``beta`` (C_in,) over h x w, zero padded: (1, C_out, h', w')
    (h' = h for the block's 3x3 conv with padding 1).

    Without a convolution: the taps ``K = sum_i W[:, i] * beta[i]`` (C_out, k, k), then
    ``R_h @ K @ R_w^T`` with ``R[y, t] = 1`` where tap t of output row y falls inside the map. (A one-image
    conv runs PyTorch's slow reference kernel on CPU; this is 2-3 small matmuls.) Stride 1, no dilation.
    """
    k, pad = conv.kernel_size, conv.padding
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or isinstance(pad, str):
        return conv._conv_forward(beta.view(1, -1, 1, 1).expand(1, -1, h, w), conv.weight, None)
    taps = (conv.weight * beta.view(1, -1, 1, 1)).sum(1)                       # (C_out, k, k)
    rows_of = inside_taps if torch.compiler.is_compiling() else tap_rows       # (a compiled graph folds them)
    rows = rows_of(h, k[0], pad[0], taps.device, taps.dtype)
    cols = rows_of(w, k[1], pad[1], taps.device, taps.dtype)
    return (rows @ taps @ cols.T).unsqueeze(0)


def inside_taps(n: int, k: int, p: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The constant 0/1 matrix R (n + 2p - k + 1, k) of :func:`beta_map`: ``R[y, t] = 1`` where tap t of
    output row y falls inside a map of side n."""
    pos = torch.arange(n + 2 * p - k + 1, device=device)[:, None] + torch.arange(k, device=device) - p
    return ((pos >= 0) & (pos < n)).to(dtype)


@functools.lru_cache(maxsize=256)
def tap_rows(n: int, k: int, p: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`inside_taps`, built once per (n, k, p, device, dtype) and kept: no kernel launches in the step
    (and one fixed address, as a CUDA graph needs)."""
    with torch.inference_mode(False), torch.no_grad():
        return inside_taps(n, k, p, device, dtype)


class ASGEBlock(LocalBlock):
    """One locally trained block. Knows nothing of training: it only computes.

    Args:
        in_channels, out_channels: conv widths C_{l-1} -> C_l.
        in_size: spatial side H_l of the input (the conv keeps it; pooling halves it on the way out).
        num_classes: N, the width of the fixed projection.
        partition: P_l, patches per side for the goodness grid.
        downsample: apply 2x2 stride-2 pooling (``pool``) to Y on the way out.
        norm: entry norm (``layer``, ``rms``, ``none``); ``first=True`` makes a ``layer`` norm normalise the
            whole image (GroupNorm with one group) instead of the channels at each pixel, which would turn a
            1-channel image into zeros.
        context: context module after the ReLU (``none``, ``sge``, ``gsop``, ...), ``context_options`` its kwargs.
        head_features: what the Fusion head reads of Y (``gap``, ``goodness``, ``patch``; see
            :func:`asge.nn.heads.head_features`).
        generator: draws the projection.
        projection: ``fixed`` (the paper: a fixed random map) or ``learned`` (the same initial map, trained by
            the block's own loss; an option that leaves the paper's method).

    Shapes: x (B, C_{l-1}, H, W) -> Y (B, C_l, H, W) -> output (B, C_l, H/2, W/2) if ``downsample`` else Y's shape;
    ``local_logits(Y)``: (B, N).
    """

    def __init__(self, in_channels: int, out_channels: int, *, in_size: int, num_classes: int, partition: int,
                 downsample: bool = False, norm: str = "layer", pool: str = "rms", context: str = "none",
                 context_options: Optional[dict] = None, dropout: float = 0.1, goodness: str = "mean",
                 head_features: str = "gap", first: bool = False, generator: Optional[torch.Generator] = None,
                 projection: str = "fixed", device=None, dtype=None):
        super().__init__()
        if goodness not in GOODNESS_REDUCTIONS:
            raise ValueError(f"unknown goodness {goodness!r}; valid: {', '.join(GOODNESS_REDUCTIONS)}")
        self.in_channels, self.out_channels, self.in_size = in_channels, out_channels, in_size
        self.partition, self.downsample, self.goodness = partition, downsample, goodness
        self.head_kind = head_features
        self.head_dim = head_feature_dim(out_channels, partition, head_features)
        if first and norm == "layer":
            self.norm = nn.GroupNorm(1, in_channels, eps=1e-5, device=device, dtype=dtype)
        else:
            self.norm = create_norm(norm, in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, device=device, dtype=dtype)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu", generator=generator)
        nn.init.zeros_(self.conv.bias)
        self.context = create_context(context, out_channels, feat_size=in_size, device=device, dtype=dtype,
                                      **(context_options or {}))
        self.pool = create_pool(pool, 2) if downsample else nn.Identity()
        self.dropout = Dropout16(dropout)            # nn.Dropout with a cheaper mask (layers/dropout.py)
        self.projection = GoodnessProjection(out_channels * partition * partition, num_classes, generator,
                                             device=device, dtype=dtype, kind=projection)

    @property
    def out_size(self) -> int:
        return self.in_size // 2 if self.downsample else self.in_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Y_l = context(relu(conv(norm(x)))): (B, C_in, H, W) -> (B, C_out, H, W).

        With an affine norm (``layer``) the norm's gamma/beta are folded into the conv
        (:func:`affine_norm_conv`): same values, no input gradient needed to train them.
        """
        if isinstance(self.norm, (ChannelLayerNorm, nn.GroupNorm)):
            z = affine_norm_conv(self.norm, self.conv, x)
        else:
            z = self.conv(self.norm(x))
        return self.context(F.relu(z))

    def transmit(self, y: torch.Tensor, y_square: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """What flows on to the next block: dropout(pool(Y)). ``y_square``: Y**2 when already computed
        (:meth:`fused_local_forward`), which RMS pooling of a float32 Y then reuses (same values).
        ``generator``: draws the dropout mask (None: the global RNG)."""
        if y_square is not None and isinstance(self.pool, RMSPool2d) and y.dtype == torch.float32:
            pooled = self.pool(y, square=y_square)
        else:
            pooled = self.pool(y)
        return self.dropout(pooled) if generator is None else self.dropout(pooled, generator=generator)

    @property
    def fusable(self) -> bool:
        """Whether :meth:`fused_local_forward` applies: no context module and equal goodness patches."""
        return isinstance(self.context, nn.Identity) and equal_patches(self.in_size, self.in_size, self.partition)

    def fused_local_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Y, a_l, Y**2) for a :attr:`fusable` block: the values of ``features`` and ``local_logits``, with
        ReLU, goodness and their backward fused (:func:`asge.nn.goodness.relu_spatial_goodness`); Y and Y**2
        carry no graph. x: (B, C_in, H, W), needs no gradient."""
        if isinstance(self.norm, (ChannelLayerNorm, nn.GroupNorm)):
            z, shift = affine_norm_conv_parts(self.norm, self.conv, x)
        else:
            z, shift = self.conv(self.norm(x)), None
        g, y, sq = relu_spatial_goodness(z, self.partition, self.goodness, shift=shift)
        return y, self.projection(g), sq

    def local_logits(self, y: torch.Tensor) -> torch.Tensor:
        """a_l = spatial_goodness(Y) @ W_l + b_l: (B, C_out, H, W) -> (B, N)."""
        return self.projection(spatial_goodness(y, self.partition, self.goodness))

    def local_loss(self, y: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                   label_smoothing: float = 0.0) -> torch.Tensor:
        """The block's loss (0-dim): cross-entropy of its scores ``logits`` = a_l (B, N) against ``labels`` (B,)."""
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)

    def conv_macs(self) -> int:
        """Multiply-accumulates of the conv per image (for early-exit compute accounting)."""
        return self.in_channels * self.out_channels * 9 * self.in_size * self.in_size

    def extra_repr(self) -> str:
        return f"partition={self.partition}, downsample={self.downsample}, goodness={self.goodness!r}"
