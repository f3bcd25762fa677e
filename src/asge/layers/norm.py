"""Normalisations used at the entry of an ASGE block, and the ``create_norm`` factory."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

NORMS = Registry("norm")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dimension at every position (gamma=1, beta=0 at init).

    x: (B, C, H, W) -> (B, C, H, W). Equal to ``nn.LayerNorm(C)`` applied to ``x.permute(0, 2, 3, 1)``.
    """

    def __init__(self, channels: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The normalisation without gamma and beta: (B, C, H, W) -> (B, C, H, W)."""
        return F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), None, None, self.eps).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


class RMSScale(nn.Module):
    """Divide each sample by its root-mean-square over (C, H, W). No parameters. (B, C, H, W) -> same."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean(x^2) as ||x||^2 / n: one read of x (the square-then-mean wrote a copy of it first)
        ms = torch.linalg.vector_norm(x, dim=(1, 2, 3), keepdim=True, dtype=torch.float32).square() / x[0].numel()
        return (x * ms.add(self.eps).rsqrt()).to(x.dtype)


@NORMS.register("layer")
def _layer(channels: int, **kw):
    return ChannelLayerNorm(channels, **kw)


@NORMS.register("rms")
def _rms(channels: int, **kw):
    return RMSScale()


@NORMS.register("none")
def _none(channels: int, **kw):
    return nn.Identity()


def create_norm(name: str, channels: int, **kwargs) -> nn.Module:
    """Build a block-entry norm by name: ``layer`` (default), ``rms`` or ``none``."""
    return NORMS.create(name, channels, **kwargs)


__all__ = ["NORMS", "ChannelLayerNorm", "RMSScale", "create_norm"]
