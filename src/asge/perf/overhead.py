"""``asge bench --overhead``: the host time of one training step, ASGE against backprop.

At VGG8 width 1/32 (channels 4..16), batch 1 and one thread the arithmetic of a step is almost nothing, so
its time is what the host spends calling operators, autograd, the optimizer and the bookkeeping: the cost
that bounds a GPU step when the kernels are small (docs/performance.md). Steps alternate (ASGE, BP, BP,
ASGE, ...) so that load changes hit both; each step is timed on its own, and the median of each method and
the ratio of the medians are printed. A measurement, not a grade.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from ..config import METHODS, TrainConfig


def overhead_methods(cfg: TrainConfig, device: torch.device, total_steps: int) -> tuple[dict, list]:
    """ASGE and BP on their own copies of one network (same seed), and 8 synthetic batches of ``cfg``'s size.

    Returns ({"asge": LocalLearning, "bp": Backprop}, [(x (B, 3, S, S), labels (B,))])."""
    from .batches import synthetic_batches
    from ..data import DatasetInfo
    from ..nn.presets import get_preset
    from ..train.methods import METHODS as BY_NAME
    from ..runs.build import build_model

    size = cfg.input_size or get_preset(cfg.model)["image_size"]
    info = DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=size)
    batches = synthetic_batches(8, cfg.batch_size, info.in_channels, size, info.num_classes, cfg.seed, device)
    methods = {}
    for name in METHODS:
        torch.manual_seed(cfg.seed)
        c = dataclasses.replace(cfg, method=name)
        net = build_model(c, info).to(device)
        net.train()
        m = BY_NAME[name](net, c, total_steps, device)
        m.start_epoch(cfg.seed)
        methods[name] = m
    return methods, batches


def overhead_batch(cfg: TrainConfig) -> int:
    """The batch ``--overhead`` measures ``cfg``'s network at: the smallest it trains on
    (:func:`asge.train.loop.smallest_batch` of the network built from ``cfg``)."""
    from ..data import DatasetInfo
    from ..nn.presets import get_preset
    from ..runs.build import build_model
    from ..train.loop import smallest_batch as smallest
    size = cfg.input_size or get_preset(cfg.model)["image_size"]
    return smallest(build_model(cfg, DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=size)))


def measure_overhead(cfg: TrainConfig, device: torch.device, *, steps: int = 200, warmup: int = 10) -> dict:
    """Per-step host time (ms) of both methods over ``steps`` alternating steps each, after ``warmup``.

    Returns {"step_ms": {method: [ms, ...]}, "median_ms": {method: ms}, "ratio": asge / bp medians, ...}."""
    methods, batches = overhead_methods(cfg, device, steps + warmup + 2)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {k: [] for k in methods}
    order = list(methods)
    for i in range(warmup + steps):
        for name in (order if i % 2 == 0 else order[::-1]):
            x, y = batches[i % len(batches)]
            sync()
            t = time.perf_counter()
            methods[name].train_step(x, y, i)
            sync()
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t))
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"model": cfg.model, "width": cfg.width, "channels": methods["asge"].net.channels,
            "batch_size": cfg.batch_size, "threads": torch.get_num_threads(), "device": str(device),
            "steps": steps, "warmup": warmup, "step_ms": times, "median_ms": median,
            "quartiles_ms": {k: statistics.quantiles(v, n=4) for k, v in times.items()},
            "ratio": median["asge"] / median["bp"]}


def format_overhead(r: dict) -> str:
    m, q = r["median_ms"], r["quartiles_ms"]
    return (f"host time per step, {r['model']} width {r['width']:g} (channels {r['channels'][0]}.."
            f"{max(r['channels'])}), batch {r['batch_size']}, {r['threads']} thread(s), {r['steps']} steps each:\n"
            f"  ASGE median {m['asge']:.2f} ms (quartiles {q['asge'][0]:.2f}-{q['asge'][2]:.2f})\n"
            f"  BP   median {m['bp']:.2f} ms (quartiles {q['bp'][0]:.2f}-{q['bp'][2]:.2f})\n"
            f"  ASGE/BP {r['ratio']:.2f}x")


def run_overhead(args) -> int:
    """``asge bench --overhead``: VGG8 (``--model``) at width 1/32, batch 1 (2 for a network with BatchNorm
    layers, e.g. ``--recipe plus``'s context), one thread (``--threads`` to
    change it), ``--overhead-steps`` alternating steps per method; prints the medians and their ratio and
    writes ``OUT/overhead.json``."""
    import json
    import os
    from pathlib import Path

    from ..errors import AsgeError
    from ..runs.build import resolve_device
    if args.overhead_steps < 2:
        raise AsgeError(f"--overhead-steps must be at least 2, got {args.overhead_steps}")
    torch.set_num_threads(args.threads or 1)
    device = resolve_device(args.device)
    cfg = TrainConfig.from_dict(dict(recipe=args.recipe, dataset="digits", model=args.model, width=1 / 32,
                                     batch_size=1, lr=args.lr, seed=args.seed, device=str(device),
                                     amp=args.amp)).resolved()
    why, batch = "", overhead_batch(cfg)
    if batch > 1:                        # a context with BatchNorm layers cannot train on one image
        cfg = dataclasses.replace(cfg, batch_size=batch)
        why = f" (the BatchNorm layers of context {cfg.context!r} need {batch} images)"
    print(f"{args.model} width 1/32, batch {cfg.batch_size}{why}, {torch.get_num_threads()} thread(s) on "
          f"{device}: {args.overhead_steps} alternating steps per method", flush=True)
    r = measure_overhead(cfg, device, steps=args.overhead_steps, warmup=max(args.warmup, 10))
    r.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), torch=torch.__version__, recipe=args.recipe,
             load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(r, indent=2) + "\n")
    print(format_overhead(r))
    print(f"wrote {out / 'overhead.json'}")
    return 0
