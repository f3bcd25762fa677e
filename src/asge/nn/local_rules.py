"""Local learning rules: how a locally trained module turns its own output into class scores and a loss.

A rule reads the module's output y (B, C, H, W), never anything after it. ``rule(y)`` gives the module's local
class scores (B, N) (the Best strategy exits with them); ``rule.loss(y, logits, labels)`` is the loss the
module learns from (its gradient reaches only the module and the rule's own parameters).

``asge`` is the paper's rule: the patch goodness of y on a P x P grid, through the fixed random projection,
cross-entropy. :func:`create_rule` builds a rule by name; :data:`LOCAL_RULES` lists the names.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .goodness import GoodnessProjection, spatial_goodness


class LocalRule(nn.Module):
    """Base of the local rules. Subclasses set ``name`` and define :meth:`forward`; :meth:`loss` defaults to
    cross-entropy on the scores.

    Shapes: y (B, C, H, W) -> scores (B, N); loss: 0-dim float32.
    """

    name = ""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, y: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """The module's local loss; ``logits`` is ``self(y)``, already computed by the caller."""
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class GoodnessRule(LocalRule):
    """ASGE: ``a = spatial_goodness(y, P) @ W + b`` with W the fixed (or ``learned``) random projection.

    channels C, ``partition`` P, ``num_classes`` N; ``goodness``: mean or sum of y**2 per patch.
    """

    name = "asge"

    def __init__(self, channels: int, num_classes: int, *, partition: int, goodness: str = "mean",
                 projection: str = "fixed", generator: Optional[torch.Generator] = None, device=None, dtype=None):
        super().__init__()
        self.partition, self.goodness = partition, goodness
        self.projection = GoodnessProjection(channels * partition * partition, num_classes, generator,
                                             device=device, dtype=dtype, kind=projection)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.projection(spatial_goodness(y, self.partition, self.goodness))


#: name -> factory(channels, height, width, num_classes, *, partition, goodness, projection, generator).
LOCAL_RULES: dict[str, Callable[..., LocalRule]] = {
    "asge": lambda channels, height, width, num_classes, **kw: GoodnessRule(channels, num_classes, **kw),
}


def create_rule(name: str, channels: int, height: int, width: int, num_classes: int, *, partition: int,
                goodness: str = "mean", projection: str = "fixed", generator: Optional[torch.Generator] = None,
                device=None, dtype=None) -> LocalRule:
    """The local rule ``name`` for a module whose output is (B, channels, height, width)."""
    if name not in LOCAL_RULES:
        raise ValueError(f"unknown local rule {name!r}; valid: {', '.join(LOCAL_RULES)}")
    return LOCAL_RULES[name](channels, height, width, num_classes, partition=partition, goodness=goodness,
                             projection=projection, generator=generator, device=device, dtype=dtype)
