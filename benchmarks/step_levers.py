"""What each speed-up of the training step is worth: every variant trains its own copy of VGG8 on the same
synthetic batches, steps alternate between the variants (so load hits all alike), median and min ms/step.

    python benchmarks/step_levers.py --width 0.25 --threads 1 --steps 10
    python benchmarks/step_levers.py --variants asge,asge-fused,bp,bp-dropout16

Variants: ``asge`` / ``bp`` as shipped; ``-X`` turns lever X off for that variant:
    fused      ASGE: the plain autograd block step (block.features + local_logits) instead of
               block.fused_local_forward, and no channels_last conversion
    dropout16  nn.Dropout (one generator call per element) instead of Dropout16
    adamfused  AdamW's default per-tensor loop instead of the fused kernel
    betamap    the folded norm's beta map as a one-image conv instead of two small matmuls
    malloc     glibc's default malloc (mmap for large buffers, trimmed on free) during that variant's steps
               instead of asge's setting (allocator.py)
Run with ``OMP_WAIT_POLICY=ACTIVE`` (and without) for the OpenMP setting's share: it is read once, at start.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import time

import torch
from torch import nn

from asge import block as block_mod
from asge import allocator
from asge.runs.allocator import tune_malloc
from asge.perf.bench import synthetic_batches
from asge.config import TrainConfig
from asge.data import DatasetInfo
from asge.train import Backprop, LocalLearning
from asge.runs.build import build_model


class TorchDropout(nn.Dropout):
    """``nn.Dropout``, taking (and ignoring: it has no generator argument) the block's dropout generator, so
    its masks come from the global RNG; the lever measures the mask's cost, not its numbers."""

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return super().forward(x)


@contextlib.contextmanager
def levers_off(off: set[str]):
    """Patch the levers named in ``off`` back to their plain versions while the body runs."""
    saved = []

    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)
    if "fused" in off:
        patch(block_mod.ASGEBlock, "fusable", property(lambda self: False))
    if "betamap" in off:
        patch(block_mod, "beta_map", lambda conv, beta, h, w: conv._conv_forward(
            beta.view(1, -1, 1, 1).expand(1, -1, h, w), conv.weight, None))
    if "malloc" in off:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(allocator.M_MMAP_MAX, 65536)               # glibc's defaults
        mallopt(allocator.M_TRIM_THRESHOLD, 128 * 1024)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
        if "malloc" in off:
            mallopt(allocator.M_MMAP_MAX, 0)
            mallopt(allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)


def alternate(step, names: list[str], steps: int, first: int = 0) -> dict[str, list[float]]:
    """``step(name, s) -> seconds`` for each name, ``steps`` rounds, the order reversed every other round so
    that drifts in the machine's load hit every variant alike. Returns the seconds per name."""
    times = {v: [] for v in names}
    for s in range(steps):
        for v in (names if s % 2 == 0 else names[::-1]):
            times[v].append(step(v, first + s))
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--norm", default="layer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--variants", default="asge,asge-fused,asge-dropout16,asge-adamfused,asge-betamap,asge-malloc,"
                                         "bp,bp-dropout16,bp-adamfused,bp-betamap,bp-malloc")
    args = ap.parse_args(argv)
    malloc = tune_malloc()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(model="vgg8", width=args.width, lr=2e-4, norm=args.norm, batch_size=args.batch_size).resolved()
    info = DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=32)
    batches = synthetic_batches(4, args.batch_size, 3, 32, 10, 0, torch.device("cpu"))
    variants = {}
    for v in args.variants.split(","):
        method, *off = v.split("-")
        torch.manual_seed(0)
        c = dataclasses.replace(cfg, method=method)
        with levers_off(set(off)):
            net = build_model(c, info).train()
            if "dropout16" in off:
                for b in net.blocks:
                    b.dropout = TorchDropout(b.dropout.p)
            m = (LocalLearning if method == "asge" else Backprop)(net, c, 10_000, torch.device("cpu"))
        if hasattr(m, "start_epoch"):
            m.start_epoch(0)
        if "adamfused" in off:
            opts = [m.opt] if method == "bp" else [o for o, _ in m.block_opts] + [m.head_opt[0]]
            for opt in opts:
                for g in opt.param_groups:
                    g["fused"] = None                # the default per-tensor loop
        variants[v] = (m, set(off))

    def step(v: str, s: int) -> float:
        m, off = variants[v]
        x, y = batches[s % len(batches)]
        with levers_off(off):
            t = time.perf_counter()
            m.train_step(x, y, s)
            return time.perf_counter() - t

    names = list(variants)
    for s in range(2):
        for v in names:
            step(v, s)
    times = alternate(step, names, args.steps, first=2)
    print(f"VGG8 width {args.width:g}, norm {args.norm}, batch {args.batch_size}, {args.threads} thread(s), "
          f"malloc setting {'on' if malloc else 'off'}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"load {os.getloadavg()[0]:.1f}")
    for v in names:
        med = statistics.median(times[v])
        base = statistics.median(times[v.split("-")[0]]) if v.split("-")[0] in times else None
        rel = f"  {med / base:5.2f}x of {v.split('-')[0]}" if base and "-" in v else ""
        print(f"  {v:18s} median {med * 1e3:8.1f} ms  min {min(times[v]) * 1e3:8.1f} ms{rel}")
    if "asge" in times and "bp" in times:
        print(f"  BP/ASGE step time (medians): {statistics.median(times['bp']) / statistics.median(times['asge']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
