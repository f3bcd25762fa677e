"""What a locally trained block offers the training step and the network: its features Y, the local scores
and loss it learns from, what it hands on, what the heads read of Y. :class:`~asge.nn.block.ASGEBlock` (the
paper's VGG block) and :class:`~asge.nn.local_module.LocalModule` (any module with a local rule) are both one.
"""
from __future__ import annotations

import abc
from typing import Optional

import torch
from torch import nn

from .heads import head_features


class LocalBlock(nn.Module, abc.ABC):
    """A block trained by its own loss. Subclasses set ``partition``, ``head_kind``, ``in_channels``,
    ``out_channels``, ``head_dim`` and define the abstract methods.

    Shapes: x (B, C_in, H_in, W_in) -> Y (B, C_out, H, W) -> output handed on; scores (B, N).
    """

    #: Whether ``fused_local_forward`` computes (Y, scores, Y**2) in one pass (the ASGE block's fast path).
    fusable = False

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Y from the block's input."""

    @abc.abstractmethod
    def local_logits(self, y: torch.Tensor) -> torch.Tensor:
        """The block's own class scores of Y (B, N): the Best strategy exits with them."""

    @abc.abstractmethod
    def local_loss(self, y: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                   label_smoothing: float = 0.0) -> torch.Tensor:
        """The loss (0-dim) the block learns from, given Y, its scores and the labels (B,)."""

    @abc.abstractmethod
    def transmit(self, y: torch.Tensor, y_square: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """What flows on to the next block."""

    @abc.abstractmethod
    def conv_macs(self) -> int:
        """Multiply-accumulates of the block per image (compute accounting, pipeline stage balancing)."""

    def head_features(self, y: torch.Tensor) -> torch.Tensor:
        """What the heads read of Y: (B, C_out, H, W) -> (B, head_dim) float32, GAP(Y) first."""
        return head_features(y, self.partition, self.head_kind)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (Y, output handed on)."""
        y = self.features(x)
        return y, self.transmit(y)
