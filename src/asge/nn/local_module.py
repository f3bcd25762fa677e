"""A locally trained module cut from any network: a body (any chain of layers) and the local rule that scores
its output. It offers what the local step (``asge.train.local.block_step``) and :class:`~asge.nn.model.ASGENet`
use of an :class:`~asge.nn.block.ASGEBlock`, so that a ResNet stage or a torchvision block trains as a VGG
block does: its input detached, its own loss, its output handed on unchanged."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..layers import create_norm
from .heads import head_feature_dim
from .local_block import LocalBlock
from .local_rules import create_rule


class LocalModule(LocalBlock):
    """``body`` trained by its own local rule; knows nothing of training.

    Args:
        body: any module, x (B, C_in, H_in, W_in) -> Y (B, C_out, H_out, W_out).
        in_shape, out_shape: (C, H, W) of the body's input and output, as a dry run found them
            (:meth:`asge.nn.model.ASGENet.from_modules`).
        num_classes: N; partition: P, patches per side of the rule's goodness grid.
        rule: the local rule's name (:func:`asge.nn.local_rules.create_rule`), with ``goodness``,
            ``projection`` and ``generator`` (draws the rule's projection).
        head_features: what the heads read of Y (:func:`asge.nn.heads.head_features`).
        macs: multiply-accumulates of the body per image on ``in_shape`` (measured), for compute accounting.
        entry_norm: ``none`` (the body sees x as given), or a norm by name (:func:`asge.layers.create_norm`:
            ``layer``, ``rms``) applied to x before the body, learning from this module's loss (``entry``).

    Shapes: x (B, C_in, H_in, W_in) -> Y (B, C_out, H_out, W_out); the output handed on is Y itself (no pooling,
    no dropout: the body does its own downsampling); ``local_logits(Y)``: (B, N); ``head_features(Y)``:
    (B, head_dim). ``in_size`` and ``out_size`` are H_in and H_out (the maps of square images are square).
    """


    def __init__(self, body: nn.Module, *, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int],
                 num_classes: int, partition: int, rule: str = "asge", goodness: str = "mean",
                 projection: str = "fixed", head_features: str = "gap", macs: int = 0, entry_norm: str = "none",
                 generator: Optional[torch.Generator] = None, device=None, dtype=None):
        super().__init__()
        self.entry = None if entry_norm == "none" else create_norm(entry_norm, in_shape[0], device=device,
                                                                   dtype=dtype)
        self.body = body
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.in_channels, self.in_size = in_shape[0], in_shape[1]
        self.out_channels, self.out_size = out_shape[0], out_shape[1]
        self.partition, self.head_kind, self.macs = partition, head_features, int(macs)
        self.head_dim = head_feature_dim(self.out_channels, partition, head_features)
        self.rule = create_rule(rule, *out_shape, num_classes, partition=partition, goodness=goodness,
                                projection=projection, generator=generator, device=device, dtype=dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Y = body(entry(x)) (entry: none by default): (B, C_in, H_in, W_in) -> (B, C_out, H_out, W_out)."""
        return self.body(x if self.entry is None else self.entry(x))

    def local_logits(self, y: torch.Tensor) -> torch.Tensor:
        """The rule's class scores of Y: (B, C_out, H_out, W_out) -> (B, N)."""
        return self.rule(y)

    def local_loss(self, y: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                   label_smoothing: float = 0.0) -> torch.Tensor:
        """The rule's loss (0-dim) of Y, its scores ``logits`` (B, N) and ``labels`` (B,)."""
        return self.rule.loss(y, logits, labels, label_smoothing)

    def transmit(self, y: torch.Tensor, y_square: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """What flows on to the next module: Y itself, as an identity computed in the current grad mode would
        give it: without its graph under ``torch.no_grad()`` (the local step hands it on so, detached), with it
        otherwise (end-to-end backprop through :meth:`forward`). ``y_square`` and ``generator`` are
        :meth:`ASGEBlock.transmit`'s, for its pooling and dropout; here there are none."""
        return y if torch.is_grad_enabled() else y.detach()

    def conv_macs(self) -> int:
        """Multiply-accumulates of the body per image (every convolution and matrix product, measured by
        torch's flop counter on the dry run's input; :meth:`ASGEBlock.conv_macs`' counterpart)."""
        return self.macs

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}, partition={self.partition}, macs={self.macs}"
