"""A tiny string-keyed registry: ``name -> constructor``, with errors that list the valid keys."""
from __future__ import annotations

from typing import Callable, Optional


class Registry(dict):
    """A dict from name to constructor. ``create(name, ...)`` raises a ValueError naming the valid keys.

    >>> POOLS = Registry("pool")
    >>> @POOLS.register("rms")
    ... def _rms(**kw): ...
    """

    def __init__(self, kind: str, group: Optional[str] = None, adapt: Optional[Callable] = None):
        super().__init__()
        self.kind = kind
        self.group = group    # entry-point group searched for names not registered here (asge.contexts, ...)
        self.adapt = adapt    # adapt(factory, name) -> constructor: wraps a class found by import path / entry point
        self.plugins: dict[str, Callable] = {}   # those found so far, by name (not listed as registered names)

    def register(self, name: str) -> Callable:
        def deco(fn: Callable) -> Callable:
            self[name] = fn
            return fn

        return deco

    def check(self, name: str) -> str:
        """``name`` if registered; an import path (``pkg.module:Name``) or an entry point of ``group`` is
        imported and kept in ``plugins`` (see :mod:`asge.layers.plugins`). Else a ValueError listing the names."""
        if name in self or name in self.plugins:
            return name
        from .plugins import IMPORT_PATH_HINT, entry_point_names, find_plugin
        factory = find_plugin(str(name), self.kind, self.group)
        if factory is None:
            valid = sorted(set(self) | set(entry_point_names(self.group)))
            hint = f"; {IMPORT_PATH_HINT}" if self.group else ""
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(valid)}{hint}")
        self.plugins[name] = self.adapt(factory, name) if self.adapt else factory
        return name

    def create(self, name: str, *args, **kwargs):
        name = self.check(name)
        return (self[name] if name in self else self.plugins[name])(*args, **kwargs)


__all__ = ["Registry"]
