"""The epoch loop shared by ASGE and the backprop baseline, for one process (or one data-parallel rank).

:func:`train_run` reads top to bottom: set up (data, network, method), restore or start (``last.pt``, or
``--init-from``), then per epoch train, validate and choose the best model (checkpoints after every epoch),
and at the end test the best-validation model by every prediction strategy and write the summary. The
algorithm itself lives in ``local.py`` (and ``backprop.py``); what a checkpoint holds and the ``--resume``
checks in ``resume.py``; which mode runs (sequential, data-parallel, pipeline) in ``modes.py``.
"""
from __future__ import annotations

import contextlib
import copy
import signal
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Data, Split
from ..errors import AsgeError, CheckpointError, Preempted
from ..nn.local_network import describe_modules
from ..nn.model import ASGENet
from ..runs.build import build_model, load_run_data, resolve_device
from ..runs.directory import RunDir, load_checkpoint, load_model_state, save_checkpoint
from ..runs.evaluation import (CONFUSION_MAX_CLASSES, EvaluationStopped, evaluate_split, headline_strategy,
                               output_rows, split_subset, strategy_scores)
from ..runs.lock import RunLock
from ..runs.preempt import StopSignals
from ..runs.progress import progress_for
from .graphs import maybe_graphed
from .local import autocast_for
from .methods import METHODS
from .resume import (RunState, best_checkpoint, extends, last_checkpoint, load_init_weights, mid_epoch_point,
                     rank_rng_state, rebuild_schedules)


def batch_norm_names(net: nn.Module) -> list[str]:
    """Qualified names of ``net``'s BatchNorm layers (context modules may hold them): in training they need
    at least two values per channel, so a batch of one image cannot train them."""
    return [name for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def smallest_batch(net: nn.Module) -> int:
    """The fewest images a training batch of ``net`` (or a rank's share of one) may hold: 2 when it has
    BatchNorm layers, else 1."""
    return 2 if batch_norm_names(net) else 1


def train_drop_last(net: nn.Module, cfg: TrainConfig, num_images: int, log: Callable[[str], None],
                    ranks: int = 1) -> bool:
    """Whether each epoch leaves out its last, smaller batch (said once through ``log``): when its share on
    one of ``ranks`` data-parallel ranks would hold no image, or one image and ``net`` has BatchNorm layers
    (which need two values per channel in training). A ``--batch-size`` whose full batches cannot be
    shared so is refused."""
    norms = batch_norm_names(net)
    need = smallest_batch(net)                       # images in each rank's share of a batch
    layers = f"the BatchNorm layers of {f'context {cfg.context!r}' if cfg.context != 'none' else norms[0]}" \
        if norms else ""
    needs = f"{layers} need 2" if norms else "every rank needs 1"
    if cfg.batch_size // ranks < need:
        if ranks == 1:
            raise AsgeError(f"--batch-size {cfg.batch_size} cannot train this network: {layers} need at least 2 "
                            "images per training batch; use --batch-size 2 or more")
        raise AsgeError(f"--batch-size {cfg.batch_size} cannot be shared over {ranks} ranks: a rank's share would "
                        f"hold {cfg.batch_size // ranks} image(s), {needs}; use --batch-size {need * ranks} or more")
    last = num_images % cfg.batch_size
    if last == 0 or last // ranks >= need:
        return False
    images = f"{last} image{'s' if last > 1 else ''} of {num_images}"
    why = (f"which {layers} cannot train on" if ranks == 1 else
           f"a share of {last // ranks} on some of the {ranks} ranks, where {needs}")
    log(f"each epoch's last batch would hold {images}, {why}: it is left out ({num_images - last} images per epoch)")
    return True


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch's randomness (order, augmentation, dropout) comes from (seed, epoch): resuming is exact."""
    return seed * 1_000_003 + epoch


def default_model_note(cfg: TrainConfig) -> Optional[str]:
    """What a run without ``--model`` trains, in one line (None when ``--model`` was given)."""
    if cfg.model is not None:
        return None
    model, size = cfg.resolved().model, cfg.image_size()
    if cfg.channels is not None:
        return f"no --model given: the custom channels take the {model} preset's defaults (lr, epochs)"
    return f"no --model given: training the {model} preset, the default for {size}x{size} images"


#: Fewer validation images than this make the best-epoch and l* choices noisy: said once.
SMALL_VALIDATION = 500


def describe_data(data, val_images: int) -> list[str]:
    """Lines that say how the data was read: which path a folder tree took and the training augmentation
    it resolved to, files left out as unreadable, a small validation split."""
    lines = []
    if data.reading:
        lines.append(f"{data.reading}; training augmentation {data.train.augmentation}")
    if data.unreadable:
        lines.append(f"left out {len(data.unreadable)} unreadable image file(s) (--skip-unreadable), listed in "
                     f"the run directory's {UNREADABLE_FILE}; first: {data.unreadable[0]}")
    if val_images < SMALL_VALIDATION:
        lines.append(f"note: the best epoch and l* are chosen on {val_images} validation images (under "
                     f"{SMALL_VALIDATION}): expect them to be noisy (the summary table and asge report give 95% "
                     "intervals of the test accuracies)")
    return lines


#: The run directory's list of files left out by --skip-unreadable.
UNREADABLE_FILE = "unreadable.txt"


def ready_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` validated (one line naming a bad key or context option, before any data is read) and resolved
    (the preset's defaults filled in). Resolving a resolved config changes nothing."""
    cfg.validate()
    from ..layers.context import check_context_options
    check_context_options(cfg.context, cfg.context_options)
    return cfg.resolved()


@dataclass
class Session:
    """What a run sets up once and every part of the loop reads: the config, the run directory (None: no
    ``--out``, or not the main rank), the data-parallel ``world`` (None: one process), the data, the network,
    the training method and the evaluation settings."""

    cfg: TrainConfig
    run: Optional[RunDir]
    world: object
    log: Callable[[str], None]
    stop: StopSignals
    device: torch.device
    data: Data
    val_split: Split
    net: ASGENet
    method: object
    steps_per_epoch: int
    drop_last: bool
    autocast: Callable
    eval_batch: int
    board: object = None

    @property
    def main(self) -> bool:
        return self.world is None or self.world.is_main

    def stop_signal(self) -> int:
        return stop_signal(self.stop, self.world)


def train_run(cfg: TrainConfig, *, resume: bool = False, on_epoch_end: Optional[Callable[[int, dict], None]] = None,
              log: Callable[[str], None] = print, method_factory: Optional[Callable] = None, world=None,
              network: Optional[ASGENet] = None) -> dict:
    """Train by ``cfg`` (resolved and validated: :func:`asge.train.fit`) in this process, test the
    best-validation model, return the summary dict (``{"rank": r}`` on a data-parallel rank other than 0).

    The run directory ``cfg.out`` is locked for the whole run (:mod:`asge.runs.lock`); ``resume`` continues
    its ``last.pt``. SIGTERM or SIGINT stops the run after its current step with a checkpoint of that point
    and raises :class:`~asge.errors.Preempted`. ``on_epoch_end(epoch, record)`` is called after each epoch's
    checkpoint is written. ``method_factory(net, cfg, total_steps, device)`` replaces ``METHODS[cfg.method]``
    (fit's ``method_factory``; the pipeline and data-parallel modes); ``world`` makes this one rank of a
    data-parallel group; ``network`` is trained instead of the one the config names (:func:`asge.local_network`).
    """
    cfg = ready_config(cfg)
    with contextlib.ExitStack() as held:
        run = None
        if cfg.out and (world is None or world.is_main):
            held.enter_context(RunLock(cfg.out, log=log))
            run = RunDir(cfg.out)
        stop = held.enter_context(StopSignals(announce=world is None))   # ranks: once they agree (stop_signal)
        s = setup(cfg, run, world, log, stop, method_factory, resume, network)
        state = restore_or_start(s, resume)
        if cfg.tensorboard and run is not None:
            from .tensorboard import TensorBoardLogger
            s.board = held.enter_context(TensorBoardLogger(run.path))
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            train, seconds = train_epoch(s, state, epoch)
            record = validate_and_choose(s, state, epoch, train, seconds)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            signum = s.stop_signal()
            if signum:
                raise preempted(s, signum, f"after epoch {epoch}/{cfg.epochs}")
        return test_and_summarise(s, state)


def setup(cfg: TrainConfig, run: Optional[RunDir], world, log, stop: StopSignals,
          method_factory: Optional[Callable], resume: bool, network: Optional[ASGENet] = None) -> Session:
    """The device, the data (said in a line or two: how a folder tree is read, a small validation split),
    the network built from the seed, the training method (graphed under ``--cuda-graphs``). A run directory
    that holds a run is first checked: only ``--resume`` by the same configuration may continue it."""
    device = resolve_device(cfg.device) if world is None else world.device
    main = world is None or world.is_main
    if run is not None and run.checkpoint_exists():
        if not resume:
            raise AsgeError(f"{run.path} already holds a run; pass --resume to continue it, or choose another --out")
        saved = TrainConfig.from_dict(load_checkpoint(run.last_checkpoint, mmap=True)["config"])
        check_same_run(cfg, saved, run)
    data = load_run_data(cfg, device)
    val_split = split_subset(data.val, cfg.val_subset)       # fixed (seed 42): the same for every run
    if main:
        for line in describe_data(data, len(val_split)):
            log(line)
    torch.manual_seed(cfg.seed)    # modules that draw their init from the global RNG (context layers)
    net = build_model(cfg, data.info) if network is None else check_network(network, data.info)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    drop_last = train_drop_last(net, cfg, len(data.train), log if main else (lambda _: None),
                                1 if world is None else world.size)
    steps_per_epoch = data.train.num_batches(cfg.batch_size, drop_last)
    method = (method_factory or METHODS[cfg.method])(net, cfg, steps_per_epoch * cfg.epochs, device)
    method = maybe_graphed(method, cfg, device, world, log)     # --cuda-graphs (graphs.py)
    return Session(cfg, run, world, log, stop, device, data, val_split, net, method, steps_per_epoch, drop_last,
                   autocast_for(cfg, device), eval_batch=max(cfg.batch_size, 256))


def check_network(net: ASGENet, info) -> ASGENet:
    """A network given from Python must take the data's images and predict its classes (one line if not)."""
    if net.num_classes != info.num_classes or net.image_size != info.image_size or \
            net.blocks[0].in_channels != info.in_channels:
        raise AsgeError(f"the network given takes {net.blocks[0].in_channels}x{net.image_size}x{net.image_size} "
                        f"images into {net.num_classes} classes; {info.name} has {info.in_channels}x"
                        f"{info.image_size}x{info.image_size} images of {info.num_classes} classes")
    return net


def check_same_run(cfg: TrainConfig, saved: TrainConfig, run: RunDir) -> None:
    """A run directory's checkpoint may be continued only by the configuration that wrote it (or by one that
    asks for more epochs: an extension); anything else is refused in one line."""
    diff = "" if extends(cfg, saved) else cfg.differences(saved)
    if diff:
        raise CheckpointError(f"cannot resume {run.path}: the configuration differs from the checkpoint's in {diff}")


def restore_or_start(s: Session, resume: bool) -> RunState:
    """Continue ``last.pt`` (weights, method, RNG, where it stopped; extended to more epochs when asked), or
    start: ``--init-from`` weights, a new run directory. Every rank starts from the main rank's weights."""
    cfg, run = s.cfg, s.run
    ckpt = None
    if run is not None and run.checkpoint_exists():     # setup checked it may be continued
        ckpt = load_checkpoint(run.last_checkpoint)
    if s.world is not None:
        ckpt = s.world.broadcast_object(ckpt)
    if ckpt is None:
        state = RunState.new()
        if cfg.init_from:                 # before run.create: a bad source leaves nothing written
            state.init = load_init_weights(s.net, cfg.init_from)
            if run is not None:
                s.log(f"starting from the model weights of {state.init['path']} (epoch {state.init['epoch']}); "
                      "optimizer and schedule are new")
        if run is not None:
            run.create(cfg)
            run.truncate_metrics(0)
    else:
        state = RunState.from_checkpoint(ckpt)
        load_model_state(s.net, ckpt["model"], cfg.out)
        s.method.load_state_dict(ckpt["method"])
        RunDir.set_rng_state(ckpt.get("rng"))
        if run is not None:
            run.truncate_metrics(state.epoch)
        p = state.partial
        s.log(f"resuming {cfg.out} " + (f"at step {p['step']}/{s.steps_per_epoch} of epoch {p['epoch']}" if p
                                        else f"after epoch {state.epoch}") + f"/{cfg.epochs}")
        saved_epochs = (ckpt.get("config") or {}).get("epochs")
        if isinstance(saved_epochs, int) and saved_epochs < cfg.epochs:     # --resume --epochs N
            extend(s, state, saved_epochs)
    if run is not None and s.data.unreadable:
        (run.path / UNREADABLE_FILE).write_text("".join(line + "\n" for line in s.data.unreadable))
    if s.world is not None:
        s.world.broadcast_module(s.net)
    return state


def extend(s: Session, state: RunState, saved_epochs: int) -> None:
    """``--resume --epochs N`` beyond a run's own: rebuild the cosine schedules over the new total, say what
    that does to the learning rates, record it, and write the new length to config.yaml."""
    cfg = s.cfg
    if cfg.pipeline > 1:
        raise AsgeError("extending a run (--epochs beyond its own) is not supported with --pipeline; "
                        "extend it without --pipeline")
    total = s.steps_per_epoch * cfg.epochs
    lr_before = s.method.lrs()
    step = rebuild_schedules(s.method, total)
    lr_after = s.method.lrs()
    state.extensions.append({"from_epochs": saved_epochs, "to_epochs": cfg.epochs, "at_step": step,
                             "lr_before": lr_before, "lr_after": lr_after})
    text = lambda lrs: ", ".join(f"{k} {v:.3g}" for k, v in lrs.items())  # noqa: E731
    s.log(f"extending {cfg.out} from {saved_epochs} to {cfg.epochs} epochs: the cosine schedule is rebuilt over "
          f"the new total ({total} steps), so at step {step} the learning rates go from {text(lr_before)} back "
          f"up to {text(lr_after)}, then decay to {cfg.min_lr:g} by epoch {cfg.epochs} (not the same as a run "
          f"asked for {cfg.epochs} epochs from the start)")
    if s.run is not None:
        s.run.create(cfg)                 # config.yaml records the new length (a later --resume reads it)


def train_epoch(s: Session, state: RunState, epoch: int) -> tuple[dict, float]:
    """One epoch of training steps (from where a mid-epoch checkpoint stopped, if it did). Every epoch's
    randomness comes from (seed, epoch); a stop signal or ``--checkpoint-every`` writes a mid-epoch
    checkpoint. Returns (the epoch's training statistics, its seconds)."""
    cfg, method = s.cfg, s.method
    seed = epoch_seed(cfg.seed, epoch)
    rng_seed = seed if s.world is None else s.world.rng_seed(seed)   # data order: seed; dropout: rng_seed
    torch.manual_seed(rng_seed)
    method.start_epoch(rng_seed)
    s.net.train()
    method.reset_stats()
    first, seconds_before = 0, 0.0
    if state.partial is not None:         # resuming in the middle of this epoch
        first, seconds_before = state.partial["step"], state.partial["seconds"]
        method.load_stats_state(state.partial["stats"])
        RunDir.set_rng_state(rank_rng_state(state.partial["rng"], s.world))
        state.partial = None
    finite_every = max(1, s.steps_per_epoch // 4)   # NaN/inf checks: the same steps on every rank and option
    bar = progress_for(cfg, s.steps_per_epoch, f"epoch {epoch}/{cfg.epochs}")
    t0 = time.perf_counter()
    try:
        batches = s.data.train.batches(cfg.batch_size, shuffle=True, augment=True, seed=seed, device=s.device,
                                       drop_last=s.drop_last, start=first)
        for step, (x, y) in enumerate(batches, first):
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            method.train_step(x, y, step)
            if (step + 1) % finite_every == 0:
                method.check_finite(epoch)
            if bar.wants(step):
                bar.update(step, method.running())
            signum = s.stop_signal()
            periodic = cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0
            if signum or (periodic and step + 1 < s.steps_per_epoch):
                method.check_finite(epoch)
                save_mid_epoch(s, state, epoch, step + 1, seconds_before + time.perf_counter() - t0)
            if signum:
                raise preempted(s, signum, f"after step {step + 1}/{s.steps_per_epoch} of epoch {epoch}/{cfg.epochs}")
        method.check_finite(epoch)
        train = method.epoch_stats()      # host sync: the epoch's work is done
    finally:
        bar.close()
    return train, seconds_before + time.perf_counter() - t0


def save_mid_epoch(s: Session, state: RunState, epoch: int, steps_done: int, seconds: float) -> None:
    """A checkpoint of the point ``steps_done`` steps into ``epoch`` (a collective on data-parallel ranks)."""
    mid = mid_epoch_point(s.method, s.world, epoch, steps_done, seconds)
    if s.run is not None:
        save_checkpoint(s.run.last_checkpoint, last_checkpoint(s.cfg, s.net, s.method, state, partial=mid))


def validate_and_choose(s: Session, state: RunState, epoch: int, train: dict, seconds: float) -> dict:
    """Validate the epoch (every ``--val-every`` epochs and always the last), keep the best model by the
    headline strategy's validation accuracy, write the epoch's record and ``last.pt``. Returns the record."""
    cfg, method = s.cfg, s.method
    val = None
    if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
        bar = progress_for(cfg, s.val_split.num_batches(s.eval_batch), f"validate {epoch}/{cfg.epochs}")
        try:
            val = evaluate_split(s.net, s.val_split, s.eval_batch, s.device, s.autocast, cfg.channels_last,
                                 world=s.world, progress=bar, should_stop=s.stop_signal)
        except EvaluationStopped as e:    # the epoch is trained: keep it, validate it on --resume
            save_mid_epoch(s, state, epoch, s.steps_per_epoch, seconds)
            if s.world is not None:
                s.world.barrier()
            raise preempted(s, e.signum, f"while validating epoch {epoch}/{cfg.epochs} (its training is saved; "
                                         "--resume validates it)") from None
        finally:
            bar.close()
    state.epoch, state.train_seconds, state.images = epoch, state.train_seconds + seconds, state.images + method.seen
    record = {"epoch": epoch, "train": train, "lr": method.lrs(), "seconds": seconds,
              "images_per_second": method.seen / max(seconds, 1e-9)}
    if val is not None:
        scores = strategy_scores(cfg.method, val)
        record.update(val=val, val_strategy=scores)
        if scores[headline_strategy(cfg.method)] > state.best["score"]:
            state.best = {"score": scores[headline_strategy(cfg.method)], "epoch": epoch, "val": val}
            if s.run is not None:
                save_checkpoint(s.run.best_checkpoint, best_checkpoint(cfg, s.data.info, s.net, epoch))
            elif s.main:
                state.best_weights = copy.deepcopy(s.net.state_dict())
    if s.run is not None:
        s.run.append_metrics(record)
        save_checkpoint(s.run.last_checkpoint, last_checkpoint(cfg, s.net, method, state))
    if s.board is not None:
        s.board.log_epoch(epoch, record)
    s.log(format_epoch(cfg, record))
    return record


def test_and_summarise(s: Session, state: RunState) -> dict:
    """Test the best-validation model by every strategy (l* chosen on validation), write ``best.pt`` with l*
    and ``summary.json``; return the summary (``{"rank": r}`` on the other data-parallel ranks)."""
    cfg, net = s.cfg, s.net
    if s.run is not None:
        load_model_state(net, load_checkpoint(s.run.best_checkpoint)["model"], s.run.best_checkpoint)
    elif state.best_weights is not None:
        net.load_state_dict(state.best_weights)
    if s.world is not None:
        s.world.broadcast_module(net)
    bar = progress_for(cfg, s.data.test.num_batches(s.eval_batch), "test")
    if s.main and bar.mode == "lines":
        s.log(f"testing the best-validation model (epoch {state.best['epoch']}) on {len(s.data.test)} images")
    try:
        test = evaluate_split(net, s.data.test, s.eval_batch, s.device, s.autocast, cfg.channels_last,
                              world=s.world, progress=bar, confusion=net.num_classes <= CONFUSION_MAX_CLASSES,
                              should_stop=s.stop_signal)
    except EvaluationStopped as e:        # training is done and checkpointed: --resume only tests
        raise preempted(s, e.signum, "while testing the best-validation model (training is finished and saved; "
                                     "--resume tests it)") from None
    finally:
        bar.close()
    if not s.main:
        return {"rank": s.world.rank}
    summary = summarise(s, state, test)
    if s.run is not None:
        save_checkpoint(s.run.best_checkpoint, best_checkpoint(cfg, s.data.info, net, state.best["epoch"]))
        s.run.write_summary(summary)
    if s.board is not None:
        s.board.log_summary(summary, cfg.to_dict())
    return summary


def summarise(s: Session, state: RunState, test: dict) -> dict:
    """summary.json: test accuracy by strategy (and per block, with l* set on the network), the best epoch,
    the data as read, parameters, provenance, time. Sets ``net.best_block`` to l* (ASGE)."""
    from ..runs.provenance import device_name, provenance
    cfg, net, data, best = s.cfg, s.net, s.data, state.best
    summary = {"method": cfg.method, "dataset": cfg.dataset, "model": cfg.model, "split": cfg.split,
               "local_loss": None if cfg.method == "bp" else cfg.local_loss,     # backprop has no local rule
               "width": cfg.width, "channels": net.channels, "epochs": cfg.epochs, "seed": cfg.seed,
               "subset": cfg.subset,
               "recipe": cfg.recipe, "headline": headline_strategy(cfg.method),
               "test_accuracy": strategy_scores(cfg.method, test), "best_epoch": best["epoch"],
               "val_accuracy": strategy_scores(cfg.method, best["val"]), "data": data.info.to_dict(),
               "augmentation": data.train.augmentation, "modules": describe_modules(net)}
    if net.note:                          # how a cut network was cut
        summary["network"] = net.note
    if cfg.channels is not None:
        summary["custom_channels"] = True
    if data.reading:
        summary["reading"] = data.reading
    if data.unreadable:
        summary["unreadable_images"] = len(data.unreadable)
    counts = net.parameter_counts()
    if cfg.method == "asge":
        l_star = 1 + max(range(len(net.blocks)), key=lambda i: best["val"]["block_acc"][i])
        net.best_block.fill_(l_star)
        summary["test_accuracy"]["best"] = test["block_acc"][l_star - 1]
        summary.update(block_test_accuracy=test["block_acc"], block_val_accuracy=best["val"]["block_acc"],
                       best_block=l_star, best_compute_fraction=net.compute_fraction(l_star), parameters=counts)
    else:
        summary.update(block_test_accuracy=[], best_block=None,
                       parameters={"blocks": counts["blocks"], "last": counts["last"]})
    if "confusion" in test:               # rows = true class, columns = predicted, on the test split
        rows = output_rows(len(net.blocks), summary.get("best_block") or 0)
        summary["test_confusion"] = {k: test["confusion"][rows[k]].tolist() for k in summary["test_accuracy"]}
    summary["device_name"] = device_name(s.device)
    summary["provenance"] = provenance(cfg, data, s.device, commands=state.commands)
    if cfg.init_from:
        summary["init_from"] = {k: v for k, v in (state.init or {}).items() if k != "config"} or \
            {"path": cfg.init_from}
    if state.extensions:
        summary["extensions"] = state.extensions
    summary.update(train_seconds=state.train_seconds,
                   images_per_second=state.images / max(state.train_seconds, 1e-9), device=str(s.device),
                   torch=torch.__version__)
    return summary


def preempted(s: Session, signum: int, where: str) -> Preempted:
    """The error a stop signal ends the run with, saying where it stopped and how to continue."""
    again = "the same torchrun command with --resume" if s.world is not None else \
        f"asge train --out {s.cfg.out} --resume"
    hint = f"{s.run.last_checkpoint} holds that point; continue with: {again}" if s.run is not None else \
        "nothing was saved (no --out)"
    return Preempted(f"stopped by {signal.Signals(signum).name} {where}", signum, hint, report=s.main)


def stop_signal(stop: StopSignals, world) -> int:
    """The signal that asks this run to stop (0: none). Data-parallel ranks agree (a collective), and only
    then does the main rank say so: when torchrun stops the survivors of a rank that died, the broken
    collective names that rank instead (one line, not an announcement of a stop that cannot be made)."""
    signum = stop.signum or 0
    if world is None:
        return signum
    agreed = world.max_int(signum)
    if agreed and world.is_main:
        stop.announce_once(agreed)
    return agreed


def format_epoch(cfg: TrainConfig, r: dict) -> str:
    head = f"epoch {r['epoch']:>3}/{cfg.epochs}  {r['seconds']:6.1f}s  {r['images_per_second']:7.0f} img/s  "
    if "val_strategy" not in r:
        loss = r["train"].get("loss", r["train"].get("head_loss"))
        return head + f"(not validated: --val-every {cfg.val_every})" + \
            (f"  train loss {loss:.4f}" if isinstance(loss, float) else "")
    s = r["val_strategy"]
    head += "val "
    if cfg.method == "bp":
        return head + f"last {s['last']:.2f}%  train loss {r['train']['loss']:.4f}"
    blocks = " ".join(f"{a:.1f}" for a in r["val"]["block_acc"])
    return head + f"fusion {s['fusion']:.2f}%  last {s['last']:.2f}%  best {s['best']:.2f}%  blocks [{blocks}]"
