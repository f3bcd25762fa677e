"""Feature-context modules (applied after conv + ReLU inside an ASGE block) and ``create_context``.

Each module maps (B, C, H, W) -> (B, C, H, W). SGE, GSoP and Gather-Excite register themselves here
from their own files; ``none`` is the identity.
"""
from __future__ import annotations

from torch import nn

from .registry import Registry

CONTEXTS = Registry("context")


@CONTEXTS.register("none")
def _none(channels: int, **kw):
    return nn.Identity()


def create_context(name: str, channels: int, **kwargs) -> nn.Module:
    """Build a context module by name for a ``channels``-wide feature map."""
    return CONTEXTS.create(name, channels, **kwargs)


__all__ = ["CONTEXTS", "create_context"]
