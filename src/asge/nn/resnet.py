"""The CIFAR ResNets of He et al. 2016 (section 4.2): ResNet-20/32/44/56/110, any depth 6n+2, as a list of units.

A 3x3 16-channel stem (conv, BN, ReLU), then three stages of n :class:`BasicBlock` with 16, 32 and 64 channels
(times the width multiplier) at 32, 16 and 8 px for 32 px inputs; the first block of stages 2 and 3 has
stride 2. The global average pool and the classifier are left out (ASGE's heads replace them).

Shortcut: He et al.'s option B. Where a block changes the shape (stride 2, more channels) the shortcut is a 1x1
convolution with that stride followed by BN (a projection); elsewhere it is the identity. (Option A, the
zero-padded identity of the paper's CIFAR experiments, has no parameters: ResNet-20 then has 0.27M parameters
with its classifier. Option B adds C_in C_out + 2 C_out per projection: 576 + 2,176 = 2,752 at any depth.
InfoPro's ResNets use B.)

Units, the cut points of a split: the stem, then each residual block in order: 1 + 3n units.
"""
from __future__ import annotations

import re
from typing import Optional

import torch
from torch import nn

NAMED_DEPTHS = (20, 32, 44, 56, 110)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), conv1 with the block's stride.

    x (B, C_in, H, W) -> (B, C_out, H/stride, W/stride); ``shortcut``: the identity, or a 1x1 conv + BN
    (option B) where the shape changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def blocks_per_stage(name: str) -> int:
    """n of ``resnet{6n+2}``; other names are refused in one line."""
    m = re.fullmatch(r"resnet(\d+)", name)
    depth = int(m.group(1)) if m else 0
    if depth < 8 or (depth - 2) % 6:
        named = ", ".join(f"resnet{d}" for d in NAMED_DEPTHS)
        raise ValueError(f"unknown CIFAR ResNet {name!r}: valid are {named} (any resnet{{6n+2}}); "
                         "ImageNet ResNets are torchvision:resnet18 etc.")
    return (depth - 2) // 6


def resnet_units(name: str, in_channels: int = 3, width: float = 1.0,
                 generator: Optional[torch.Generator] = None) -> list[nn.Module]:
    """The units of CIFAR ResNet ``name`` (``resnet20``, ``resnet32``, ``resnet56``, ``resnet110``, ...):
    [stem, stage 1's n blocks, stage 2's, stage 3's], channels 16/32/64 scaled by ``width``
    (``max(1, round(c * width))``).

    Shapes for (B, in_channels, S, S): stem (B, 16w, S, S); stage s's blocks (B, 16w 2^(s-1), S/2^(s-1), ...).
    Convolutions are initialised He-normal (fan out, ReLU gain) from ``generator`` (None: torch's global RNG),
    BN weights 1 and biases 0.
    """
    n = blocks_per_stage(name)
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    c1, c2, c3 = (max(1, round(c * width)) for c in (16, 32, 64))
    units: list[nn.Module] = [nn.Sequential(conv3x3(in_channels, c1), nn.BatchNorm2d(c1), nn.ReLU(inplace=True))]
    c_in = c1
    for stage, c in enumerate((c1, c2, c3)):
        for i in range(n):
            units.append(BasicBlock(c_in, c, stride=2 if stage > 0 and i == 0 else 1))
            c_in = c
    for unit in units:
        for m in unit.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return units
