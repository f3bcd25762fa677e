"""Feature-context modules (applied after conv + ReLU inside an ASGE block) and ``create_context``.

Each module maps (B, C, H, W) -> (B, C, H, W). SGE, GSoP and Gather-Excite register themselves here
from their own files; ``none`` is the identity. Your own: ``create_context("my_package.my_module:MyGate",
...)`` or an ``asge.contexts`` entry point (:mod:`asge.layers.plugins`, docs/extending.md).
"""
from __future__ import annotations

from torch import nn

from .registry import Registry


def _adapt_context(factory, name: str):
    """A context class or factory of your own (import path / ``asge.contexts`` entry point), called as the
    built-in ones: ``factory(channels, feat_size=, device=, dtype=, **options)`` (the first three keywords
    only if it takes them); refused unless it maps (B, C, H, W) to (B, C, H, W)."""
    from .plugins import call_plugin, check_shape

    def build(channels: int, *, feat_size=None, device=None, dtype=None, **options) -> nn.Module:
        module = call_plugin(factory, name, "context", (channels,),
                             dict(feat_size=feat_size, device=device, dtype=dtype), options)
        shape = (2, channels, feat_size or 8, feat_size or 8)
        check_shape(module, name, "context", shape, shape, device, dtype)
        return module

    return build


CONTEXTS = Registry("context", group="asge.contexts", adapt=_adapt_context)


@CONTEXTS.register("none")
def _none(channels: int, **kw):
    return nn.Identity()


def create_context(name: str, channels: int, **kwargs) -> nn.Module:
    """Build a context module by name for a ``channels``-wide feature map."""
    return CONTEXTS.create(name, channels, **kwargs)


__all__ = ["CONTEXTS", "create_context"]
