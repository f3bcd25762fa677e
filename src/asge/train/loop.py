"""The epoch loop shared by ASGE and the backprop baseline: data, model, run directory, evaluation, test.

``fit(cfg)`` is what ``asge train`` calls. The algorithm itself lives in ``local.py`` (and ``backprop.py``);
this file only drives it: seeds every epoch, checkpoints atomically after every epoch, resumes bit-exactly,
picks the best-validation checkpoint and tests it with every prediction strategy. Evaluation is
``evaluation.py``, what a checkpoint holds and the ``--resume`` checks ``resume.py``, the progress display
``progress.py``.
"""
from __future__ import annotations

import contextlib
import copy
import signal
import time
from typing import Callable, Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import AsgeError, CheckpointError, Preempted
from ..runs.build import build_model, load_run_data, resolve_device
from ..runs.directory import RunDir, load_checkpoint, load_model_state, save_checkpoint
from ..runs.lock import RunLock
from ..runs.preempt import StopSignals
from ..runs.evaluation import (CONFUSION_MAX_CLASSES, EvaluationStopped, evaluate, headline_strategy, output_rows,
                         split_subset, strategy_scores)
from .graphs import maybe_graphed
from .local import autocast_for
from ..runs.progress import progress_for
from .resume import (check_resume, extends, finished_message, last_state, load_init_weights, mid_epoch_point,
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


def fit(cfg: TrainConfig, *, resume: bool = False, on_epoch_end: Optional[Callable[[int, dict], None]] = None,
        log: Callable[[str], None] = print, method_kwargs: Optional[dict] = None,
        method_factory: Optional[Callable] = None, world=None) -> dict:
    """Train by ``cfg`` (ASGE or backprop), test the best-validation model, return the summary dict.

    With ``cfg.out`` everything is written to that run directory, which this process locks for the whole
    run (:mod:`asge.runs.lock`: a second process on it stops at once, naming this one). ``resume=True``
    continues its last checkpoint, written at an epoch's end or in the middle of one; a finished run's summary
    is returned as it is, nothing recomputed or rewritten (:func:`check_resume`).
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written.

    SIGTERM or SIGINT stops the run after its current step with a checkpoint of that point, and raises
    :class:`~asge.errors.Preempted` (:mod:`asge.runs.preempt`); ``cfg.checkpoint_every`` writes such mid-epoch
    checkpoints every N steps as well.

    Hooks for the pipelined and data-parallel modes (``pipeline.py``, ``distributed.py``):
    ``method_factory(net, cfg, total_steps, device)`` replaces ``METHODS[cfg.method]``; ``world`` (see
    ``distributed.World``) makes this one rank of a data-parallel group: every rank trains, evaluates and
    tests its share of each batch, and makes every collective at the same point; only the main rank writes
    the run directory.
    """
    cfg.validate()
    from ..layers.context import check_context_options
    check_context_options(cfg.context, cfg.context_options)   # before the data: one line, naming the keys
    model_note = default_model_note(cfg)
    cfg = cfg.resolved()
    main = world is None or world.is_main
    finished = check_resume(cfg, resume, require_run=False)
    if finished is not None and world is None and method_factory is None:
        log(finished_message(cfg.out, finished))
        return finished
    with contextlib.ExitStack() as held:
        run = None
        if cfg.out and main:
            held.enter_context(RunLock(cfg.out, log=log))
            run = RunDir(cfg.out)
        stop = held.enter_context(StopSignals(announce=world is None))   # ranks: once they agree (stop_signal)
        if model_note and main:
            log(model_note)
        return _train(cfg, run, stop, held, resume=resume, on_epoch_end=on_epoch_end, log=log,
                      method_kwargs=method_kwargs, method_factory=method_factory, world=world)


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
                     f"{SMALL_VALIDATION}): expect them to be noisy; the summary gives 95% intervals")
    return lines


#: The run directory's list of files left out by --skip-unreadable.
UNREADABLE_FILE = "unreadable.txt"


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


def _train(cfg: TrainConfig, run: Optional[RunDir], stop: StopSignals, held: contextlib.ExitStack, *, resume,
           on_epoch_end, log, method_kwargs, method_factory, world) -> dict:
    """``fit`` once the run directory is locked and the stop signals are caught; ``held`` closes what is
    opened here (the TensorBoard file) however the run ends."""
    from .methods import METHODS
    device = resolve_device(cfg.device) if world is None else world.device
    main = world is None or world.is_main
    ckpt = None
    if run is not None and run.checkpoint_exists():
        if not resume:
            raise AsgeError(f"{run.path} already holds a run; pass --resume to continue it, or choose "
                            "another --out")
        ckpt = load_checkpoint(run.last_checkpoint)
        saved = TrainConfig.from_dict(ckpt["config"])
        diff = "" if extends(cfg, saved) else cfg.differences(saved)
        if diff:
            raise CheckpointError(f"cannot resume {run.path}: the configuration differs from the "
                                  f"checkpoint's in {diff}")

    data = load_run_data(cfg, device)
    val_split = split_subset(data.val, cfg.val_subset)       # fixed (seed 42): the same for every run
    if main:
        for line in describe_data(data, len(val_split)):
            log(line)
    torch.manual_seed(cfg.seed)    # modules that draw their init from the global RNG (context layers)
    net = build_model(cfg, data.info).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    drop_last = train_drop_last(net, cfg, len(data.train), log if main else (lambda _: None),
                                1 if world is None else world.size)
    steps_per_epoch = data.train.num_batches(cfg.batch_size, drop_last)
    method = (method_factory or METHODS[cfg.method])(net, cfg, steps_per_epoch * cfg.epochs, device,
                                                      **(method_kwargs or {}))
    method = maybe_graphed(method, cfg, device, world, log)     # --cuda-graphs (graphs.py)
    autocast = autocast_for(cfg, device)
    eval_batch = max(cfg.batch_size, 256)

    start, best, best_state, train_seconds, images = 1, {"score": -1.0, "epoch": 0, "val": None}, None, 0.0, 0
    partial, extensions, init = None, [], None
    if world is not None:                 # every rank starts from the main rank's weights and checkpoint
        ckpt = world.broadcast_object(ckpt)
    if ckpt is None and cfg.init_from:    # before run.create: a bad source leaves nothing written
        init = load_init_weights(net, cfg.init_from)
        if run is not None:
            log(f"starting from the model weights of {init['path']} (epoch {init['epoch']}); optimizer and "
                "schedule are new")
    if ckpt is not None:
        load_model_state(net, ckpt["model"], cfg.out)
        method.load_state_dict(ckpt["method"])
        RunDir.set_rng_state(ckpt.get("rng"))
        start, best = ckpt["epoch"] + 1, ckpt["best"]
        train_seconds, images = ckpt["train_seconds"], ckpt["images"]
        partial = ckpt.get("partial")
        extensions = list(ckpt.get("extensions") or [])
        if run is not None:
            run.truncate_metrics(ckpt["epoch"])
        log(f"resuming {cfg.out} " + (f"at step {partial['step']}/{steps_per_epoch} of epoch {partial['epoch']}"
                                      if partial else f"after epoch {ckpt['epoch']}") + f"/{cfg.epochs}")
        saved_epochs = (ckpt.get("config") or {}).get("epochs")
        if isinstance(saved_epochs, int) and saved_epochs < cfg.epochs:     # --resume --epochs N: extend
            if cfg.pipeline > 1:
                raise AsgeError("extending a run (--epochs beyond its own) is not supported with --pipeline; "
                                "extend it without --pipeline")
            lr_before = method.lrs()
            step = rebuild_schedules(method, steps_per_epoch * cfg.epochs)
            lr_after = method.lrs()
            extensions.append({"from_epochs": saved_epochs, "to_epochs": cfg.epochs, "at_step": step,
                               "lr_before": lr_before, "lr_after": lr_after})
            text = lambda lrs: ", ".join(f"{k} {v:.3g}" for k, v in lrs.items())  # noqa: E731
            log(f"extending {cfg.out} from {saved_epochs} to {cfg.epochs} epochs: the cosine schedule is rebuilt "
                f"over the new total ({steps_per_epoch * cfg.epochs} steps), so at step {step} the learning "
                f"rates go from {text(lr_before)} back up to {text(lr_after)}, then decay to {cfg.min_lr:g} by "
                f"epoch {cfg.epochs} (not the same as a run asked for {cfg.epochs} epochs from the start)")
            if run is not None:
                run.create(cfg)           # config.yaml records the new length (a later --resume reads it)
    elif run is not None:
        run.create(cfg)
        run.truncate_metrics(0)
    if run is not None and data.unreadable:
        (run.path / UNREADABLE_FILE).write_text("".join(line + "\n" for line in data.unreadable))
    if world is not None:
        world.broadcast_module(net)

    board = None
    if cfg.tensorboard and run is not None:
        from .tensorboard import TensorBoardLogger
        board = held.enter_context(TensorBoardLogger(run.path))

    def preempted(signum: int, where: str) -> Preempted:
        again = ("the same torchrun command with --resume" if world is not None
                 else f"asge train --out {cfg.out} --resume")
        hint = f"{run.last_checkpoint} holds that point; continue with: {again}" if run is not None else \
            "nothing was saved (no --out)"
        return Preempted(f"stopped by {signal.Signals(signum).name} {where}", signum, hint, report=main)

    finite_every = max(1, steps_per_epoch // 4)   # NaN/inf checks: the same steps on every rank and option
    for epoch in range(start, cfg.epochs + 1):
        seed = epoch_seed(cfg.seed, epoch)
        rng_seed = seed if world is None else world.rng_seed(seed)   # data order: seed; dropout: rng_seed
        torch.manual_seed(rng_seed)
        if hasattr(method, "start_epoch"):
            method.start_epoch(rng_seed)
        net.train()
        method.reset_stats()
        first, seconds_before = 0, 0.0
        if partial is not None:               # resuming in the middle of this epoch
            first, seconds_before = partial["step"], partial["seconds"]
            method.load_stats_state(partial["stats"])
            RunDir.set_rng_state(rank_rng_state(partial["rng"], world))
            partial = None
        bar = progress_for(cfg, steps_per_epoch, f"epoch {epoch}/{cfg.epochs}")
        t0 = time.perf_counter()
        try:
            for step, (x, y) in enumerate(data.train.batches(cfg.batch_size, shuffle=True, augment=True,
                                                             seed=seed, device=device, drop_last=drop_last,
                                                             start=first), first):
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                method.train_step(x, y, step)
                if (step + 1) % finite_every == 0:
                    method.check_finite(epoch)
                if bar.wants(step):
                    bar.update(step, method.running())
                signum = stop_signal(stop, world)
                periodic = cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0
                if signum or (periodic and step + 1 < steps_per_epoch):
                    method.check_finite(epoch)
                    mid = mid_epoch_point(method, world, epoch, step + 1, seconds_before + time.perf_counter() - t0)
                    if run is not None:
                        save_checkpoint(run.last_checkpoint, last_state(cfg, net, method, epoch - 1, best,
                                                                        train_seconds, images, partial=mid,
                                                                        extensions=extensions))
                if signum:
                    if world is not None:
                        world.barrier()   # no rank leaves before the main rank's checkpoint is written
                    raise preempted(signum, f"after step {step + 1}/{steps_per_epoch} of epoch {epoch}/{cfg.epochs}")
            method.check_finite(epoch)
            train = method.epoch_stats()      # host sync: the epoch's work is done
        finally:
            bar.close()
        seconds = seconds_before + time.perf_counter() - t0
        val = None
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:     # the last epoch is always validated
            bar = progress_for(cfg, val_split.num_batches(eval_batch), f"validate {epoch}/{cfg.epochs}")
            try:
                val = evaluate(net, val_split, eval_batch, device, autocast, cfg.channels_last, world=world,
                               progress=bar, should_stop=lambda: stop_signal(stop, world))
            except EvaluationStopped as e:    # the epoch is trained: keep it, validate it on --resume
                mid = mid_epoch_point(method, world, epoch, steps_per_epoch, seconds)
                if run is not None:
                    save_checkpoint(run.last_checkpoint, last_state(cfg, net, method, epoch - 1, best,
                                                                    train_seconds, images, partial=mid,
                                                                    extensions=extensions))
                if world is not None:
                    world.barrier()
                raise preempted(e.signum, f"while validating epoch {epoch}/{cfg.epochs} (its training is "
                                          "saved; --resume validates it)") from None
            finally:
                bar.close()
        train_seconds += seconds
        images += method.seen
        record = {"epoch": epoch, "train": train, "lr": method.lrs(), "seconds": seconds,
                  "images_per_second": method.seen / max(seconds, 1e-9)}
        if val is not None:
            scores = strategy_scores(cfg.method, val)
            record.update(val=val, val_strategy=scores)
        if val is not None and scores[headline_strategy(cfg.method)] > best["score"]:
            score = scores[headline_strategy(cfg.method)]
            best = {"score": score, "epoch": epoch, "val": val}
            if run is not None:
                save_checkpoint(run.best_checkpoint, {"epoch": epoch, "config": cfg.to_dict(),
                                                      "data": data.info.to_dict(), "model": net.state_dict()})
            elif main:
                best_state = copy.deepcopy(net.state_dict())
        if run is not None:
            run.append_metrics(record)
            save_checkpoint(run.last_checkpoint, last_state(cfg, net, method, epoch, best, train_seconds, images,
                                                            extensions=extensions))
        if board is not None:
            board.log_epoch(epoch, record)
        log(format_epoch(cfg, record))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        signum = stop_signal(stop, world)
        if signum:
            raise preempted(signum, f"after epoch {epoch}/{cfg.epochs}")

    # Test the best-validation model with every strategy.
    if run is not None:
        load_model_state(net, load_checkpoint(run.best_checkpoint)["model"], run.best_checkpoint)
    elif best_state is not None:
        net.load_state_dict(best_state)
    if world is not None:
        world.broadcast_module(net)
    bar = progress_for(cfg, data.test.num_batches(eval_batch), "test")
    if main and bar.mode == "lines":
        log(f"testing the best-validation model (epoch {best['epoch']}) on {len(data.test)} images")
    try:
        test = evaluate(net, data.test, eval_batch, device, autocast, cfg.channels_last, world=world,
                        progress=bar, confusion=net.num_classes <= CONFUSION_MAX_CLASSES,
                        should_stop=lambda: stop_signal(stop, world))
    except EvaluationStopped as e:        # training is done and checkpointed: --resume only tests
        raise preempted(e.signum, "while testing the best-validation model (training is finished and saved; "
                                  "--resume tests it)") from None
    finally:
        bar.close()
    if not main:
        return {"rank": world.rank}
    summary = {"method": cfg.method, "dataset": cfg.dataset, "model": cfg.model, "width": cfg.width,
               "channels": net.channels, "epochs": cfg.epochs, "seed": cfg.seed, "subset": cfg.subset,
               "recipe": cfg.recipe, "headline": headline_strategy(cfg.method),
               "test_accuracy": strategy_scores(cfg.method, test), "best_epoch": best["epoch"],
               "val_accuracy": strategy_scores(cfg.method, best["val"]), "data": data.info.to_dict(),
               "augmentation": data.train.augmentation}
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
                       best_block=l_star, best_compute_fraction=net.compute_fraction(l_star),
                       parameters=counts)
    else:
        summary.update(block_test_accuracy=[], best_block=None,
                       parameters={"blocks": counts["blocks"], "last": counts["last"]})
    if "confusion" in test:               # rows = true class, columns = predicted, on the test split
        rows = output_rows(len(net.blocks), summary.get("best_block") or 0)
        summary["test_confusion"] = {k: test["confusion"][rows[k]].tolist() for k in summary["test_accuracy"]}
    from ..runs.provenance import device_name, provenance
    summary["device_name"] = device_name(device)
    from .resume import command_history
    summary["provenance"] = provenance(cfg, data, device, commands=command_history(cfg))
    if cfg.init_from:
        summary["init_from"] = {k: v for k, v in (init or {}).items() if k != "config"} or {"path": cfg.init_from}
    if extensions:
        summary["extensions"] = extensions
    summary.update(train_seconds=train_seconds, images_per_second=images / max(train_seconds, 1e-9),
                   device=str(device), torch=torch.__version__)
    if run is not None:
        save_checkpoint(run.best_checkpoint, {"epoch": best["epoch"], "config": cfg.to_dict(),
                                              "data": data.info.to_dict(), "model": net.state_dict()})
        run.write_summary(summary)
    if board is not None:
        board.log_summary(summary, cfg.to_dict())
    return summary


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
