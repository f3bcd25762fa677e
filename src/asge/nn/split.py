"""Cutting a chain of units (a network's stem and blocks, in order) into K contiguous locally trained modules:
balanced by forward compute (:func:`split_units`) or at given cut points (:func:`split_at`).

Each module is an ``nn.Sequential`` whose children are named by their unit's index in the whole chain (so a
checkpoint's keys say which units a module holds) and whose ``unit_range`` is that range of unit indices.
"""
from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict
from typing import NamedTuple, Sequence, Union

import torch
from torch import nn

from .resnet import BasicBlock


class Trace(NamedTuple):
    """What a dry run saw of one module of a chain: input and output (C, H, W), multiply-accumulates per image."""
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int


@contextlib.contextmanager
def evaluating(*modules: nn.Module):
    """Eval mode and no gradients inside; every submodule's own train/eval mode is put back afterwards."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def example_input(modules: Sequence[nn.Module], shape: tuple[int, int, int], batch: int = 2) -> torch.Tensor:
    """Zeros (batch, C, H, W) of ``shape`` on the device and in the dtype of the first parameter of
    ``modules`` (torch's defaults when they have none): the input of a dry run through them."""
    first = next((p for m in modules for p in m.parameters()), None)
    return torch.zeros(batch, *shape, device=None if first is None else first.device,
                       dtype=None if first is None else first.dtype)


def trace_chain(modules: Sequence[nn.Module], example: torch.Tensor) -> list[Trace]:
    """Run ``example`` (B, C, H, W) through ``modules`` in turn, once: each module's input and output shapes and
    its multiply-accumulates per image (convolutions and matrix products, torch's flop counter: the count on
    ``example`` divided by B, so work done once per batch, which :func:`asge.nn.flops.forward_macs` leaves
    out, is shared among the B images; none of torchvision's, timm's or the CIFAR ResNets' blocks has such
    work). In eval mode and without gradients; every submodule's
    train/eval mode is restored afterwards. A module that fails, or whose output is not a (B, C, H, W) map,
    is refused with a ValueError naming it (1-based)."""
    from torch.utils.flop_counter import FlopCounterMode
    traces, x = [], example
    with evaluating(*modules):
        for k, module in enumerate(modules, 1):
            try:
                with FlopCounterMode(display=False) as counter:
                    y = module(x)
            except Exception as e:
                raise ValueError(f"module {k} fails on a {tuple(x.shape)} input: "
                                 f"{str(e).strip().splitlines()[0]}") from e
            if not isinstance(y, torch.Tensor) or y.dim() != 4:
                got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise ValueError(f"module {k} outputs {got}; a locally trained module must output a (B, C, H, W) map")
            traces.append(Trace(tuple(x.shape[1:]), tuple(y.shape[1:]), counter.get_total_flops() // (2 * x.shape[0])))
            x = y
    return traces


def balanced_ranges(costs: Sequence[float], k: int) -> list[range]:
    """Cut ``costs`` (one per unit) into ``k`` contiguous non-empty ranges whose largest sum is the least
    possible; of the cuts that reach it, the most even one (least sum of squared range sums). Two exact
    dynamic programmes over (ranges, units), O(k n^2)."""
    n = len(costs)
    check_count(k, n)
    prefix = list(itertools.accumulate(costs, initial=0))
    inf = float("inf")
    # worst[j][i]: the least largest sum cutting units 0..i-1 into j ranges
    worst = [[inf] * (n + 1) for _ in range(k + 1)]
    worst[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            worst[j][i] = min(max(worst[j - 1][s], prefix[i] - prefix[s]) for s in range(j - 1, i))
    limit = worst[k][n]
    # spread[j][i]: the least sum of squares doing so with no range over the limit; start[j][i]: its last range's start
    spread = [[inf] * (n + 1) for _ in range(k + 1)]
    start = [[0] * (n + 1) for _ in range(k + 1)]
    spread[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for s in range(j - 1, i):
                c = prefix[i] - prefix[s]
                if c <= limit and spread[j - 1][s] + c * c < spread[j][i]:
                    spread[j][i], start[j][i] = spread[j - 1][s] + c * c, s
    ranges, i = [], n
    for j in range(k, 0, -1):
        ranges.append(range(start[j][i], i))
        i = start[j][i]
    return ranges[::-1]


def check_count(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"cannot cut {n} units into {k} modules: K must be between 1 and {n} "
                         "(one unit at least per module)")


def group(units: Sequence[nn.Module], ranges: Sequence[range]) -> list[nn.Sequential]:
    """One ``nn.Sequential`` per range, children named by unit index, with its ``unit_range``."""
    modules = []
    for r in ranges:
        module = nn.Sequential(OrderedDict((str(i), units[i]) for i in r))
        module.unit_range = r
        modules.append(module)
    return modules


def split_units(units: Sequence[nn.Module], k: int, example_input: torch.Tensor) -> list[nn.Sequential]:
    """``k`` contiguous modules of ``units`` whose largest forward compute (multiply-accumulates per image on
    ``example_input`` (B, C, H, W), measured per unit by :func:`trace_chain`) is the least possible (and, of
    the splits that reach it, the most even: :func:`balanced_ranges`)."""
    check_count(k, len(units))
    costs = [t.macs for t in trace_chain(units, example_input)]
    return group(units, balanced_ranges(costs, k))


Cut = Union[int, tuple[int, int]]


def split_at(units: Sequence[nn.Module], cuts: Sequence[Cut]) -> list[nn.Sequential]:
    """Modules starting at the given cut points: ``cuts`` are unit indices where a new module starts
    (increasing, each in 1..n-1), or, for the CIFAR ResNets' units (:func:`asge.nn.resnet.resnet_units`),
    InfoPro's (stage, block) pairs: a module ends after block ``block`` (0-based) of stage ``stage``
    (1-based), (0, 0) after the stem; a pair naming the last block (the network's end) adds no cut."""
    n = len(units)
    if cuts and all(isinstance(c, (tuple, list)) for c in cuts):
        cuts = infopro_cuts(units, cuts)
    elif not all(isinstance(c, int) for c in cuts):
        raise ValueError(f"cut points must be all unit indices or all (stage, block) pairs, got {list(cuts)}")
    if list(cuts) != sorted(set(cuts)) or any(not 1 <= c < n for c in cuts):
        raise ValueError(f"cut points {list(cuts)} must be increasing unit indices in 1..{n - 1} "
                         f"(where a new module starts; {n} units)")
    bounds = [0, *cuts, n]
    return group(units, [range(lo, hi) for lo, hi in zip(bounds, bounds[1:])])


def infopro_cuts(units: Sequence[nn.Module], pairs: Sequence[Sequence[int]]) -> list[int]:
    """InfoPro's (stage, block) pairs as unit indices where a new module starts, for a CIFAR ResNet's units
    [stem, stage 1's n blocks, stage 2's, stage 3's]."""
    n, rest = divmod(len(units) - 1, 3)
    if rest or n < 1 or not all(isinstance(u, BasicBlock) for u in units[1:]):
        raise ValueError("(stage, block) cut points apply to a CIFAR ResNet's units (asge.nn.resnet.resnet_units): "
                         "a stem and three stages of residual blocks")
    cuts = []
    for stage, block in pairs:
        if (stage, block) != (0, 0) and not (1 <= stage <= 3 and 0 <= block < n):
            raise ValueError(f"no block ({stage}, {block}) in a ResNet of 3 stages of {n} blocks: stage 1..3 "
                             f"with block 0..{n - 1}, or (0, 0) for the stem")
        end = 0 if stage == 0 else (stage - 1) * n + block + 1      # the unit index the module ends at
        if end < len(units) - 1:
            cuts.append(end + 1)
    return cuts
