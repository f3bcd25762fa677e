"""Your own pools and context modules, by import path or entry point, without forking asge.

A name that no registry holds is looked up here:

* ``package.module:Name`` imports ``Name`` (a class or a factory function) from ``package.module``
  (installed, on ``PYTHONPATH`` or in the current directory);
* a plain name is searched in the installed packages' entry points, group ``asge.contexts`` or
  ``asge.pools`` (``[project.entry-points."asge.contexts"] mygate = "my_package.my_module:MyGate"``).

The class or factory is called as the built-in ones are (see :func:`call_plugin`), and the module it
returns is run once on a small map to check that it keeps the shape a block needs (:func:`check_shape`).
Everything that goes wrong is a ``ValueError`` of one line naming the module and the reason.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from importlib import metadata
from typing import Callable, Optional

import torch
from torch import nn

IMPORT_PATH_HINT = "or a class by import path, e.g. my_package.my_module:MyGate"


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def import_object(path: str, kind: str) -> Callable:
    """``"package.module:Name"`` -> the object ``Name`` of ``package.module`` (dots after ``:`` walk attributes)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"bad {kind} import path {path!r}: expected package.module:Name")
    if os.getcwd() not in sys.path and "" not in sys.path:   # as `python -m` does; appended: shadows nothing
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module raises while being imported
        raise ValueError(f"cannot use {kind} {path!r}: module {module_name!r} cannot be imported "
                         f"({_reason(e)})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"cannot use {kind} {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"cannot use {kind} {path!r}: {attr!r} is a {type(obj).__name__}, not a class or function")
    return obj


def entry_point_names(group: Optional[str]) -> list[str]:
    """Names that installed packages register in entry-point ``group`` (none when group is None)."""
    return sorted({ep.name for ep in metadata.entry_points(group=group)}) if group else []


def find_plugin(name: str, kind: str, group: Optional[str]) -> Optional[Callable]:
    """The class or factory that ``name`` refers to, or None when it is neither an import path nor an
    entry point of ``group``."""
    if ":" in name:
        return import_object(name, kind)
    for ep in metadata.entry_points(group=group) if group else ():
        if ep.name == name:
            return import_object(ep.value.replace(" ", ""), kind)
    return None


def call_plugin(factory: Callable, name: str, kind: str, args: tuple, conventions: dict, options: dict) -> nn.Module:
    """``factory(*args, **conventions, **options)``, where each of the ``conventions`` keywords (feat_size,
    device, dtype, ...) is passed only if the factory accepts it; ``options`` (the user's) always are."""
    try:
        params = inspect.signature(factory).parameters.values()
        any_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        accepted = {p.name for p in params}
    except (TypeError, ValueError):  # no signature to read (some builtins): pass everything
        any_kw, accepted = True, set()
    kwargs = {k: v for k, v in conventions.items() if any_kw or k in accepted}
    try:
        module = factory(*args, **kwargs, **options)
    except Exception as e:
        given = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in options.items())])
        raise ValueError(f"{kind} {name!r} could not be built as {name.rpartition(':')[2]}({given}): "
                         f"{_reason(e)}") from None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{kind} {name!r} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


@torch.no_grad()
def check_shape(module: nn.Module, name: str, kind: str, shape: tuple, expected: tuple, device=None,
                dtype=None) -> None:
    """Run ``module`` (in eval mode, on a random ``shape`` map drawn from its own generator: the global RNG and
    running statistics are left alone) and refuse it unless the output has shape ``expected``."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype or torch.float32)
    was_training = module.training
    module.eval()
    try:
        out = module(x)
    except Exception as e:
        raise ValueError(f"{kind} {name!r} failed on a {tuple(shape)} map: {_reason(e)}") from None
    finally:
        module.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != tuple(expected):
        raise ValueError(f"{kind} {name!r} must map {tuple(shape)} to {tuple(expected)}, but returned {got}")


__all__ = ["IMPORT_PATH_HINT", "import_object", "entry_point_names", "find_plugin", "call_plugin", "check_shape"]
