"""What a run directory holds and how a run continues from it: the checkpoint's contents, ``--resume``
checks (before anything is locked or written), extending a finished run (``--resume --epochs N``),
``--init-from`` weights, and the run's command history (the command that started it, then each one that
resumed or extended it: ``last.pt`` carries it from one process to the next, summary.json's provenance
records it)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from ..config import TrainConfig
from ..data import DatasetInfo
from ..errors import AsgeError, CheckpointError
from ..nn.model import ASGENet
from ..runs.directory import RunDir, load_checkpoint, load_model_state


def extends(cfg: TrainConfig, saved: TrainConfig) -> bool:
    """True when ``cfg`` asks for more epochs than the run ``saved`` and differs from it in nothing else that
    shapes the run: ``--resume --epochs N`` then extends it (:func:`rebuild_schedules`)."""
    import dataclasses
    return (isinstance(cfg.epochs, int) and isinstance(saved.epochs, int) and cfg.epochs > saved.epochs
            and not cfg.differences(dataclasses.replace(saved, epochs=cfg.epochs)))


def rebuild_schedules(method, total_steps: int) -> int:
    """Stretch every cosine schedule of ``method`` over ``total_steps`` from the step it is at: each learning
    rate becomes the closed form's value at (step, total_steps), as if the run had been asked for that
    length from its start (the per-step updates that follow stay on that curve). Returns the step."""
    import math
    step = 0
    from .optim import schedules
    for sched in schedules(method):
        step = sched.last_epoch
        sched.T_max = max(1, total_steps)
        for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
            group["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * step / sched.T_max)) / 2
        sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        sched.optimizer.write_lr()
    return step


def load_init_weights(net: ASGENet, source: str) -> dict:
    """``--init-from``: load the model weights of another run (its best checkpoint) or of a checkpoint file
    into ``net``; returns what was read ({path, epoch, config}). A missing or foreign source: one line."""
    from pathlib import Path
    path = Path(source)
    if path.is_dir():
        run = RunDir(path)
        path = run.best_checkpoint if run.best_checkpoint.is_file() else run.last_checkpoint
        if not path.is_file():
            raise AsgeError(f"init_from: {source} holds no checkpoint (no checkpoints/best.pt or last.pt)")
    elif not path.exists():
        raise AsgeError(f"init_from: {source} does not exist (expected a run directory or a checkpoint .pt)")
    ckpt = load_checkpoint(path)
    if "model" not in ckpt:
        raise CheckpointError(f"init_from: {path} holds no model weights")
    load_model_state(net, ckpt["model"], path)
    return {"path": str(path.resolve()), "epoch": ckpt.get("epoch"), "config": ckpt.get("config")}


def command_entry(at_epoch: int, at_step: Optional[int] = None) -> dict:
    """This process's entry of a run's command history: ``{"command": sys.argv, "at_epoch": the epochs
    completed when it started, "at_step": the step within the next epoch (a mid-epoch checkpoint only),
    "time"}``."""
    entry = {"command": list(sys.argv), "at_epoch": at_epoch}
    if at_step:
        entry["at_step"] = at_step
    entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return entry


@dataclass
class RunState:
    """What a run has done so far: what ``last.pt`` holds besides the weights, and what a resumed run takes
    back from it. ``epoch`` is the last completed epoch; ``partial`` where a mid-epoch checkpoint stopped
    ({epoch, step, stats, rng, seconds}); ``extensions`` the ``--resume --epochs N`` extensions;
    ``commands`` the command history (the command that started the run, then each that resumed it);
    ``best_weights`` the best model's weights when the run has no directory to hold ``best.pt``."""

    epoch: int = 0
    best: dict = field(default_factory=lambda: {"score": -1.0, "epoch": 0, "val": None})
    train_seconds: float = 0.0
    images: int = 0
    partial: Optional[dict] = None
    extensions: list = field(default_factory=list)
    commands: list = field(default_factory=list)
    init: Optional[dict] = None
    best_weights: Optional[dict] = None

    @classmethod
    def new(cls) -> "RunState":
        return cls(commands=[command_entry(0)])

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "RunState":
        """The state ``last.pt`` saved, with this process's command appended to its history (a checkpoint
        written before histories were recorded gives a first entry whose command is None)."""
        partial = ckpt.get("partial")
        history = list(ckpt.get("commands") or [{"command": None, "at_epoch": 0, "time": None}])
        return cls(epoch=ckpt["epoch"], best=ckpt["best"], train_seconds=ckpt["train_seconds"],
                   images=ckpt["images"], partial=partial, extensions=list(ckpt.get("extensions") or []),
                   commands=history + [command_entry(ckpt["epoch"], (partial or {}).get("step"))])


def last_checkpoint(cfg: TrainConfig, net: ASGENet, method, state: RunState,
                    partial: Optional[dict] = None) -> dict:
    """What ``checkpoints/last.pt`` holds: all a resumed run needs to continue bit-exactly after
    ``state.epoch``, or from ``partial`` within the next epoch (:func:`mid_epoch_point`)."""
    ckpt = {"epoch": state.epoch, "config": cfg.to_dict(), "model": net.state_dict(),
            "method": method.state_dict(), "rng": RunDir.rng_state(), "best": state.best,
            "train_seconds": state.train_seconds, "images": state.images, "commands": state.commands}
    if partial is not None:
        ckpt["partial"] = partial
    if state.extensions:
        ckpt["extensions"] = state.extensions
    return ckpt


def best_checkpoint(cfg: TrainConfig, info: DatasetInfo, net: ASGENet, epoch: int) -> dict:
    """What ``checkpoints/best.pt`` holds: the best-validation model, its epoch, config and data."""
    return {"epoch": epoch, "config": cfg.to_dict(), "data": info.to_dict(), "model": net.state_dict()}


def check_resume(cfg: TrainConfig, resume: bool, require_run: bool = True) -> Optional[dict]:
    """What ``--resume`` finds in ``cfg.out``, before anything is locked or written: None when there is a run
    to continue (or ``resume`` is False); the run's summary when it has finished (nothing to do: the caller
    says so and stops); an AsgeError, one line, when there is no run to resume (``require_run``, the
    command line's ``--resume``; else, as ``fit(resume=True)`` from Python, a new run starts there)."""
    if not resume or (not require_run and not (cfg.out and RunDir(cfg.out).checkpoint_exists())):
        return None
    if not cfg.out:
        raise AsgeError("--resume needs --out: the run directory to continue")
    run = RunDir(cfg.out)
    if run.path.exists() and not run.path.is_dir():
        raise AsgeError(f"{run.path} is a file, not a run directory: there is no run to resume")
    if not run.path.is_dir():
        raise AsgeError(f"{run.path} does not exist: there is no run to resume (without --resume a new run "
                        "starts there)")
    from ..runs.lock import check_not_locked
    if int(os.environ.get("RANK", "0")) == 0:   # torchrun: rank 0 may hold the lock already when rank 1 looks
        check_not_locked(run.path)        # a run in progress there: say who holds it
    if run.summary_file.is_file() and run.checkpoint_exists():
        summary = run.read_summary_if_any()           # damaged: one line
        ckpt = load_checkpoint(run.last_checkpoint, mmap=True)   # damaged or foreign: said here; its
        #                                                          weights are mapped, not read (fit loads them)
        if extends(cfg.resolved(), TrainConfig.from_dict(ckpt["config"])):
            return None                   # --epochs beyond the finished run's: fit extends it
        diff = cfg.resolved().differences(TrainConfig.from_dict(ckpt["config"]))
        if diff:
            raise CheckpointError(f"cannot resume {run.path}: the configuration differs from the "
                                  f"checkpoint's in {diff}")
        return summary
    if not run.checkpoint_exists():
        raise AsgeError(f"{run.path} holds no run to resume (no {run.last_checkpoint.relative_to(run.path)}); "
                        "without --resume a new run starts there")
    return None


def finished_message(out, summary: dict) -> str:
    """``runs/r1 is a finished run (30 epochs, test accuracy fusion 97.78%): nothing to resume``."""
    acc = summary.get("test_accuracy") or {}
    head = summary.get("headline") or next(iter(acc), None)
    what = f", test accuracy {head} {acc[head]:.2f}%" if head in acc else ""
    epochs = summary.get("epochs", "?")
    return f"{out} is a finished run ({epochs} epoch{'' if epochs == 1 else 's'}{what}): nothing to resume"


def rank_rng_state(saved, world) -> Optional[dict]:
    """This rank's RNG state in a mid-epoch checkpoint (a list, one per rank, from data-parallel runs); None
    when the checkpoint comes from a run with another number of ranks."""
    if isinstance(saved, list):
        return saved[world.rank] if world is not None and len(saved) == world.size else None
    return saved if world is None else None


def mid_epoch_point(method, world, epoch: int, steps_done: int, seconds: float) -> dict:
    """The ``partial`` of a mid-epoch checkpoint: where in the epoch, the epoch's statistics and seconds so
    far, and every rank's RNG state (the backprop baseline's dropout draws from it). A collective in
    data-parallel runs."""
    rng = RunDir.rng_state()
    return {"epoch": epoch, "step": steps_done, "stats": method.stats_state(),
            "rng": rng if world is None else world.all_gather_object(rng), "seconds": seconds}
