"""``fit``: train a config the way it asks, the same call from Python and from ``asge train``.

One process trains sequentially (:func:`~asge.train.loop.train_run`); ``--pipeline K`` splits the blocks over
K processes (``pipeline.py``); a process started by torchrun is one rank of a data-parallel group
(``distributed.py``). Before any of them: the config is validated and resolved, and ``resume`` finds what
the run directory holds (a finished run is returned as it is, nothing recomputed or rewritten).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

from ..config import TrainConfig
from ..errors import AsgeError
from ..nn.local_network import PYTHON_MODEL
from ..nn.model import ASGENet
from .distributed import fit_distributed, launched_by_torchrun
from .loop import default_model_note, ready_config, train_run
from .pipeline import fit_pipeline
from .resume import check_resume, finished_message


def network_config(cfg: TrainConfig, network) -> TrainConfig:
    """``cfg`` for a network given from Python: model ``python``, and the split and local rule the network has
    (its module count; its modules' rule), so that config.yaml and summary.json say what was trained. Keys
    that describe a network to build are refused in one line."""
    rules = {getattr(getattr(block, "rule", None), "name", "asge") for block in network.blocks}   # ASGEBlock: asge
    rule = rules.pop() if len(rules) == 1 else cfg.local_loss
    unset = {"model": (None, PYTHON_MODEL), "split": (None,), "module_norm": ("none",), "local_loss": ("asge", rule)}
    given = [key for key, values in unset.items() if getattr(cfg, key) not in values]
    if given:
        raise AsgeError(f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} a network to build; with "
                        "network=... leave them unset (the network has its own modules and rule)")
    return dataclasses.replace(cfg, model=PYTHON_MODEL, split=str(len(network.blocks)), local_loss=rule)


def fit(cfg: TrainConfig, *, resume: bool = False, on_epoch_end: Optional[Callable[[int, dict], None]] = None,
        log: Callable[[str], None] = print, require_run: bool = False,
        on_finished: Optional[Callable[[dict], None]] = None, method_factory: Optional[Callable] = None,
        network: Optional[ASGENet] = None) -> dict:
    """Train by ``cfg`` (ASGE or backprop), test the best-validation model, return the summary dict.

    ``resume=True`` continues the run in ``cfg.out`` from its last checkpoint (written at an epoch's end or in
    the middle of one); with no run there a new one starts, unless ``require_run`` (the CLI's ``--resume``),
    which refuses in one line; a finished run is said in one line, passed to ``on_finished`` and returned.
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint.
    Under torchrun, ranks other than 0 return ``{"rank": r}``. ``method_factory(net, cfg, total_steps,
    device)``, for one process only, builds the training method instead of ``METHODS[cfg.method]`` (your own
    method, or one wrapped to observe the steps). ``network`` (one process only) is trained instead of the
    network the config names: your own modules, or a network cut into modules (:func:`asge.local_network`);
    the run records its model as ``python``, its modules and their rule as the network has them, and
    ``asge.load(run, model=...)`` takes the same network back.
    """
    if network is not None:
        cfg = network_config(cfg, network)
    note = default_model_note(cfg)
    cfg = ready_config(cfg)
    first_rank = int(os.environ.get("RANK", "0")) == 0
    finished = check_resume(cfg, resume, require_run=require_run)
    if finished is not None:
        if first_rank:                    # torchrun: the other ranks stop quietly
            log(finished_message(cfg.out, finished))
        if on_finished is not None:
            on_finished(finished)
        return finished
    if note and first_rank:
        log(note)
    if (method_factory is not None or network is not None) and (launched_by_torchrun() or cfg.pipeline > 1):
        raise AsgeError("method_factory and network train in one process: they cannot be combined with --pipeline "
                        "or torchrun")
    if launched_by_torchrun():            # torchrun --nproc_per_node=N -m asge train ...: one rank of N
        if cfg.pipeline > 1:
            raise AsgeError("--pipeline and torchrun data parallelism cannot be combined; use one of them")
        return fit_distributed(cfg, resume=resume, log=log, on_epoch_end=on_epoch_end)
    if cfg.pipeline > 1:
        return fit_pipeline(cfg, resume=resume, log=log, on_epoch_end=on_epoch_end)
    return train_run(cfg, resume=resume, on_epoch_end=on_epoch_end, log=log, method_factory=method_factory,
                     network=network)
