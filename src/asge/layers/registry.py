"""A tiny string-keyed registry: ``name -> constructor``, with errors that list the valid keys."""
from __future__ import annotations

from typing import Callable


class Registry(dict):
    """A dict from name to constructor. ``create(name, ...)`` raises a ValueError naming the valid keys.

    >>> POOLS = Registry("pool")
    >>> @POOLS.register("rms")
    ... def _rms(**kw): ...
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable:
        def deco(fn: Callable) -> Callable:
            self[name] = fn
            return fn

        return deco

    def check(self, name: str) -> str:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self))}")
        return name

    def create(self, name: str, *args, **kwargs):
        return self[self.check(name)](*args, **kwargs)


__all__ = ["Registry"]
