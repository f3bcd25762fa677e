"""Forward + backward time of every pool and context module on one tensor, side by side.

    python benchmarks/module_overhead.py                      # (128, 64, 16, 16) on cuda if present, else cpu
    python benchmarks/module_overhead.py --iters 20 --threads 2 --device cpu

Prints one table: median ms per forward+backward, the ratio to ``identity`` (context modules) or to
2x2 ``avg`` pooling (pools), and, for scale, a 3x3 conv with as many channels (the conv of an ASGE block).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from asge.layers import create_context, create_pool


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(module: nn.Module, x: torch.Tensor, iters: int, warmup: int) -> float:
    """Median milliseconds of ``module(x)`` + backward of a fixed random cotangent."""
    module.train()
    x = x.detach().requires_grad_(True)
    grad = torch.randn_like(module(x))
    times = []
    for i in range(warmup + iters):
        x.grad = None
        module.zero_grad(set_to_none=True)
        _sync(x.device)
        t0 = time.perf_counter()
        y = module(x)
        y.backward(grad)
        _sync(x.device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    c, s = args.channels, args.size
    torch.manual_seed(0)
    x = torch.randn(args.batch, c, s, s, device=device)

    contexts = [
        ("identity", lambda: nn.Identity()),
        ("conv3x3 (scale ref.)", lambda: nn.Conv2d(c, c, 3, padding=1)),
        ("sge (groups 64)", lambda: create_context("sge", c)),
        ("gsop (dim 128)", lambda: create_context("gsop", c)),
        ("gsop-spatial (dim 128, 8x8)", lambda: create_context("gsop-spatial", c)),
        ("ge-minus (global)", lambda: create_context("ge-minus", c)),
        ("ge-minus (extent 4)", lambda: create_context("ge-minus", c, extent=4)),
        ("ge (global, feat_size)", lambda: create_context("ge", c, feat_size=s)),
        ("ge (global, no feat_size)", lambda: create_context("ge", c)),
        ("ge (extent 4)", lambda: create_context("ge", c, extent=4)),
        ("ge-plus (global, feat_size)", lambda: create_context("ge-plus", c, feat_size=s)),
        ("ge-plus (extent 4)", lambda: create_context("ge-plus", c, extent=4)),
    ]
    pools = [
        ("avg 2x2", lambda: create_pool("avg", 2)),
        ("max 2x2", lambda: create_pool("max", 2)),
        ("rms 2x2", lambda: create_pool("rms", 2)),
        ("soft 2x2", lambda: create_pool("soft", 2)),
        ("soft 3x3 s2 p1 (overlapping)", lambda: create_pool("soft", 3, 2, padding=1)),
        ("soft 2x2 legacy_channel_shared", lambda: create_pool("soft", 2, legacy_channel_shared=True)),
    ]

    print(f"forward+backward, x = {tuple(x.shape)} float32 on {device}, threads={torch.get_num_threads()}, "
          f"median of {args.iters}")
    print(f"{'module':34s} {'ms':>9s} {'ratio':>8s}  to")
    for title, rows, base_name in (("context", contexts, "identity"), ("pool", pools, "avg 2x2")):
        results = [(name, time_fwd_bwd(make().to(device), x, args.iters, args.warmup)) for name, make in rows]
        base = dict(results)[base_name]
        print(f"-- {title}")
        for name, ms in results:
            print(f"{name:34s} {ms:9.2f} {ms / base:8.1f}x {base_name}")


if __name__ == "__main__":
    main()
