"""Any network, trained locally: your modules, a named network, or a classifier you built, cut into K modules
that each learn from their own local rule, as an :class:`~asge.nn.model.ASGENet` that ``fit`` trains.

    net = asge.local_network(torchvision.models.resnet18(num_classes=10), split=4,
                             input_shape=(3, 32, 32), num_classes=10)

``split`` says where the modules end: K (contiguous modules balanced by forward compute, cut only at block
boundaries), cut points (unit indices where a new module starts), or, for the CIFAR ResNets, InfoPro's
(stage, block) pairs. :func:`parse_split` reads the command line's ``--split``.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from .backbones import cut_model
from .block import ASGEBlock
from .local_module import LocalModule
from .local_rules import measure_head
from .model import ASGENet
from .split import example_input, split_at, split_units

#: Modules a cut network is split into when no ``split`` is given.
DEFAULT_MODULES = 4
#: A run's ``model`` when its network was given from Python (``fit(cfg, network=...)``): no config rebuilds it.
PYTHON_MODEL = "python"

SplitSpec = Union[int, Sequence[int], Sequence[tuple[int, int]], None]


def check_model_name(name: str) -> str:
    """A network name ``fit`` can build besides the VGG presets: ``resnetN`` (N = 6n + 2), ``torchvision:NAME``
    of the families it cuts, ``timm:NAME`` (timm installed), or ``python`` (a network given from Python).
    ValueError, one line, otherwise."""
    from .backbones import torchvision_family
    from .resnet import blocks_per_stage
    source, _, model = name.rpartition(":")
    if name == PYTHON_MODEL:
        return name
    if source == "" and not model.startswith("resnet"):
        from .presets import PRESETS
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(PRESETS)}, resnetN (N = 6n + 2), "
                         "torchvision:NAME, timm:NAME")
    if source == "":
        blocks_per_stage(model)                      # resnetN, N = 6n + 2; one line otherwise
    elif source == "torchvision":
        torchvision_family(model)
    elif source == "timm":
        try:
            import timm
        except ImportError:
            raise ValueError(f"{name} needs timm, which is not installed: pip install 'asge[timm]'") from None
        if not timm.is_model(model):
            raise ValueError(f"unknown timm model {model!r}: see timm.list_models()")
    else:
        raise ValueError(f"unknown model {name!r}: a VGG preset, resnetN, torchvision:NAME or timm:NAME")
    return name


def parse_split(text: Union[str, SplitSpec]) -> SplitSpec:
    """``"4"`` -> 4 (K modules); ``"3,7,12"`` -> [3, 7, 12] (unit indices where a module starts);
    ``"1.2,2.1"`` -> [(1, 2), (2, 1)] (InfoPro's (stage, block) pairs: a module ends after that block). A
    number, a list of indices or a list of pairs is returned as such (lists as lists)."""
    if text is None or isinstance(text, int):
        return text
    if isinstance(text, (list, tuple)) and text:
        if all(isinstance(c, int) for c in text):
            return list(text)
        if all(isinstance(c, (list, tuple)) and len(c) == 2 for c in text):
            return [(int(c[0]), int(c[1])) for c in text]
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        if not parts:
            raise ValueError
        if len(parts) == 1 and "." not in parts[0]:
            return int(parts[0])
        if all("." in p for p in parts):
            return [tuple(int(v) for v in p.split(".", 1)) for p in parts]
        return [int(p) for p in parts]
    except ValueError:
        pass
    raise ValueError(f"split: expected a number of modules K (e.g. 4), cut points (unit indices where a module "
                     f"starts, e.g. 3,7,12) or (stage.block) pairs (e.g. 1.2,2.1), got {text!r}")


def split_modules(units: Sequence[nn.Module], split: SplitSpec, example: torch.Tensor) -> list[nn.Sequential]:
    """``units`` grouped into modules by ``split`` (see the module docstring); ``example`` (B, C, H, W) is the
    input the balancing measures compute on."""
    split = parse_split(split)
    if isinstance(split, int):
        return split_units(units, split, example)
    return split_at(units, list(split))


def local_network(model: Union[nn.Module, Sequence[nn.Module]], *, input_shape: tuple[int, int, int],
                  num_classes: int, split: SplitSpec = None, rule: str = "asge", alpha: float = 1.0,
                  goodness: str = "mean", head_features: str = "gap", fusion_from: int = 2,
                  projection: str = "fixed", entry_norm: str = "none", seed: int = 0) -> ASGENet:
    """An ASGENet of locally trained modules from ``model``:

    * a list (or ``nn.Sequential`` / ``nn.ModuleList``) of modules run in sequence: each is one module (or
      ``split`` groups them);
    * a torchvision or timm classifier: cut into units at its residual blocks (the stem joins the first; a
      CIFAR stem for inputs of 64 px or less; :func:`asge.nn.backbones.cut_model`), grouped into ``split``
      modules (default :data:`DEFAULT_MODULES`).

    ``input_shape`` (C, H, W) is one input image's; shapes are found by one dry run. Each module learns from
    ``rule`` (:mod:`asge.nn.local_rules`); ``entry_norm`` (``layer``, ``rms``) puts a norm at the entry of
    modules 2..K (:class:`~asge.nn.local_module.LocalModule`); the network's ``note`` says how it was cut.
    """
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"input_shape: square images are expected (C, S, S), got {tuple(input_shape)}")
    if isinstance(model, (list, tuple, nn.ModuleList, nn.Sequential)):
        units, note = list(model), f"{len(model)} units given"
        if split is None:
            split = len(units)
    else:
        cut = cut_model(model, in_channels=c, image_size=h)
        units, note = cut.units, cut.note
    return network_of_units(units, note, input_shape=input_shape, num_classes=num_classes, split=split,
                            rule=rule, alpha=alpha, goodness=goodness, head_features=head_features,
                            fusion_from=fusion_from, projection=projection, entry_norm=entry_norm, seed=seed)


def network_of_units(units: Sequence[nn.Module], note: str, *, input_shape: tuple[int, int, int],
                     num_classes: int, split: SplitSpec = None, rule: str = "asge", alpha: float = 1.0,
                     goodness: str = "mean", head_features: str = "gap", fusion_from: int = 2,
                     projection: str = "fixed", entry_norm: str = "none", seed: int = 0) -> ASGENet:
    """:func:`local_network` once the units are known: group them by ``split`` and wrap the modules."""
    c, h, w = input_shape
    modules = split_modules(units, DEFAULT_MODULES if split is None else split, example_input(units, (c, h, w)))
    net = ASGENet.from_modules(modules, in_channels=c, image_size=h, num_classes=num_classes, alpha=alpha,
                               goodness=goodness, head_features=head_features, fusion_from=fusion_from,
                               projection=projection, rule=rule, entry_norm=entry_norm, seed=seed)
    net.note = note
    return net


class BlockUnit(nn.Module):
    """An ASGE block as one unit of a chain: norm, conv, ReLU, [context], then what it hands on ([pool],
    dropout), without its own goodness projection (the module it joins reads its output by its own rule).
    x (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, block: ASGEBlock):
        super().__init__()
        del block.projection
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.transmit(self.block.features(x))


def describe_modules(net: ASGENet) -> list[dict]:
    """What each module of ``net`` is, for the run's record: its units (cut networks), output shape (C, H, W),
    parameters, forward multiply-accumulates per image, and its local head's parameters and
    multiply-accumulates (the rule of a cut network, the goodness projection of an ASGE block)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rows = []
    for k, block in enumerate(net.blocks):
        if isinstance(block, LocalModule):
            head, body = block.rule, block.body
            units = list(body.unit_range) if isinstance(getattr(body, "unit_range", None), range) else [k]
            row = {"units": [units[0], units[-1]], "out_shape": list(block.out_shape),
                   "parameters": count(block) - count(head),            # its body and entry norm
                   "macs": block.macs}
            cost = measure_head(head, block.out_shape, net.num_classes)
            head_macs, train_macs = cost.macs, cost.train_macs
        else:                                        # an ASGE block: conv (and context), then its projection
            head = block.projection
            row = {"units": [k, k], "out_shape": [block.out_channels, block.out_size, block.out_size],
                   "parameters": count(block) - count(head), "macs": block.conv_macs()}
            head_macs = train_macs = head.weight.numel()          # (C * P * P) x N
        row.update(partition=block.partition, head_parameters=count(head), head_macs=int(head_macs),
                   head_macs_ratio=head_macs / max(row["macs"], 1), head_train_macs=float(train_macs),
                   head_train_macs_ratio=train_macs / max(row["macs"], 1))
        rows.append(row)
    return rows
