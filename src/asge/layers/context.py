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

    build.factory = factory               # read by context_option_keys
    return build


CONTEXTS = Registry("context", group="asge.contexts", adapt=_adapt_context)

#: Keywords that asge passes to every context factory that takes them; not the user's options.
CONVENTIONS = ("feat_size", "device", "dtype")


def forwards_options(target, fixed: tuple = ()):
    """Mark a context factory that passes its ``**kw`` on to ``target`` (a class), setting ``fixed`` itself:
    :func:`context_option_keys` then lists the target's keywords as the options the factory takes."""
    def mark(factory):
        factory.options_target, factory.options_fixed = target, tuple(fixed)
        return factory
    return mark


def _keywords(fn, skip_first: bool) -> tuple[list, bool]:
    """(names of ``fn``'s keyword-passable parameters, whether it takes ``**kwargs``); ``skip_first`` leaves
    out its first positional parameter (the channel count)."""
    import inspect
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [], True
    if skip_first and params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def context_option_keys(name: str):
    """The option keys context ``name`` takes (``--context-option KEY=VALUE``), sorted; None when it takes
    any (a module of your own with ``**kwargs``). ``none`` takes none."""
    name = CONTEXTS.check(name)
    factory = CONTEXTS[name] if name in CONTEXTS else getattr(CONTEXTS.plugins[name], "factory", None)
    if name == "none" or factory is None:
        return [] if name == "none" else None
    names, any_kw = _keywords(factory, skip_first=True)
    target = getattr(factory, "options_target", None)
    if any_kw and target is not None:
        more, any_kw = _keywords(target, skip_first=True)
        names += [n for n in more if n not in getattr(factory, "options_fixed", ())]
    elif any_kw and name in CONTEXTS:
        any_kw = False                    # a built-in's **kw is the conventions below, nothing more
    if any_kw:
        return None
    return sorted(set(names) - set(CONVENTIONS))


def check_context_options(name: str, options) -> None:
    """A ValueError, one line, unless every key of ``options`` is one that context ``name`` takes: the line
    names the module, the bad key and the keys it takes. Called where a training config is validated
    (``TrainConfig.validate``: before any data is read) and by :func:`create_context` (the layers used
    directly); nowhere else needs to."""
    options = dict(options or {})
    if not options:
        return
    keys = context_option_keys(name)
    if keys is None:
        return
    bad = [k for k in options if k not in keys]
    if not bad:
        return
    given = ", ".join(f"{k}={options[k]}" for k in bad)
    if not keys:
        hint = " (choose a context module with --context, e.g. sge)" if name == "none" else ""
        raise ValueError(f"context {name!r} takes no options, but got {given}{hint}")
    factory = CONTEXTS[name] if name in CONTEXTS else getattr(CONTEXTS.plugins[name], "factory", None)
    module = getattr(getattr(factory, "options_target", factory), "__name__", "")
    what = f"context {name!r}" + (f" ({module})" if module and module != name.rpartition(":")[2] else "")
    raise ValueError(f"{what} has no option {bad[0]!r} (got {given}); it takes: {', '.join(keys)}")


@CONTEXTS.register("none")
def _none(channels: int, **kw):
    return nn.Identity()


def create_context(name: str, channels: int, **kwargs) -> nn.Module:
    """Build a context module by name for a ``channels``-wide feature map; options it does not take are
    refused in one line (:func:`check_context_options`)."""
    check_context_options(name, {k: v for k, v in kwargs.items() if k not in CONVENTIONS})
    return CONTEXTS.create(name, channels, **kwargs)


__all__ = ["CONTEXTS", "CONVENTIONS", "create_context", "context_option_keys", "check_context_options",
           "forwards_options"]
