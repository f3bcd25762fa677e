"""From a run's config to what it runs on: the device, the data as the run reads it, the network.

Training and using a trained run both start here, so that they build the same network from the same config.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..config import TrainConfig, builds_vgg_blocks
from ..data import load_data
from ..errors import AsgeError
from ..nn.backbones import model_units
from ..nn.local_network import PYTHON_MODEL, BlockUnit, network_of_units
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
    """The network ``cfg`` describes, for data with ``info`` (channels, classes, image size).

    A VGG preset (or ``--channels``) with the ASGE rule and no ``--split`` is the paper's stack of ASGE blocks,
    one module each. Otherwise the network is a chain of units, grouped into modules by ``--split`` and each
    module trained by ``--local-loss``: the VGG blocks (one module each by default), a CIFAR ResNet, a
    torchvision or timm classifier (:data:`asge.nn.local_network.DEFAULT_MODULES` by default); its ``note``
    says how it was cut."""
    if cfg.model == PYTHON_MODEL:
        raise AsgeError("this run's network was given from Python, which a config cannot rebuild: pass it again "
                        "(asge.train.fit(cfg, network=...), asge.load(run, model=...))")
    common = dict(num_classes=info.num_classes, alpha=cfg.alpha, head_features=cfg.head_features,
                  fusion_from=cfg.fusion_from, projection=cfg.projection, seed=cfg.seed)
    if builds_vgg_blocks(cfg.model, cfg.channels):
        blocks = dict(norm=cfg.norm, pool=cfg.pool, goodness=cfg.goodness, dropout=cfg.dropout, context=cfg.context,
                      context_options=cfg.context_options, context_blocks=cfg.context_blocks)
        blocks.update(common, in_channels=info.in_channels, image_size=info.image_size)
        net = ASGENet([int(c) for c in cfg.channels], [bool(d) for d in cfg.downsample], **blocks) \
            if cfg.channels is not None else ASGENet.from_preset(cfg.model, width=cfg.width, **blocks)
        if cfg.split is None and cfg.local_loss == "asge":
            return net
        units = [BlockUnit(b) for b in net.blocks]
        note = f"{'custom channels' if cfg.channels is not None else cfg.model}: {len(units)} ASGE blocks as units"
        split = len(units) if cfg.split is None else cfg.split
    else:
        units, _, note = model_units(cfg.model, in_channels=info.in_channels, image_size=info.image_size,
                                     width=cfg.width, seed=cfg.seed)
        split = cfg.split
    return network_of_units(units, note, input_shape=(info.in_channels, info.image_size, info.image_size),
                            split=split, rule=cfg.local_loss, goodness=cfg.goodness, entry_norm=cfg.module_norm,
                            **common)
