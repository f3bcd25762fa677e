"""What ``--compile`` costs and buys: compile time (the first two steps) and step time, eager against
compiled, for both methods, steps alternating between the four variants.

    python benchmarks/compile_cost.py --width 0.25 --threads 1 --steps 8
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from asge.runs.allocator import tune_malloc
from asge.perf.bench import synthetic_batches
from asge.config import TrainConfig
from asge.data import DatasetInfo
from asge.train import Backprop, LocalLearning
from asge.runs.build import build_model

from step_levers import alternate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args(argv)
    tune_malloc()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(model="vgg8", width=args.width, lr=2e-4).resolved()
    info = DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=32)
    batches = synthetic_batches(4, 128, 3, 32, 10, 0, torch.device("cpu"))
    methods = {}
    for name in ("asge", "asge-compiled", "bp", "bp-compiled"):
        torch.manual_seed(0)
        c = dataclasses.replace(cfg, method=name.split("-")[0], compile=name.endswith("compiled"))
        m = (LocalLearning if c.method == "asge" else Backprop)(build_model(c, info).train(), c, 10_000,
                                                                 torch.device("cpu"))
        if hasattr(m, "start_epoch"):
            m.start_epoch(0)
        t = time.perf_counter()
        for s in range(2):
            m.train_step(*batches[s], s)
        print(f"{name:15s} first two steps (compilation): {time.perf_counter() - t:8.1f} s", flush=True)
        methods[name] = m
    def step(k: str, s: int) -> float:
        t = time.perf_counter()
        methods[k].train_step(*batches[s % len(batches)], s)
        return time.perf_counter() - t

    times = alternate(step, list(methods), args.steps, first=2)
    for k, v in times.items():
        print(f"{k:15s} step median {statistics.median(v) * 1e3:8.1f} ms  min {min(v) * 1e3:8.1f} ms")
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
