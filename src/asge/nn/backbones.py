"""The feature chains of torchvision and timm classifiers, cut into units at block boundaries, for ASGE's
locally trained modules (:func:`asge.nn.split.split_units` groups the units, :meth:`ASGENet.from_modules`
wraps them). Models are built without pretrained weights (nothing is downloaded); the global pool and the
classifier are dropped (ASGE's heads replace them).

Units, each a chain of layers ending at a block boundary (the stem joins the first unit; layers after the
last block, e.g. a final 1x1 conv or norm, join the last unit):

* torchvision ResNet / ResNeXt / Wide ResNet: each BasicBlock or Bottleneck of layer1..layer4.
* torchvision VGG: each convolution with its BN, ReLU and the max-pool after it.
* torchvision MobileNet v2 / v3: each InvertedResidual. EfficientNet (v1, v2): each MBConv / FusedMBConv.
* torchvision ConvNeXt: each CNBlock; a stage's downsampling layer joins the stage's first block.
* torchvision RegNet: each ResBottleneckBlock of the trunk.
* timm, three layouts: conv1/bn1/act1/maxpool + layer1..4 (ResNet family); stem + stages (ConvNeXt, NFNet,
  ByobNet, ...); conv_stem/bn1 + blocks (EfficientNet, MobileNet v3, ...). A stage that is an ``nn.Sequential``
  (or downsample + blocks, as ConvNeXt's) is cut at its blocks, any other stage is one unit. The chain is
  checked against the model's own ``forward_features`` on one random batch; a model it does not reproduce is
  refused.

Inputs of 64 px or less (:data:`SMALL_INPUT`): the stem's first convolution becomes a 3x3 stride-1 conv and
its max-pools are dropped (a CIFAR stem), said by ``Units.small_stem`` and ``Units.note``. Inputs with other
than 3 channels: the first convolution is rebuilt for them.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import nn

from .resnet import resnet_units
from .split import evaluating

SMALL_INPUT = 64          # inputs up to this side get a CIFAR stem
TORCHVISION_FAMILIES = ("resnet", "vgg", "mobilenetv2", "mobilenetv3", "efficientnet", "convnext", "regnet")
TIMM_LAYOUTS = "conv1/bn1/act1/maxpool + layer1..4, stem + stages, or conv_stem/bn1 + blocks"


class Units(NamedTuple):
    """A network's feature chain cut into units; ``small_stem``: the stem was made a CIFAR stem (3x3 stride-1
    conv, no max-pool); ``note``: one line saying what was built, for the run's record."""
    units: list[nn.Module]
    small_stem: bool
    note: str


def model_units(spec: str, *, in_channels: int, image_size: int, width: float = 1.0,
                seed: Optional[int] = None) -> Units:
    """Units of ``resnet20`` (any CIFAR ResNet, :mod:`asge.nn.resnet`), ``torchvision:NAME`` or ``timm:NAME``.
    ``width``: the CIFAR ResNets' width multiplier, torchvision MobileNets' ``width_mult``; refused elsewhere.
    ``seed``: initialise the parameters from ``torch.manual_seed(seed)`` without touching torch's global RNG."""
    source, _, name = spec.rpartition(":")
    if source not in ("", "torchvision", "timm"):
        raise ValueError(f"unknown model source {source!r} in {spec!r}: resnetN, torchvision:NAME or timm:NAME")
    widened = source == "" or (source == "torchvision" and name.startswith("mobilenet"))
    if width != 1.0 and not widened:
        raise ValueError(f"a width multiplier applies to the CIFAR ResNets and torchvision MobileNets, not {spec}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if source == "":
            units = resnet_units(name, in_channels, width)
            return Units(units, False, f"{name}: CIFAR ResNet, {len(units)} units (stem, then each residual "
                                       "block), option B shortcuts")
        if source == "torchvision":
            return torchvision_units(name, in_channels, image_size, **({"width_mult": width} if widened else {}))
        return timm_units(name, in_channels, image_size)


def cut_model(model: nn.Module, *, in_channels: int, image_size: int) -> Units:
    """Units of a classifier object you built: a torchvision model of :data:`TORCHVISION_FAMILIES` or a timm
    model of the layouts :data:`TIMM_LAYOUTS` (its stem adapted to the input as for the named models: the
    model is changed in place). Anything else: ValueError, one line saying what can be cut."""
    source = type(model).__module__
    label = type(model).__name__
    if source.startswith("torchvision.models"):
        return torchvision_model_units(model, in_channels, image_size, label)
    if source.startswith("timm."):
        return timm_model_units(model, in_channels, image_size, label)
    raise ValueError(f"cannot cut a {label} ({source}) into a chain of modules: give the modules as a list run in "
                     f"sequence, or a torchvision classifier of the families {', '.join(TORCHVISION_FAMILIES)}, "
                     f"or a timm model laid out as {TIMM_LAYOUTS}")


# -- torchvision ----------------------------------------------------------------------------------------------

def torchvision_blocks() -> tuple[type, ...]:
    from torchvision.models import convnext, efficientnet, mobilenetv2, mobilenetv3, regnet, resnet
    return (resnet.BasicBlock, resnet.Bottleneck, mobilenetv2.InvertedResidual, mobilenetv3.InvertedResidual,
            efficientnet.MBConv, efficientnet.FusedMBConv, convnext.CNBlock, regnet.ResBottleneckBlock)


def torchvision_family(name: str) -> str:
    """The family of torchvision classifier ``name`` (its module: ``resnet``, ``vgg``, ...), one of
    :data:`TORCHVISION_FAMILIES`; an unknown name or another family: ValueError, one line. Builds nothing."""
    from torchvision import models
    if name not in models.list_models(module=models):
        raise ValueError(f"unknown torchvision classifier {name!r}: see torchvision.models.list_models()")
    family = models.get_model_builder(name).__module__.rsplit(".", 1)[-1]
    if family not in TORCHVISION_FAMILIES:
        raise ValueError(f"torchvision:{name} ({family}) is not a chain of convolutional blocks this cuts; "
                         f"expected a model of the families {', '.join(TORCHVISION_FAMILIES)}")
    return family


def torchvision_units(name: str, in_channels: int = 3, image_size: int = 224, **kwargs) -> Units:
    """Units of torchvision classifier ``name`` (``resnet18``, ``vgg11_bn``, ``mobilenet_v2``, ...; ``kwargs``
    go to its builder), for (B, ``in_channels``, ``image_size``, ``image_size``) inputs."""
    from torchvision import models
    torchvision_family(name)
    model = models.get_model(name, weights=None, **kwargs)
    return torchvision_model_units(model, in_channels, image_size, f"torchvision:{name}")


def torchvision_model_units(model: nn.Module, in_channels: int, image_size: int, label: str) -> Units:
    """Units of a torchvision classifier object of :data:`TORCHVISION_FAMILIES`; ``label`` names it in the note."""
    family = type(model).__module__.rsplit(".", 1)[-1]
    if family not in TORCHVISION_FAMILIES:
        raise ValueError(f"{label} ({family}) is not a chain of convolutional blocks this cuts; expected a model "
                         f"of the families {', '.join(TORCHVISION_FAMILIES)}")
    small = image_size <= SMALL_INPUT
    if family == "vgg":                              # no blocks: cut before each conv
        _, changed = adapt_stem(model.features, ["0"], in_channels, small=False)
        units = vgg_units(model.features)
        changed += ["no stem to replace (3x3 stride-1 convs throughout)"] if small else []
        return Units(units, False, note(label, units, "each conv with its BN, ReLU, max-pool", image_size, changed))
    if family == "resnet":
        stem_names, owner, rest = ["conv1", "bn1", "relu", "maxpool"], model, [model.layer1, model.layer2,
                                                                              model.layer3, model.layer4]
    elif family == "regnet":
        stem_names, owner, rest = ["stem"], model, [model.trunk_output]
    else:
        stem_names, owner, rest = ["0"], model.features, list(model.features)[1:]
    stem, changed = adapt_stem(owner, stem_names, in_channels, small)
    is_block = lambda m: isinstance(m, torchvision_blocks())  # noqa: E731
    units = chain_units([stem, *rest], is_block)
    return Units(units, small, note(label, units, "each block; the stem joins the first", image_size, changed))


def vgg_units(features: nn.Sequential) -> list[nn.Module]:
    """VGG's ``features`` cut before each convolution."""
    groups: list[list[nn.Module]] = []
    for layer in features:
        if isinstance(layer, nn.Conv2d) or not groups:
            groups.append([])
        groups[-1].append(layer)
    return [nn.Sequential(*g) for g in groups]


def chain_units(layers: Sequence[nn.Module], is_block: Callable[[nn.Module], bool]) -> list[nn.Module]:
    """Cut a chain of ``layers`` at block boundaries: every block ends a unit; layers before a block (a stem,
    a downsampling layer) join it, layers after the last block join the last unit. An ``nn.Sequential`` that
    holds blocks (a stage) is entered (its children run in turn)."""
    units: list[nn.Module] = []
    pending: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        if is_block(m):
            units.append(join([*pending, m]))
            pending.clear()
        elif isinstance(m, nn.Sequential) and any(is_block(c) for c in m.modules()):
            for child in m:
                visit(child)
        else:
            pending.append(m)

    for layer in layers:
        visit(layer)
    if not units:
        raise ValueError("no block found to cut the network at")
    if pending:
        units[-1] = join([units[-1], *pending])
    return units


def join(modules: Sequence[nn.Module]) -> nn.Module:
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def note(model: str, units: Sequence[nn.Module], how: str, image_size: int, changed: Sequence[str]) -> str:
    """One line for the run's record: the model, its units, what was changed for the input."""
    said = f"{model}: {len(units)} units ({how})"
    return said + (f"; {image_size} px input: " + ", ".join(changed) if changed else "")


# -- the stem ------------------------------------------------------------------------------------------------

def adapt_stem(owner: nn.Module, names: Sequence[str], in_channels: int,
               small: bool) -> tuple[nn.Sequential, list[str]]:
    """The stem, ``owner``'s children ``names`` in order, as one ``nn.Sequential``, with its first convolution
    rebuilt for ``in_channels`` (if it has other) and, if ``small``, made a 3x3 stride-1 conv, and its max-pools
    dropped; the changed modules are put back into ``owner`` too (so its own forward sees them). Returns (stem,
    what changed, in words)."""
    stem = nn.Sequential(*[owner.get_submodule(n) for n in names])
    path, conv = next(((p, m) for p, m in stem.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None:
        raise ValueError("no convolution found in the stem")
    changes = small or conv.in_channels != in_channels
    if changes and (type(conv) is not nn.Conv2d or conv.groups != 1 or conv.dilation != (1, 1)
                    or conv.padding_mode != "zeros"):
        raise ValueError(f"its stem's first convolution is a {type(conv).__name__} (groups {conv.groups}, "
                         f"dilation {conv.dilation}), which a plain conv cannot replace for {in_channels}-channel "
                         f"or small inputs; use 3-channel inputs over {SMALL_INPUT} px")
    said = []
    if changes:
        k, s, p = (3, 1, 1) if small else (conv.kernel_size, conv.stride, conv.padding)
        new = nn.Conv2d(in_channels, conv.out_channels, k, stride=s, padding=p, bias=conv.bias is not None,
                        device=conv.weight.device, dtype=conv.weight.dtype)
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
        set_submodule(stem, path, new)
        if small:
            said.append(f"the stem's {conv.kernel_size[0]}x{conv.kernel_size[1]} stride-{conv.stride[0]} conv "
                        "became 3x3 stride-1")
        if conv.in_channels != in_channels:
            said.append(f"the first conv takes {in_channels}-channel input")
    pools = [p for p, m in stem.named_modules() if isinstance(m, nn.MaxPool2d)] if small else []
    for p in pools:
        set_submodule(stem, p, nn.Identity())
    if pools:
        said.append("the stem's max-pool dropped")
    for i, n in enumerate(names):
        set_submodule(owner, n, stem[i])
    return stem, said


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


# -- timm ----------------------------------------------------------------------------------------------------

def timm_units(name: str, in_channels: int = 3, image_size: int = 224, **kwargs) -> Units:
    """Units of timm model ``name`` (``kwargs`` go to ``timm.create_model``), for (B, ``in_channels``,
    ``image_size``, ``image_size``) inputs; checked against the model's ``forward_features``."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"timm:{name} needs timm, which is not installed: pip install timm") from None
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}: see timm.list_models()")
    model = timm.create_model(name, pretrained=False, in_chans=in_channels, **kwargs)
    return timm_model_units(model, in_channels, image_size, f"timm:{name}")


def timm_model_units(model: nn.Module, in_channels: int, image_size: int, label: str) -> Units:
    """Units of a timm model object of the layouts :data:`TIMM_LAYOUTS`; ``label`` names it in messages."""
    name = label.split(":", 1)[-1]
    stem_names, stages, tail = timm_layout(model, name)
    small = image_size <= SMALL_INPUT
    stem, changed = adapt_stem(model, stem_names, in_channels, small)
    first = next(model.parameters())
    example = torch.randn(2, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0)
                          ).to(device=first.device, dtype=first.dtype)
    if small and not runs(stem, example):
        raise ValueError(f"timm:{name}: its stem fails once its first conv is 3x3 stride-1 for {image_size} px "
                         f"inputs (a stem of parallel branches?); use inputs over {SMALL_INPUT} px")
    for fine in (True, False):
        for ending in ([], tail) if tail else ([],):
            units = [b for stage in stages for b in (stage_blocks(stage) if fine else [stage])]
            units[0] = join([stem, units[0]])
            units[-1] = join([units[-1], *ending])
            if reproduces(model, units, example):
                how = "each block" if len(units) > len(stages) else "each stage"
                return Units(units, small, note(label, units, f"{how}; the stem joins the first", image_size, changed))
    raise ValueError(f"timm:{name}: its stem and stages do not reproduce its forward_features as a chain; "
                     f"expected {TIMM_LAYOUTS} run in order")


def timm_layout(model: nn.Module, name: str) -> tuple[list[str], list[nn.Module], list[nn.Module]]:
    """(the stem's attribute names, the stages in order, the layers after them) of a timm model's layout."""
    def present(*names):
        return [n for n in names if isinstance(getattr(model, n, None), nn.Module)
                and not isinstance(getattr(model, n), nn.Identity)]

    def sequential(n):
        return isinstance(getattr(model, n, None), nn.Sequential)
    layers = [f"layer{i}" for i in range(1, 5)]
    if len(present("conv1", "bn1", "act1", *layers)) == 7 and hasattr(model, "maxpool"):
        return ["conv1", "bn1", "act1", "maxpool"], [getattr(model, n) for n in layers], []
    if present("stem") and sequential("stages"):
        tail = present("norm_pre", "final_conv", "final_act")
        return ["stem"], list(model.stages), [getattr(model, n) for n in tail]
    if present("conv_stem", "bn1") == ["conv_stem", "bn1"] and sequential("blocks"):
        tail = present("conv_head", "bn2")
        return ["conv_stem", "bn1", *present("act1")], list(model.blocks), [getattr(model, n) for n in tail]
    raise ValueError(f"timm:{name} ({type(model).__name__}) is not a chain this cuts: expected {TIMM_LAYOUTS}")


def stage_blocks(stage: nn.Module) -> list[nn.Module]:
    """A timm stage's blocks in order: an ``nn.Sequential``'s children, a downsample + blocks stage's blocks
    (the downsampling joining the first), else the stage itself."""
    if isinstance(stage, nn.Sequential) and len(stage) > 0:
        return list(stage)
    blocks = getattr(stage, "blocks", None)
    others = {n for n, m in stage.named_children() if not isinstance(m, nn.Identity)} - {"blocks", "downsample"}
    if isinstance(blocks, nn.Sequential) and len(blocks) > 0 and not others:
        return [join([getattr(stage, "downsample", nn.Identity()), blocks[0]]), *list(blocks)[1:]]
    return [stage]


def reproduces(model: nn.Module, units: Sequence[nn.Module], example: torch.Tensor) -> bool:
    """Whether running ``units`` in turn gives the model's ``forward_features`` (eval mode, no gradients)."""
    try:
        with evaluating(model):
            want, got = model.forward_features(example), example
            for unit in units:
                got = unit(got)
    except Exception:                     # any failure of a layout: the next layout is tried
        return False
    return isinstance(want, torch.Tensor) and want.shape == got.shape and torch.allclose(want, got, 1e-4, 1e-5)


def runs(module: nn.Module, example: torch.Tensor) -> bool:
    """Whether ``module(example)`` runs (eval mode, no gradients)."""
    try:
        with evaluating(module):
            module(example)
    except Exception:
        return False
    return True
