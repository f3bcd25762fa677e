"""Prediction heads on globally average-pooled block features: Last, Fusion. (Best needs no head.)"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

STRATEGIES = ("fusion", "last", "best")


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    return strategy


class Heads(nn.Module):
    """Last: one linear layer on GAP(Y_L), C_L -> N. Fusion: the sum of one linear layer per block 2..L
    (block 1 is skipped; with a single block it is used) on GAP(Y_l): sum_l C_l inputs.

    ``feats`` is the list of GAP(Y_l), each (B, C_l); outputs are (B, N).
    """

    def __init__(self, channels: Sequence[int], num_classes: int, generator: Optional[torch.Generator] = None,
                 device=None, dtype=None):
        super().__init__()
        self.fusion_from = 1 if len(channels) > 1 else 0   # 0-based index of the first fused block
        self.last = nn.Linear(channels[-1], num_classes, device=device, dtype=dtype)
        self.fusion = nn.ModuleList(nn.Linear(c, num_classes, device=device, dtype=dtype)
                                    for c in channels[self.fusion_from:])
        for linear in [self.last, *self.fusion]:     # nn.Linear's default init, drawn from ``generator``
            bound = 1.0 / math.sqrt(linear.in_features)
            nn.init.uniform_(linear.weight, -bound, bound, generator=generator)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)

    def last_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.last(feats[-1])

    def fusion_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        out = None
        for head, f in zip(self.fusion, feats[self.fusion_from:]):
            out = head(f) if out is None else out + head(f)
        return out

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(fusion logits, last logits)."""
        return self.fusion_logits(feats), self.last_logits(feats)
