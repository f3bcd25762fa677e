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

from ..config import TrainConfig
from ..data import DatasetInfo
from ..data.classes import class_names
from ..errors import CheckpointError, RunDirError
from ..nn.model import ASGENet
from ..data.preprocess import Preprocessing
from ..runs.directory import RunDir, load_checkpoint, load_model_state

SAFETENSORS_FORMAT = "asge-safetensors-1"


def default_strategy(method: str) -> str:
    """``best`` for an ASGE run (early exit after l*), ``last`` for a backprop run (its only head)."""
    return "last" if method == "bp" else "best"


def check_run_strategy(method: str, strategy: Optional[str]) -> str:
    """The strategy to use for a run of ``method`` (default :func:`default_strategy`); a backprop run has
    only ``last``."""
    from ..nn.heads import check_strategy
    strategy = check_strategy(strategy or default_strategy(method))
    if method == "bp" and strategy != "last":
        raise ValueError(f"a backprop run only has the 'last' strategy, not {strategy!r}")
    return strategy


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
                       image_size=cfg.image_size(), classes=class_names(cfg.dataset, num_classes))


def prepare(net: ASGENet, cfg: TrainConfig, info: DatasetInfo, summary: dict) -> ASGENet:
    """Set what a loaded network carries: eval mode, ``classes``, ``preprocessing``, ``config``, ``summary``.
    Its parameters are frozen (``requires_grad`` False: outputs carry no autograd graph); to train it further,
    ``net.requires_grad_(True)``."""
    net.eval()
    net.requires_grad_(False)
    net.classes = tuple(info.classes) if len(info.classes) == info.num_classes else \
        tuple(str(i) for i in range(info.num_classes))
    net.preprocessing = Preprocessing(info.image_size, info.in_channels, info.resize)   # the test split's
    net.config, net.summary, net.data_info = cfg, summary, info
    net.load_note = None
    return net


def validation_best_block(run: RunDir, epoch: int) -> Optional[int]:
    """l* as training chooses it when it ends (the block with the best validation accuracy at the
    best-validation ``epoch``), from ``metrics.jsonl`` or ``last.pt``; None when neither records that epoch."""
    acc = next((r["val"]["block_acc"] for r in run.read_metrics()
                if isinstance(r, dict) and r.get("epoch") == epoch and isinstance(r.get("val"), dict)
                and r["val"].get("block_acc")), None)
    if acc is None and run.last_checkpoint.is_file():
        try:
            best = load_checkpoint(run.last_checkpoint, mmap=True).get("best") or {}
        except CheckpointError:
            best = {}
        if best.get("epoch") == epoch and best.get("val"):
            acc = best["val"].get("block_acc")
    if not acc:
        return None
    return 1 + max(range(len(acc)), key=lambda i: acc[i])


def open_best_checkpoint(run: RunDir, cfg: TrainConfig) -> tuple[dict, Optional[str]]:
    """(``best.pt``, a note for the user or None) of a run, finished or not, before any work is done.

    A run that has not finished (stopped, or still training) has a best-validation checkpoint once one epoch
    is done, but no l* yet: it is chosen here on validation, as training would if it ended now, and the
    note says so. A run with no epoch done has nothing to test: RunDirError, one line."""
    if not run.best_checkpoint.is_file():
        if run.last_checkpoint.is_file() or run.metrics_file.is_file():
            raise RunDirError(f"{run.path} has not finished an epoch yet (no checkpoints/best.pt): there is no "
                              f"trained network to use; continue it with asge train --out {run.path} --resume")
        raise RunDirError(f"{run.path} holds no trained network (no checkpoints/best.pt)")
    ckpt = load_checkpoint(run.best_checkpoint)
    state = ckpt.get("model")
    if not isinstance(state, dict) or run.summary_file.is_file():
        return ckpt, None
    epoch = ckpt.get("epoch")
    if cfg.method != "asge" or "best_block" not in state or int(state["best_block"]) >= 1:
        return ckpt, f"{run.path} has not finished: using its best-validation checkpoint (epoch {epoch})"
    l_star = validation_best_block(run, epoch)
    if l_star is None:
        return ckpt, (f"{run.path} has not finished and records no validation accuracy per block for its best "
                      f"epoch {epoch}: strategy best is not available (use fusion or last)")
    state["best_block"] = torch.tensor(l_star, dtype=state["best_block"].dtype)
    return ckpt, (f"{run.path} has not finished: using its best-validation checkpoint (epoch {epoch}) with "
                  f"l* = {l_star}, chosen on validation as training does at its end")


def check_strategy_available(net: ASGENet, strategy: str) -> str:
    """``strategy``, unless it is ``best`` and the network has no l*: then one line saying what works."""
    if strategy == "best" and int(net.best_block) < 1:
        raise RunDirError("strategy best needs the best block l*, which this network does not record; "
                          "use --strategy fusion or last")
    return strategy


def network_from_run(path: Union[str, Path], device="cpu", model: Optional[ASGENet] = None) -> ASGENet:
    """The best-validation network of a run directory (``checkpoints/best.pt``). For a run that has not
    finished, l* is chosen on validation (:func:`open_best_checkpoint`) and ``net.load_note`` says so.
    ``model``: the network to load the weights into (a network given from Python, which a config cannot
    rebuild); by default it is built from the run's config."""
    from ..runs.build import build_model
    run = RunDir(path)
    cfg = run.read_config()
    ckpt, note = open_best_checkpoint(run, cfg)
    summary = run.read_summary_if_any() or {"best_epoch": ckpt.get("epoch"), "finished": False}
    info = data_info(cfg, ckpt["model"], ckpt.get("data") or summary.get("data"))
    net = model if model is not None else build_model(cfg, info)
    load_model_state(net, ckpt["model"], run.best_checkpoint)
    net = prepare(net.to(device), cfg, info, summary)
    net.load_note = note
    return net


def read_safetensors(path: Union[str, Path]) -> tuple[dict, dict]:
    """(state dict, asge header) of an exported .safetensors file; anything else is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({reason})") from None
    if meta.get("format") != SAFETENSORS_FORMAT or "asge" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not one written by `asge export` "
                              f"(expected format {SAFETENSORS_FORMAT})")
    return state, json.loads(meta["asge"])


def network_from_safetensors(path: Union[str, Path], device="cpu", model: Optional[ASGENet] = None) -> ASGENet:
    """The network of a file written by ``asge export --format safetensors`` (``model``: as for
    :func:`network_from_run`)."""
    from ..runs.build import build_model
    state, header = read_safetensors(path)
    cfg = TrainConfig.from_dict(header["config"])
    info = data_info(cfg, state, header["data"])
    net = model if model is not None else build_model(cfg, info)
    load_model_state(net, state, Path(path))
    return prepare(net.to(device), cfg, info, header.get("summary", {}))


def load(path: Union[str, Path], device="cpu", model: Optional[ASGENet] = None) -> ASGENet:
    """A run directory or an exported ``.safetensors`` file -> the network in eval mode, on ``device``, with
    ``.classes``, ``.preprocess(images)``, ``.predict(batch, strategy=...)``, ``.config`` and ``.summary``.
    A network given from Python (``fit(cfg, network=...)``) is not rebuilt from its config: pass the same
    network again as ``model`` (built as for training; its weights are replaced by the run's)."""
    p = Path(path)
    if p.is_dir():
        return network_from_run(p, device, model)
    if p.is_file() and p.suffix == ".safetensors":
        return network_from_safetensors(p, device, model)
    raise RunDirError(f"{p} is neither a run directory nor a .safetensors file written by `asge export`")


__all__ = ["load", "network_from_run", "open_best_checkpoint", "validation_best_block", "check_strategy_available",
           "network_from_safetensors", "read_safetensors", "data_info", "default_strategy",
           "check_run_strategy", "SAFETENSORS_FORMAT"]
