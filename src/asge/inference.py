"""``asge.load``: a trained network, ready to classify images, from a run directory or an exported file.

    net = asge.load("runs/fm-asge")            # or "model.safetensors" written by `asge export`
    x = net.preprocess(["shoe.png", "shirt.jpg"])          # float32 (2, C, S, S)
    probs = net.predict(x, strategy="best").softmax(1)     # (2, N); net.classes[i] names class i

Nothing is unpickled: checkpoints are read with ``weights_only=True``, exported weights are safetensors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from .config import TrainConfig
from .data import DatasetInfo
from .data.classes import class_names
from .errors import CheckpointError, RunDirError
from .model import ASGENet
from .preprocess import Preprocessing
from .run import RunDir, load_checkpoint, load_model_state

SAFETENSORS_FORMAT = "asge-safetensors-1"


def default_strategy(method: str) -> str:
    """``best`` for an ASGE run (early exit after l*), ``last`` for a backprop run (its only head)."""
    return "last" if method == "bp" else "best"


def check_run_strategy(method: str, strategy: Optional[str]) -> str:
    """The strategy to use for a run of ``method`` (default :func:`default_strategy`); a backprop run has
    only ``last``."""
    from .heads import check_strategy
    strategy = check_strategy(strategy or default_strategy(method))
    if method == "bp" and strategy != "last":
        raise ValueError(f"a backprop run only has the 'last' strategy, not {strategy!r}")
    return strategy


def _native_size(cfg: TrainConfig) -> int:
    """Image side of runs that did not record it (before class names were recorded): the loaders' defaults."""
    return int(cfg.input_size or {"digits": 8, "imagenet": 224}.get(cfg.dataset, 32))


def data_info(cfg: TrainConfig, state: dict, recorded: Optional[dict] = None) -> DatasetInfo:
    """The :class:`DatasetInfo` a run was trained on: as recorded (``recorded``), else read off the weights
    (channels, classes) and the config (image size), with class names from :func:`asge.data.classes.class_names`
    (ImageFolder runs that did not record their folder names get "0".."N-1")."""
    if recorded:
        return DatasetInfo.from_dict(recorded)
    try:
        in_channels = int(state["blocks.0.conv.weight"].shape[1])
        num_classes = int(state["heads.last.weight"].shape[0])
    except KeyError as e:
        raise CheckpointError(f"the weights lack {e.args[0]}: not an asge network") from None
    return DatasetInfo(name=cfg.dataset, num_classes=num_classes, in_channels=in_channels,
                       image_size=_native_size(cfg), classes=class_names(cfg.dataset, num_classes))


def prepare(net: ASGENet, cfg: TrainConfig, info: DatasetInfo, summary: dict) -> ASGENet:
    """Set what a loaded network carries: eval mode, ``classes``, ``preprocessing``, ``config``, ``summary``.
    Its parameters are frozen (``requires_grad`` False: outputs carry no autograd graph); to train it further,
    ``net.requires_grad_(True)``."""
    net.eval()
    net.requires_grad_(False)
    net.classes = tuple(info.classes) if len(info.classes) == info.num_classes else \
        tuple(str(i) for i in range(info.num_classes))
    net.preprocessing = Preprocessing.for_dataset(info.name, info.image_size, info.in_channels)
    net.config, net.summary, net.data_info = cfg, summary, info
    return net


def load_run(path: Union[str, Path], device="cpu") -> ASGENet:
    """The best-validation network of a run directory (``checkpoints/best.pt``)."""
    from .train.loop import build_model
    run = RunDir(path)
    cfg = run.read_config()
    ckpt = load_checkpoint(run.best_checkpoint)
    summary = json.loads(run.summary_file.read_text()) if run.summary_file.is_file() else {}
    info = data_info(cfg, ckpt["model"], ckpt.get("data") or summary.get("data"))
    net = build_model(cfg, info)
    load_model_state(net, ckpt["model"], run.best_checkpoint)
    return prepare(net.to(device), cfg, info, summary)


def read_safetensors(path: Union[str, Path]) -> tuple[dict, dict]:
    """(state dict, asge header) of an exported .safetensors file; anything else is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({str(e).splitlines()[0][:200]})") from None
    if meta.get("format") != SAFETENSORS_FORMAT or "asge" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not one written by `asge export` "
                              f"(expected format {SAFETENSORS_FORMAT})")
    return state, json.loads(meta["asge"])


def load_safetensors(path: Union[str, Path], device="cpu") -> ASGENet:
    """The network of a file written by ``asge export --format safetensors``."""
    from .train.loop import build_model
    state, header = read_safetensors(path)
    cfg = TrainConfig.from_dict(header["config"])
    info = data_info(cfg, state, header["data"])
    net = build_model(cfg, info)
    load_model_state(net, state, Path(path))
    return prepare(net.to(device), cfg, info, header.get("summary", {}))


def load(path: Union[str, Path], device="cpu") -> ASGENet:
    """A run directory or an exported ``.safetensors`` file -> the network in eval mode, on ``device``, with
    ``.classes``, ``.preprocess(images)``, ``.predict(batch, strategy=...)``, ``.config`` and ``.summary``."""
    p = Path(path)
    if p.is_dir():
        return load_run(p, device)
    if p.is_file() and p.suffix == ".safetensors":
        return load_safetensors(p, device)
    raise RunDirError(f"{p} is neither a run directory nor a .safetensors file written by `asge export`")


__all__ = ["load", "load_run", "load_safetensors", "read_safetensors", "data_info", "default_strategy",
           "check_run_strategy", "SAFETENSORS_FORMAT"]
