"""The batches a benchmark steps on: random images of the data's shape, or real training batches."""
from __future__ import annotations

import torch

from ..config import TrainConfig
from ..errors import AsgeError


def synthetic_batches(n: int, batch_size: int, in_channels: int, size: int, num_classes: int, seed: int,
                      device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of random images (per-image RMS 1, as the datasets yield) and random labels."""
    from ..data import rms_normalize
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(batch_size, in_channels, size, size, generator=g)
        y = torch.randint(0, num_classes, (batch_size,), generator=g)
        out.append((rms_normalize(x).to(device), y.to(device)))
    return out


def real_batches(cfg: TrainConfig, n: int, device: torch.device):
    from ..runs.build import load_run_data
    data = load_run_data(cfg, device, download=False)
    out = []
    while len(out) < n:
        for xy in data.train.batches(cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed + len(out),
                                     device=device, drop_last=True):
            out.append(xy)
            if len(out) == n:
                break
        if not out:
            raise AsgeError(f"{cfg.dataset}: fewer training images than one batch of {cfg.batch_size}")
    return out, data.info


#: The side of synthetic images for a network that is not a VGG preset: CIFAR's, which the CIFAR ResNets take.
SYNTHETIC_SIZE = 32


def synthetic_size(cfg: TrainConfig) -> int:
    """The side of ``cfg``'s synthetic images: ``input_size``, else the VGG preset's, else :data:`SYNTHETIC_SIZE`."""
    from ..nn.presets import PRESETS
    return cfg.input_size or (PRESETS[cfg.model]["image_size"] if cfg.model in PRESETS else SYNTHETIC_SIZE)


def bench_batches(cfg: TrainConfig, n: int, device: torch.device):
    """``n`` training batches of ``cfg.batch_size`` (synthetic, or from ``cfg.dataset``) and the data's info."""
    from ..data import DatasetInfo
    if cfg.dataset == "synthetic":
        size = synthetic_size(cfg)
        info = DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=size)
        batches = synthetic_batches(n, cfg.batch_size, info.in_channels, size, info.num_classes, cfg.seed, device)
    else:
        batches, info = real_batches(cfg, n, device)
    if cfg.channels_last:
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    return batches, info
