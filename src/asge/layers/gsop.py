"""Global Second-order Pooling attention (GSoP; Gao, Xie, Wang and Li, CVPR 2019).

A covariance matrix of the whole feature map, passed through a row-wise convolution and a 1x1 conv,
becomes a sigmoid gate: per channel (``mode="channel"``, GSoP's default) or per position
(``mode="spatial"``).

The covariance is always ``Z_c Z_c^T / M`` with ``Z_c`` centred over its M observations, computed with
one batched matmul in float32 (float64 stays float64) with autocast disabled, so no M x M centring
matrix is ever built and half precision never enters the second-order statistics.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .context import CONTEXTS, forwards_options


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Per-sample covariance of the rows of ``z``: (B, N, M) -> (B, N, N), ``Z_c Z_c^T / M``.

    N variables, M observations; centred over M, divided by M (population covariance, as the paper).
    Computed in float32 (float64 kept) with autocast off.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        z = z - z.mean(dim=2, keepdim=True)
        return torch.bmm(z, z.transpose(1, 2)) / z.shape[2]


class _RowwiseHead(nn.Module):
    """Covariance (B, N, N) -> (B, out_channels, 1, 1): BN over rows, row-wise conv (N -> 4N), 1x1 conv.

    The row-wise conv is a grouped conv with ``groups = N`` and kernel (N, 1) on the covariance viewed as
    (B, N, N, 1): row i alone produces outputs 4i..4i+3.
    """

    def __init__(self, n: int, out_channels: int, mid_act: bool, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.bn = nn.BatchNorm2d(n, **dd)
        self.row_conv = nn.Conv2d(n, 4 * n, kernel_size=(n, 1), groups=n, **dd)
        self.act = nn.ReLU() if mid_act else nn.Identity()
        self.fc = nn.Conv2d(4 * n, out_channels, kernel_size=1, **dd)

    def forward(self, cov: torch.Tensor) -> torch.Tensor:
        y = self.bn(cov.unsqueeze(-1).to(self.bn.weight.dtype))
        return self.fc(self.act(self.row_conv(y)))


class GSoP(nn.Module):
    """GSoP attention. x: (B, C, H, W) -> (B, C, H, W).

    ``mode="channel"`` (GSoP-Net's block, Gao et al., CVPR 2019):
        1x1 conv C -> dim + BN + ReLU; covariance of the dim channels over the H*W positions -> (B, dim, dim);
        BN; row-wise conv -> 4*dim; 1x1 conv 4*dim -> C; sigmoid -> (B, C, 1, 1); ``out = x * att``.

    ``mode="spatial"`` (the same idea over positions; as the authors' position attention):
        1x1 conv C -> dim + BN; adaptive average pooling to a fixed ``grid`` (N = gh*gw cells, default
        8 x 8 = 64, so the head has a fixed size whatever H, W); covariance of the N positions, each
        described by its ``dim`` channel values (observations) -> (B, N, N); BN; row-wise conv -> 4N; ReLU;
        1x1 conv 4N -> N; sigmoid; viewed as (B, 1, gh, gw) and resized to (H, W) with ``upsample``
        (``"nearest"`` or ``"bilinear"``); ``out = x * att`` (one value per position, shared by channels).

    Any H, W >= 1 works (a 1 x 1 map gives a zero covariance, hence finite output). In training mode the
    BatchNorms need more than one value per channel, i.e. batch > 1 when the map is 1 x 1.
    """

    def __init__(self, channels: int, dim: int = 128, mode: str = "channel",
                 grid: Union[int, Sequence[int]] = 8, upsample: str = "nearest", device=None, dtype=None):
        super().__init__()
        if mode not in ("channel", "spatial"):
            raise ValueError(f"GSoP: mode must be 'channel' or 'spatial', got {mode!r}")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"GSoP: upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
        if dim < 1 or gh < 1 or gw < 1:
            raise ValueError(f"GSoP: dim and grid must be positive, got dim={dim}, grid={grid}")
        dd = dict(device=device, dtype=dtype)
        self.channels, self.dim, self.mode, self.grid, self.upsample = channels, dim, mode, (gh, gw), upsample
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, dim, 1, bias=False, **dd),
            nn.BatchNorm2d(dim, **dd),
            nn.ReLU() if mode == "channel" else nn.Identity(),
        )
        if mode == "channel":
            self.head = _RowwiseHead(dim, channels, mid_act=False, **dd)
        else:
            self.head = _RowwiseHead(gh * gw, gh * gw, mid_act=True, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        z = self.reduce(x)  # (B, dim, H, W)
        if self.mode == "channel":
            att = torch.sigmoid(self.head(covariance(z.flatten(2))))  # (B, C, 1, 1)
        else:
            z = F.adaptive_avg_pool2d(z, self.grid)  # (B, dim, gh, gw)
            att = torch.sigmoid(self.head(covariance(z.flatten(2).transpose(1, 2))))  # (B, N, 1, 1)
            att = att.reshape(b, 1, *self.grid)
            if self.upsample == "nearest":
                att = F.interpolate(att, size=(h, w), mode="nearest")
            else:
                att = F.interpolate(att, size=(h, w), mode="bilinear", align_corners=False)
        return x * att.to(x.dtype)

    def extra_repr(self) -> str:
        r = f"{self.channels}, dim={self.dim}, mode={self.mode!r}"
        return r + (f", grid={self.grid}, upsample={self.upsample!r}" if self.mode == "spatial" else "")


@CONTEXTS.register("gsop")
@forwards_options(GSoP, fixed=("mode",))
def _gsop(channels: int, dim: int = 128, feat_size=None, **kw):
    return GSoP(channels, dim=dim, mode="channel", **kw)


@CONTEXTS.register("gsop-spatial")
@forwards_options(GSoP, fixed=("mode",))
def _gsop_spatial(channels: int, dim: int = 128, grid=8, feat_size=None, **kw):
    return GSoP(channels, dim=dim, mode="spatial", grid=grid, **kw)


__all__ = ["GSoP", "covariance"]
