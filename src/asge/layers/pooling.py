"""Pooling layers: RMS pooling (the ASGE seed's choice) and the ``create_pool`` factory.

SoftPool lives in :mod:`asge.layers.softpool` and registers itself here under ``"soft"``. Your own:
``create_pool("my_package.my_module:MyPool")`` or an ``asge.pools`` entry point (:mod:`asge.layers.plugins`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry


def _adapt_pool(factory, name: str):
    """A pool class or factory of your own (import path / ``asge.pools`` entry point), called as the built-in
    ones: ``factory(kernel_size=, stride=, **options)`` (those two only if it takes them); refused unless it
    maps (B, C, H, W) to what ``nn.AvgPool2d(kernel_size, stride)`` would."""
    from .plugins import call_plugin, check_shape

    def build(kernel_size=2, stride=None, **options) -> nn.Module:
        module = call_plugin(factory, name, "pool", (), dict(kernel_size=kernel_size, stride=stride), options)
        side = (8 - kernel_size) // (stride or kernel_size) + 1
        check_shape(module, name, "pool", (2, 4, 8, 8), (2, 4, side, side))
        return module

    return build


POOLS = Registry("pool", group="asge.pools", adapt=_adapt_pool)


def rms_pool2d(x: torch.Tensor, kernel_size=2, stride=None, padding=0, ceil_mode: bool = False,
               eps: float = 1e-6, square: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sqrt(mean over each window of x**2 + eps)``. x: (B, C, H, W) -> (B, C, H', W') as ``avg_pool2d``.

    Keeps the activation energy that goodness measures. Padding counts as zeros in the mean
    (``count_include_pad=True``), like ``avg_pool2d``'s default. ``square``: ``x.float()**2`` if the caller
    already has it (saves a pass over x).
    """
    sq = F.avg_pool2d(x.float().square() if square is None else square, kernel_size, stride, padding,
                      ceil_mode=ceil_mode)
    return torch.sqrt(sq + eps).to(x.dtype)


class RMSPool2d(nn.Module):
    """Root-mean-square pooling. Input (B, C, H, W) -> output (B, C, H', W'), shapes as ``nn.AvgPool2d``."""

    def __init__(self, kernel_size=2, stride=None, padding=0, ceil_mode: bool = False, eps: float = 1e-6):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.eps = ceil_mode, eps

    def forward(self, x: torch.Tensor, square: Optional[torch.Tensor] = None) -> torch.Tensor:
        return rms_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.eps, square)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, eps={self.eps}"


@POOLS.register("rms")
def _rms(kernel_size=2, stride=None, **kw):
    return RMSPool2d(kernel_size, stride, **kw)


@POOLS.register("avg")
def _avg(kernel_size=2, stride=None, **kw):
    return nn.AvgPool2d(kernel_size, stride, **kw)


@POOLS.register("max")
def _max(kernel_size=2, stride=None, **kw):
    return nn.MaxPool2d(kernel_size, stride, **kw)


def create_pool(name: str, kernel_size=2, stride: Optional[int] = None, **kwargs) -> nn.Module:
    """Build a 2-D pooling layer by name (``rms``, ``avg``, ``max``, ``soft``, ...)."""
    return POOLS.create(name, kernel_size=kernel_size, stride=stride, **kwargs)


__all__ = ["POOLS", "RMSPool2d", "rms_pool2d", "create_pool"]
