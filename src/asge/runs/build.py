"""From a run's config to what it runs on: the device, the data as the run reads it, the network.

Training and using a trained run both start here, so that they build the same network from the same config.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..config import TrainConfig
from ..data import load_data
from ..errors import AsgeError
from ..nn.model import ASGENet


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; anything else is validated by torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise AsgeError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AsgeError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise AsgeError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AsgeError(f"device {name!r} requested but MPS is not available here; use --device cpu or auto")
    return device


def load_run_data(cfg: TrainConfig, device: torch.device, *, subset="config", download: Optional[bool] = None):
    """The dataset ``cfg`` names, as its run reads it (``subset``: the config's unless given)."""
    return load_data(cfg.dataset, cfg.data_root, download=cfg.download if download is None else download,
                     subset=cfg.subset if subset == "config" else subset, seed=cfg.seed, device=device,
                     input_size=cfg.input_size, num_workers=cfg.num_workers, augment=cfg.augment,
                     test_split=cfg.test_split, skip_unreadable=cfg.skip_unreadable)


def build_model(cfg: TrainConfig, info) -> ASGENet:
    """The network ``cfg`` describes, for data with ``info`` (channels, classes, image size)."""
    common = dict(in_channels=info.in_channels, num_classes=info.num_classes, image_size=info.image_size,
                  alpha=cfg.alpha, norm=cfg.norm, pool=cfg.pool, goodness=cfg.goodness, dropout=cfg.dropout,
                  context=cfg.context, context_options=cfg.context_options, context_blocks=cfg.context_blocks,
                  head_features=cfg.head_features, fusion_from=cfg.fusion_from, projection=cfg.projection,
                  seed=cfg.seed)
    if cfg.channels is not None:
        return ASGENet([int(c) for c in cfg.channels], [bool(d) for d in cfg.downsample], **common)
    return ASGENet.from_preset(cfg.model, width=cfg.width, **common)
