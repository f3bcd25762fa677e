"""``asge bench``: ASGE against the backprop baseline on the same network and the same batches, in one run.

Both methods train their own copy of one network (same seed, same initial weights) on the same sequence of
batches. Timing alternates short chunks of steps (ASGE, BP, BP, ASGE, ...) so that machine noise hits both
alike; images/s is the total images over the total time of each method's chunks. Memory is measured
without CUDA: every tensor that autograd saves for backward passes through
``torch.autograd.graph.saved_tensors_hooks`` and is counted (by storage, once) for as long as autograd holds
it; the peak over one training step is reported. For ASGE only one block's graph is alive at a time, so
its peak is one block's saved bytes; for BP it is the whole network's. On CUDA the peak allocated memory
of a step is reported too.

Writes ``OUT/bench.json`` and prints a table; ``--profile`` adds torch.profiler tables of one step each.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import time
import weakref
from pathlib import Path
from typing import Iterable, Optional

import torch

from .config import TrainConfig
from .errors import AsgeError

RESULT_KEYS = ("model", "width", "channels", "batch_size", "device", "images_per_second", "speed_ratio",
               "saved_activation_bytes", "memory_ratio", "asge_block_saved_bytes", "cuda_peak_bytes",
               "train_flops_per_image", "achieved_gflops")


# ---------------------------------------------------------------------------------------------------------
# Saved-for-backward memory
# ---------------------------------------------------------------------------------------------------------

class _Packed:
    """What autograd holds instead of a saved tensor while the meter is on (freed with the graph)."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Live bytes of the tensors autograd saves for backward; ``peak`` is the maximum over the region.

    Each storage counts once however many ops save it (a view counts its whole storage: that is what stays
    alive). Storages of ``exclude`` (parameters, buffers) are not activations and are not counted. A saved
    tensor stops counting when autograd releases it (after its node's backward, or when the graph dies).
    ``marks`` records the live bytes at points named by :meth:`mark` (e.g. after each block's step).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.live: dict[int, list[int]] = {}     # storage pointer -> [bytes, holders]
        self.current = 0
        self.peak = 0
        self.marks: list[tuple[str, int]] = []
        self._window_peak = 0

    def _pack(self, t: torch.Tensor):
        st = t.untyped_storage()
        ptr, nbytes = st.data_ptr(), st.nbytes()
        if ptr in self.exclude or nbytes == 0 or t.device.type == "meta":
            return t
        entry = self.live.get(ptr)
        if entry is None:
            self.live[ptr] = [nbytes, 1]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            self._window_peak = max(self._window_peak, self.current)
        else:
            entry[1] += 1
        box = _Packed(t)
        weakref.finalize(box, self._release, ptr)
        return box

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    @staticmethod
    def _unpack(box):
        return box.tensor if isinstance(box, _Packed) else box

    def mark(self, name: str) -> None:
        """Record the peak since the previous mark under ``name``."""
        self.marks.append((name, self._window_peak))
        self._window_peak = self.current

    @contextlib.contextmanager
    def __call__(self):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self


def model_tensors(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.data for p in net.parameters()] + list(net.buffers())


def measure_saved_bytes(method, x: torch.Tensor, y: torch.Tensor, step: int = 0) -> tuple[int, list[int]]:
    """Peak saved-for-backward bytes of one ``method.train_step`` (and, for ASGE, each block's peak)."""
    meter = SavedTensorMeter(model_tensors(method.net))
    per_block: list[int] = []
    if hasattr(method, "run_blocks"):          # ASGE: mark after every block, then the heads
        blocks = len(method.net.blocks)
        with meter():
            h, feats, losses, correct = x, [], [], []
            for l in range(blocks):
                h, f, lo, c = method.run_blocks(h, y, step, l, l + 1)
                feats += f
                losses += lo
                correct += c
                meter.mark(f"block{l + 1}")
            head_correct = method.heads_step(feats, y)
            meter.mark("heads")
            method.record(losses, correct, y.shape[0], step, head_correct=head_correct)
        per_block = [b for _, b in meter.marks]
    else:
        with meter():
            method.train_step(x, y, step)
    return meter.peak, per_block


# ---------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------

def _conv_nodes(block, needs_input_grad: bool, train_batch: int = 128, batch: int = 2):
    """(MACs per image, computes its input's gradient) of every convolution in one training forward of
    ``block``, read from the autograd graph of a small probe batch (so it follows whatever the block does,
    e.g. an entry norm folded into the conv). A conv whose batch is not the probe's runs once per batch:
    its cost per image is divided by ``train_batch``."""
    p = next(block.parameters())
    x = torch.randn(batch, block.in_channels, block.in_size, block.in_size, device=p.device, dtype=p.dtype)
    x.requires_grad_(needs_input_grad)
    y = block.features(x)
    out, seen, stack = [], set(), [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == "ConvolutionBackward0":
            b, cin, h, w = node._saved_input.shape
            cout, _, kh, kw = node._saved_weight.shape
            per = batch if b == batch else train_batch
            out.append((b * cin * cout * kh * kw * h * w / per, node.next_functions[0][0] is not None))
        stack.extend(f for f, _ in node.next_functions)
    return out


def conv_needs_input_grad(net, method: str) -> list[bool]:
    """Whether each block's (main) conv computes the gradient of its input in a training step.

    BP: every block but the first (whose input is the image needs none); ASGE: none by detachment, unless
    something before the conv learns from the block's loss (a trainable entry norm applied before the conv).
    """
    return [max(_conv_nodes(b, method == "bp" and i > 0))[1] for i, b in enumerate(net.blocks)]


def conv_flops(net, method: str, batch: int = 128) -> dict:
    """Analytical conv FLOPs per training image: forward 2*MACs, weight gradient 2*MACs, input gradient
    2*MACs for the convolutions that compute it (read from the autograd graph, see ``_conv_nodes``)."""
    fwd = wgrad = igrad = 0.0
    for i, b in enumerate(net.blocks):
        for macs, needs in _conv_nodes(b, method == "bp" and i > 0, batch):
            fwd += 2 * macs
            wgrad += 2 * macs
            igrad += 2 * macs if needs else 0
    return {"forward": int(fwd), "weight_grad": int(wgrad), "input_grad": int(igrad),
            "total": int(fwd + wgrad + igrad)}


def matmul_peak_gflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best of ``reps`` fp32 n x n matmuls, in GFLOP/s (2 n^3 per product)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batches(n: int, batch_size: int, in_channels: int, size: int, num_classes: int, seed: int,
                      device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of random images (per-image RMS 1, as the datasets yield) and random labels."""
    from .data import rms_normalize
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(batch_size, in_channels, size, size, generator=g)
        y = torch.randint(0, num_classes, (batch_size,), generator=g)
        out.append((rms_normalize(x).to(device), y.to(device)))
    return out


def real_batches(cfg: TrainConfig, n: int, device: torch.device):
    from .train.loop import load_run_data
    data = load_run_data(cfg, device, download=False)
    out = []
    while len(out) < n:
        for xy in data.train.batches(cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed + len(out),
                                     device=device, drop_last=True):
            out.append(xy)
            if len(out) == n:
                break
        if not out:
            raise AsgeError(f"{cfg.dataset}: fewer training images than one batch of {cfg.batch_size}")
    return out, data.info


def bench_one(cfg: TrainConfig, *, steps: int, warmup: int, chunk: int, device: torch.device,
              profile_dir: Optional[Path] = None, log=print) -> dict:
    """Benchmark ASGE and BP for one configuration; returns the result record (see RESULT_KEYS)."""
    from .presets import get_preset
    from .train import Backprop, LocalLearning
    from .train.loop import build_model
    from .data import DatasetInfo

    n_batches = max(1, min(steps + warmup, 16))
    if cfg.dataset == "synthetic":
        size = cfg.input_size or get_preset(cfg.model)["image_size"]
        info = DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=size)
        batches = synthetic_batches(n_batches, cfg.batch_size, info.in_channels, size, info.num_classes,
                                    cfg.seed, device)
    else:
        batches, info = real_batches(cfg, n_batches, device)
    if cfg.channels_last:
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]

    methods = {}
    for name, cls in (("asge", LocalLearning), ("bp", Backprop)):
        torch.manual_seed(cfg.seed)
        net = build_model(dataclasses.replace(cfg, method=name), info).to(device)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.train()
        m = cls(net, dataclasses.replace(cfg, method=name), max(1, steps + warmup + 2), device)
        if cfg.cuda_graphs == "on":            # captured after GraphedStep's eager warm-up, within ours
            from .train.graphs import GraphedStep
            m = GraphedStep(m, warmup=max(0, min(3, warmup - 1)))
        if hasattr(m, "start_epoch"):
            m.start_epoch(cfg.seed)
        methods[name] = m

    counters = {k: 0 for k in methods}

    def run(name: str, k: int) -> float:
        m = methods[name]
        _sync(device)
        t = time.perf_counter()
        for _ in range(k):
            x, y = batches[counters[name] % len(batches)]
            m.train_step(x, y, counters[name])
            counters[name] += 1
        _sync(device)
        return time.perf_counter() - t

    log(f"  warm-up ({warmup} steps each{', compiling' if cfg.compile else ''})")
    for name in methods:
        run(name, warmup)

    # Memory: one (untimed) step each under the saved-tensor meter; CUDA peak on GPUs.
    saved, per_block, cuda_peak = {}, [], None
    for name, m in methods.items():
        x, y = batches[counters[name] % len(batches)]
        saved[name], blocks = measure_saved_bytes(getattr(m, "method", m), x, y, counters[name])   # eager
        counters[name] += 1
        if name == "asge":
            per_block = blocks
    if device.type == "cuda":
        cuda_peak = {}
        for name in methods:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            run(name, 1)
            cuda_peak[name] = torch.cuda.max_memory_allocated(device) - base

    # Timing: alternating chunks, order swapped every round (ABBA), so drifts in load hit both.
    seconds = {k: 0.0 for k in methods}
    done = {k: 0 for k in methods}
    chunk_ratios = []
    order = list(methods)
    rounds = 0
    while min(done.values()) < steps:
        k = min(chunk, steps - min(done.values()))
        times = {}
        for name in (order if rounds % 2 == 0 else order[::-1]):
            times[name] = run(name, k)
            seconds[name] += times[name]
            done[name] += k
        chunk_ratios.append(times["bp"] / max(times["asge"], 1e-12))
        rounds += 1
        log(f"  chunk {rounds}: asge {k * cfg.batch_size / times['asge']:7.1f} img/s   "
            f"bp {k * cfg.batch_size / times['bp']:7.1f} img/s")

    ips = {k: done[k] * cfg.batch_size / seconds[k] for k in methods}
    speed_ratio = ips["asge"] / ips["bp"]
    memory_ratio = saved["asge"] / max(saved["bp"], 1)
    flops = {k: conv_flops(methods[k].net, k, cfg.batch_size) for k in methods}
    record = {
        "model": cfg.model, "width": cfg.width, "channels": methods["asge"].net.channels,
        "batch_size": cfg.batch_size, "steps": steps, "warmup": warmup, "chunk": chunk,
        "dataset": cfg.dataset, "device": str(device), "amp": cfg.amp, "channels_last": cfg.channels_last,
        "recipe": cfg.recipe, "norm": cfg.norm, "pool": cfg.pool, "context": cfg.context,
        "head_features": cfg.head_features,
        "compile": cfg.compile, "cuda_graphs": cfg.cuda_graphs, "threads": torch.get_num_threads(),
        "cuda_graph_pool_bytes": ({k: graph_pool_bytes(m) for k, m in methods.items()}
                                  if cfg.cuda_graphs == "on" else None),
        "images_per_second": ips, "seconds": seconds, "speed_ratio": speed_ratio,
        "chunk_speed_ratios": chunk_ratios,
        "chunk_speed_ratio_median": statistics.median(chunk_ratios),
        "saved_activation_bytes": saved, "memory_ratio": memory_ratio,
        "asge_block_saved_bytes": per_block, "cuda_peak_bytes": cuda_peak,
        "train_flops_per_image": {k: v["total"] for k, v in flops.items()},
        "conv_flops_per_image": flops,
        "achieved_gflops": {k: flops[k]["total"] * ips[k] / 1e9 for k in methods},
    }
    if profile_dir is not None:
        record["profile"] = profile_methods(methods, batches, counters, profile_dir, cfg, device)
    return record


def graph_pool_bytes(method) -> Optional[int]:
    """Bytes reserved by a graphed method's private CUDA graph pool (its step's activations, gradients and
    temporaries, held for as long as the graph lives); None when not captured or not readable."""
    graph = getattr(method, "graph", None)
    if graph is None:
        return None
    try:
        pool = tuple(graph.pool())
        segments = torch.cuda.memory._snapshot()["segments"]
        return sum(s["total_size"] for s in segments if tuple(s.get("segment_pool_id", ())) == pool)
    except Exception:  # an allocator without snapshots, or another layout of it: not measured
        return None


def profile_methods(methods: dict, batches, counters: dict, out: Path, cfg: TrainConfig,
                    device: torch.device) -> dict:
    """One step of each method under torch.profiler: tables to ``out/profile_<method>_w<width>.txt``;
    returns the top operators' self time (ms) per method."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out.mkdir(parents=True, exist_ok=True)
    tops = {}
    for name, m in methods.items():
        x, y = batches[counters[name] % len(batches)]
        with profile(activities=acts) as prof:
            m.train_step(x, y, counters[name])
            _sync(device)
        counters[name] += 1
        ka = prof.key_averages()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        (out / f"profile_{name}_w{cfg.width:g}.txt").write_text(ka.table(sort_by=key, row_limit=40))
        rows = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        total = sum(e.self_cpu_time_total for e in ka) or 1
        tops[name] = {"total_ms": total / 1e3,
                      "top_ops": [{"op": e.key, "ms": e.self_cpu_time_total / 1e3, "calls": e.count,
                                   "share": e.self_cpu_time_total / total} for e in rows]}
    return tops


def format_table(results: list[dict]) -> str:
    mib = lambda b: b / 2 ** 20  # noqa: E731
    head = (f"{'model':<7}{'width':>6}{'batch':>6} {'ASGE img/s':>11}{'BP img/s':>10}{'speed':>8}"
            f"{'ASGE saved MiB':>16}{'BP saved MiB':>14}{'memory':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['model']:<7}{r['width']:>6g}{r['batch_size']:>6} {r['images_per_second']['asge']:>11.1f}"
                     f"{r['images_per_second']['bp']:>10.1f}{r['speed_ratio']:>7.2f}x"
                     f"{mib(r['saved_activation_bytes']['asge']):>16.1f}{mib(r['saved_activation_bytes']['bp']):>14.1f}"
                     f"{r['memory_ratio']:>7.2f}x")
        extra = (f"{'':19} GFLOP/s asge {r['achieved_gflops']['asge']:.1f}, bp {r['achieved_gflops']['bp']:.1f}"
                 f"; per-chunk speed ratio median {r['chunk_speed_ratio_median']:.2f}x "
                 f"(range {min(r['chunk_speed_ratios']):.2f}-{max(r['chunk_speed_ratios']):.2f})")
        if r.get("cuda_peak_bytes"):
            c = r["cuda_peak_bytes"]
            extra += f"; CUDA peak asge {mib(c['asge']):.1f} MiB, bp {mib(c['bp']):.1f} MiB"
        lines.append(extra)
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import parse_option
    a = p.add_argument
    a("--model", default="vgg8", help="preset: vgg8 (default), vgg11, quick, digits")
    a("--width", type=float, nargs="+", default=[0.25, 0.5], help="width multiplier(s) (default 0.25 0.5)")
    a("--batch-size", type=int, default=128)
    a("--steps", type=int, default=12, help="timed training steps per method and width (default 12)")
    a("--warmup", type=int, default=2, help="untimed steps per method first (default 2)")
    a("--chunk", type=int, default=2, help="steps per timed chunk; chunks alternate ASGE/BP (default 2)")
    a("--dataset", default="synthetic",
      help="synthetic (default: random images of the model's size) or a dataset name (digits, cifar10, ...)")
    a("--data-root")
    a("--input-size", type=int, help="image side (synthetic: default the model's; real: the dataset's)")
    a("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    a("--amp", default="none", help="none (default), bf16, fp16 (both methods)")
    a("--recipe", default="paper", help="paper (default) or plus: the recipe's block options (asge/recipes.py)")
    a("--norm", help="block entry norm: layer (the paper recipe's), rms (the authors' code), none")
    a("--pool", help="rms (default), avg, max, soft, or your own by import path (docs/extending.md)")
    a("--context", help="none (default), sge, gsop, gsop-spatial, ge-minus, ge, ge-plus, or your own by import "
                        "path, e.g. my_gates:ChannelGate (docs/extending.md)")
    a("--context-option", type=parse_option, action="append", metavar="KEY=VALUE",
      help="option for the context module (repeatable)")
    a("--context-blocks", type=lambda s: [int(x) for x in s.split(",")], help="1-based blocks with the context")
    a("--channels-last", action="store_true", help="channels_last memory format (both methods)")
    a("--compile", action="store_true", help="torch.compile each ASGE block's step and the BP forward")
    a("--cuda-graphs", default="off", choices=("off", "on"),
      help="off (default) or on: each method's whole step captured once as a CUDA graph and replayed (CUDA only)")
    a("--threads", type=int, help="torch threads (default: torch's)")
    a("--lr", type=float, default=2e-4)
    a("--seed", type=int, default=0)
    a("--profile", action="store_true", help="also profile one step of each (tables in --out)")
    a("--matmul-peak", action="store_true", default=True, help=argparse.SUPPRESS)
    a("--no-matmul-peak", dest="matmul_peak", action="store_false",
      help="skip measuring the fp32 matmul peak")
    a("--out", default="bench", help="directory for bench.json (default ./bench)")
    a("--overhead", action="store_true",
      help="instead: host time per step, ASGE vs BP, at VGG8 width 1/32 (channels 4..16), batch 1 "
           "(2 with BatchNorm layers), 1 thread, steps alternating (the per-call work that bounds small GPU steps); writes overhead.json")
    a("--overhead-steps", type=int, default=200, help="timed steps per method for --overhead (default 200)")


def run(args: argparse.Namespace) -> int:
    from .train.loop import resolve_device
    if args.overhead:
        from .overhead import run_overhead
        return run_overhead(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("steps", "warmup", "chunk", "batch_size"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise AsgeError(f"--{name.replace('_', '-')} must be positive")
    device = resolve_device(args.device)
    if args.cuda_graphs == "on":
        from .train.graphs import graphs_blocker
        why = graphs_blocker(args, device)
        if why is not None:
            raise AsgeError(f"--cuda-graphs on: {why}")
    from .layers.context import check_context_options
    from .recipes import recipe_defaults
    check_context_options(args.context or recipe_defaults(args.recipe).get("context", "none"),
                          dict(args.context_option or []))
    configs = []                          # every configuration checked before anything is written
    for width in args.width:
        options = dict(recipe=args.recipe, dataset="digits" if args.dataset == "synthetic" else args.dataset,
                       data_root=args.data_root, model=args.model, width=width, batch_size=args.batch_size,
                       lr=args.lr, seed=args.seed, device=str(device), amp=args.amp,
                       channels_last=args.channels_last, compile=args.compile, input_size=args.input_size,
                       cuda_graphs=args.cuda_graphs)
        for key in ("norm", "pool", "context", "context_blocks"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
        if args.context_option:
            options["context_options"] = dict(args.context_option)
        cfg = TrainConfig.from_dict(options)
        cfg = cfg.resolved()
        cfg.dataset = args.dataset
        configs.append((width, cfg))
    from .run import make_directory
    out = make_directory(args.out, "bench directory (--out)", AsgeError)
    results = []
    for width, cfg in configs:
        print(f"{args.model} width {width:g}, batch {args.batch_size}, {args.steps} timed steps per method "
              f"on {device} ({torch.get_num_threads()} threads)", flush=True)
        results.append(bench_one(cfg, steps=args.steps, warmup=args.warmup, chunk=args.chunk, device=device,
                                 profile_dir=out if args.profile else None,
                                 log=lambda s: print(s, flush=True)))
    peak = matmul_peak_gflops(device) if args.matmul_peak else None
    for r in results:
        r["matmul_peak_gflops"] = peak
        r["utilization"] = ({k: v / peak for k, v in r["achieved_gflops"].items()} if peak else None)
    report = {"results": results, "machine": machine_info(device), "matmul_peak_gflops": peak,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
              "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_table(results))
    if peak:
        print(f"fp32 matmul peak {peak:.1f} GFLOP/s; conv training FLOP/s reached: " + ", ".join(
            f"w{r['width']:g} asge {100 * r['utilization']['asge']:.0f}% bp {100 * r['utilization']['bp']:.0f}%"
            for r in results))
    print(f"wrote {out / 'bench.json'}")
    return 0


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
