"""Prediction heads on detached block features: Last, Fusion. (Best needs no head.)

What a head reads of block l is ``head_features(Y_l, P_l, kind)``: GAP(Y_l) always first (the Last head reads
only that part), then, for the Fusion head, the block's P_l x P_l patch statistics when ``kind`` asks for them.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .goodness import spatial_goodness

STRATEGIES = ("fusion", "last", "best")
HEAD_FEATURES = ("gap", "goodness", "patch")


def head_feature_dim(channels: int, partition: int, kind: str = "gap") -> int:
    """Width of :func:`head_features` for a ``channels``-wide block with a ``partition`` x ``partition`` grid."""
    return channels if kind == "gap" else channels * (1 + partition * partition)


def head_features(y: torch.Tensor, partition: int, kind: str = "gap") -> torch.Tensor:
    """Features a head reads of one block's Y: (B, C, H, W) -> (B, head_feature_dim(C, P, kind)), float32.

    ``gap``: GAP(Y) (the paper). ``goodness``: GAP(Y) then the patch energies g (the vector the block's own
    fixed projection reads, so a linear head on it can do at least what a_l does). ``patch``: GAP(Y) then the
    mean of Y over each of the P x P patches.
    """
    if kind not in HEAD_FEATURES:
        raise ValueError(f"unknown head features {kind!r}; valid: {', '.join(HEAD_FEATURES)}")
    y = y.float()
    gap = y.mean(dim=(2, 3))
    if kind == "gap":
        return gap
    extra = spatial_goodness(y, partition) if kind == "goodness" else F.adaptive_avg_pool2d(y, partition).flatten(1)
    return torch.cat([gap, extra], dim=1)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    return strategy


class Heads(nn.Module):
    """Last: one linear layer on GAP(Y_L), C_L -> N. Fusion: the sum of one linear layer per block
    ``fusion_from``..L (1-based; the paper skips block 1: 2, the default; with a single block it is used) on
    each block's head features.

    ``channels``: C_l per block; ``feature_dims``: width of each block's head features (default: C_l, GAP only).
    ``feats`` is the list of head features, each (B, feature_dims[l]) starting with GAP(Y_l); outputs (B, N).
    """

    def __init__(self, channels: Sequence[int], num_classes: int, generator: Optional[torch.Generator] = None,
                 feature_dims: Optional[Sequence[int]] = None, fusion_from: int = 2, device=None, dtype=None):
        super().__init__()
        if not 1 <= fusion_from <= max(len(channels), 2):
            raise ValueError(f"fusion_from must be a block in 1..{len(channels)}, got {fusion_from}")
        feature_dims = list(feature_dims or channels)
        self.last_channels = channels[-1]
        self.fusion_from = min(fusion_from - 1, len(channels) - 1)   # 0-based index of the first fused block
        self.last = nn.Linear(channels[-1], num_classes, device=device, dtype=dtype)
        self.fusion = nn.ModuleList(nn.Linear(d, num_classes, device=device, dtype=dtype)
                                    for d in feature_dims[self.fusion_from:])
        for linear in [self.last, *self.fusion]:     # nn.Linear's default init, drawn from ``generator``
            bound = 1.0 / math.sqrt(linear.in_features)
            nn.init.uniform_(linear.weight, -bound, bound, generator=generator)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)

    def last_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.last(feats[-1][:, :self.last_channels])

    def fusion_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        out = None
        for head, f in zip(self.fusion, feats[self.fusion_from:]):
            out = head(f) if out is None else out + head(f)
        return out

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(fusion logits, last logits)."""
        return self.fusion_logits(feats), self.last_logits(feats)
