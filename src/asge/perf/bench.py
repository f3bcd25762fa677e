"""``asge bench``: ASGE against the backprop baseline on the same network and the same batches, in one run.

The network is any that ``asge train`` takes (``--model``: a VGG preset, a CIFAR ResNet, torchvision:NAME,
timm:NAME), ASGE training it cut into ``--split`` modules each learning from ``--local-loss``, BP end to end;
each ``--width`` and ``--split`` value gives a row. Both methods train their own copy of one network (same
seed, same initial weights) on the same sequence of batches. Timing alternates short chunks of steps (ASGE,
BP, BP, ASGE, ...) so that machine noise hits both alike; images/s is the total images over the total time
of each method's chunks. Memory: the peak bytes autograd saves for backward over one step
(``activation_memory.py``; for ASGE one block's graph at a time, for BP the whole network's), and on CUDA the
peak allocated memory of a step. FLOPs: ``flops.py``.

``--equal-memory`` adds, per width, a row with ASGE at the largest batch whose step needs no more memory
than BP's (:func:`equal_memory_batch`): images/s at equal memory, a different optimisation (a larger batch)
and so its own row, never the same run.

Writes ``OUT/bench.json`` and prints a table; ``--profile`` adds torch.profiler tables of one step each.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Optional

import torch

from .activation_memory import measure_saved_bytes
from .batches import bench_batches, synthetic_batches
from ..config import METHODS, TrainConfig
from ..errors import AsgeError
from ..nn.flops import conv_flops, matmul_peak_gflops
from ..runs.directory import refuse_overwrite

RESULT_KEYS = ("model", "split", "local_loss", "modules", "width", "channels", "batch_size", "device",
               "images_per_second", "speed_ratio",
               "saved_activation_bytes", "memory_ratio", "asge_block_saved_bytes", "cuda_peak_bytes",
               "train_flops_per_image", "achieved_gflops")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(name: str, cfg: TrainConfig, info, device: torch.device, total_steps: int, *,
                 graphed: bool = False, graph_warmup: int = 3):
    """Method ``name`` (asge, bp) on its own network built from ``cfg`` (seeded: both methods start from the
    same weights), in training mode, its epoch started; wrapped in ``GraphedStep`` when ``graphed``."""
    from ..train.methods import METHODS as BY_NAME
    from ..runs.build import build_model
    torch.manual_seed(cfg.seed)
    c = dataclasses.replace(cfg, method=name)
    net = build_model(c, info).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    m = BY_NAME[name](net, c, max(1, total_steps), device)
    if graphed:                                # captured after GraphedStep's eager warm-up
        from ..train.graphs import GraphedStep
        m = GraphedStep(m, warmup=graph_warmup)
    m.start_epoch(cfg.seed)
    return m


def step_memory(name: str, cfg: TrainConfig, info, batch: int, device: torch.device) -> tuple[int, str]:
    """(bytes, basis) one eager training step of method ``name`` at ``batch`` images of ``info``'s shape needs:
    on CUDA the peak allocated memory above what is held before the step (basis ``cuda_peak_bytes``),
    elsewhere the peak bytes saved for backward (``saved_activation_bytes``). Measured on the step after one
    warm-up step, on random images (memory depends on the shapes alone: no data is read)."""
    c = dataclasses.replace(cfg, batch_size=batch, cuda_graphs="off")
    batches = synthetic_batches(2, batch, info.in_channels, info.image_size, info.num_classes, cfg.seed, device)
    if cfg.channels_last:
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    m = bench_method(name, c, info, device, 4)
    m.train_step(*batches[0], 0)
    if device.type != "cuda":
        return measure_saved_bytes(m, *batches[1], 1)[0], "saved_activation_bytes"
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    m.train_step(*batches[1], 1)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base, "cuda_peak_bytes"


def equal_memory_batch(cfg: TrainConfig, device: torch.device, log=print) -> dict:
    """The largest ASGE batch (a multiple of 8) whose step needs no more memory than BP's at
    ``cfg.batch_size`` (:func:`step_memory`): the proportional estimate, measured and corrected until it
    stays (at most 4 measurements). Returns {"asge_batch", "basis", "bp_bytes", "asge_bytes"}."""
    info = bench_batches(dataclasses.replace(cfg, batch_size=1), 1, device)[1]     # the images' shape, classes
    target, basis = step_memory("bp", cfg, info, cfg.batch_size, device)
    batch, used = cfg.batch_size, step_memory("asge", cfg, info, cfg.batch_size, device)[0]
    if min(target, used) <= 0:
        raise AsgeError(f"--equal-memory: a step's memory ({basis}) measured 0 bytes (BP {target}, ASGE {used}): "
                        "there is nothing to equal")
    for _ in range(3):
        guess = max(8, int(batch * target / used) // 8 * 8)
        if guess == batch and used <= target:
            break
        if guess == batch:                   # rounding left it just above: one multiple of 8 less
            guess = max(8, batch - 8)
        batch, used = guess, step_memory("asge", cfg, info, guess, device)[0]
        log(f"  equal memory: ASGE at batch {batch} needs {used / 2 ** 20:.1f} MiB, BP at "
            f"{cfg.batch_size} {target / 2 ** 20:.1f} MiB ({basis})")
    return {"asge_batch": batch, "basis": basis, "bp_bytes": target, "asge_bytes": used}


def bench_one(cfg: TrainConfig, *, steps: int, warmup: int, chunk: int, device: torch.device,
              profile_dir: Optional[Path] = None, log=print, asge_batch: Optional[int] = None) -> dict:
    """Benchmark ASGE and BP for one configuration; returns the result record (see RESULT_KEYS).

    ``asge_batch``: ASGE trains on batches of this many images instead of ``cfg.batch_size`` (BP's), e.g.
    the batch of :func:`equal_memory_batch` (a different optimisation: report it as its own row)."""
    batch_size = {"asge": asge_batch or cfg.batch_size, "bp": cfg.batch_size}
    n_batches = max(1, min(steps + warmup, 16))
    by_size = {b: bench_batches(dataclasses.replace(cfg, batch_size=b), n_batches, device)    # data read once
               for b in sorted(set(batch_size.values()))}                                    # per batch size
    batches = {name: by_size[b][0] for name, b in batch_size.items()}
    info = by_size[cfg.batch_size][1]
    methods = {name: bench_method(name, dataclasses.replace(cfg, batch_size=b), info, device, steps + warmup + 2,
                                  graphed=cfg.cuda_graphs == "on", graph_warmup=max(0, min(3, warmup - 1)))
               for name, b in batch_size.items()}     # (a graphed step replays batches of its cfg's size)

    counters = {k: 0 for k in methods}

    def run(name: str, k: int) -> float:
        m = methods[name]
        _sync(device)
        t = time.perf_counter()
        for _ in range(k):
            x, y = batches[name][counters[name] % n_batches]
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
        x, y = batches[name][counters[name] % n_batches]
        saved[name], blocks = measure_saved_bytes(m, x, y, counters[name])   # eager (also a GraphedStep)
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
        chunk_ratios.append(batch_size["asge"] * times["bp"] / max(batch_size["bp"] * times["asge"], 1e-12))
        rounds += 1
        log(f"  chunk {rounds}: asge {k * batch_size['asge'] / times['asge']:7.1f} img/s   "
            f"bp {k * batch_size['bp'] / times['bp']:7.1f} img/s")

    ips = {k: done[k] * batch_size[k] / seconds[k] for k in methods}
    speed_ratio = ips["asge"] / ips["bp"]
    memory_ratio = saved["asge"] / max(saved["bp"], 1)
    flops = {k: conv_flops(methods[k].net, k, batch_size[k]) for k in methods}
    record = {
        "model": cfg.model, "split": cfg.split, "local_loss": cfg.local_loss,
        "modules": len(methods["asge"].net.blocks), "width": cfg.width, "channels": methods["asge"].net.channels,
        "batch_size": cfg.batch_size, "batch_sizes": batch_size, "steps": steps, "warmup": warmup, "chunk": chunk,
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
    graph = method.graph
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
    """One step of each method (on its own ``batches[method]``) under torch.profiler: tables to
    ``out/profile_<method>_w<width>[_split<split>].txt``; returns the top operators' self time (ms) per
    method."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out.mkdir(parents=True, exist_ok=True)
    tops = {}
    for name, m in methods.items():
        x, y = batches[name][counters[name] % len(batches[name])]
        with profile(activities=acts) as prof:
            m.train_step(x, y, counters[name])
            _sync(device)
        counters[name] += 1
        ka = prof.key_averages()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        (out / profile_name(name, cfg.width, cfg.split)).write_text(ka.table(sort_by=key, row_limit=40))
        rows = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        total = sum(e.self_cpu_time_total for e in ka) or 1
        tops[name] = {"total_ms": total / 1e3,
                      "top_ops": [{"op": e.key, "ms": e.self_cpu_time_total / 1e3, "calls": e.count,
                                   "share": e.self_cpu_time_total / total} for e in rows]}
    return tops


def format_table(results: list[dict]) -> str:
    """One row per result: the network (model, width, K modules, the local rule ASGE trains them by), the
    batch, each method's images/s and saved-activation MiB and their ratios; a line of detail under each."""
    mib = lambda b: b / 2 ** 20  # noqa: E731
    wide = max([7] + [len(str(r["model"])) + 1 for r in results])
    head = (f"{'model':<{wide}}{'width':>6}{'K':>4} {'rule':<8}{'batch':>7} {'ASGE img/s':>11}{'BP img/s':>10}"
            f"{'speed':>8}{'ASGE saved MiB':>16}{'BP saved MiB':>14}{'memory':>8}")
    lines = [head, "-" * len(head)]
    indent = " " * (wide + 26)
    for r in results:
        sizes = r.get("batch_sizes") or {"asge": r["batch_size"], "bp": r["batch_size"]}
        batch = str(sizes["bp"]) if sizes["asge"] == sizes["bp"] else f"{sizes['asge']}/{sizes['bp']}"
        modules = r.get("modules") or len(r.get("channels") or []) or "?"
        lines.append(f"{r['model']:<{wide}}{r['width']:>6g}{modules:>4} {r.get('local_loss') or 'asge':<8}"
                     f"{batch:>7} {r['images_per_second']['asge']:>11.1f}"
                     f"{r['images_per_second']['bp']:>10.1f}{r['speed_ratio']:>7.2f}x"
                     f"{mib(r['saved_activation_bytes']['asge']):>16.1f}{mib(r['saved_activation_bytes']['bp']):>14.1f}"
                     f"{r['memory_ratio']:>7.2f}x")
        extra = (f"{indent}GFLOP/s asge {r['achieved_gflops']['asge']:.1f}, bp {r['achieved_gflops']['bp']:.1f}"
                 f"; per-chunk speed ratio median {r['chunk_speed_ratio_median']:.2f}x "
                 f"(range {min(r['chunk_speed_ratios']):.2f}-{max(r['chunk_speed_ratios']):.2f})")
        if r.get("cuda_peak_bytes"):
            c = r["cuda_peak_bytes"]
            extra += f"; CUDA peak asge {mib(c['asge']):.1f} MiB, bp {mib(c['bp']):.1f} MiB"
        lines.append(extra)
        if r.get("equal_memory"):
            e = r["equal_memory"]
            lines.append(f"{indent}equal memory: ASGE at batch {sizes['asge']} against BP at {sizes['bp']} "
                         f"({e['basis']} {mib(e['asge_bytes']):.1f} / {mib(e['bp_bytes']):.1f} MiB): "
                         "a larger batch is another optimisation, not the same run")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..options import add_config_flag
    a = p.add_argument
    add_config_flag(p, "model", default="vgg8", help="the network, as asge train's --model: a VGG preset, a CIFAR "
                    "ResNet (resnet20, resnet32, resnet56, resnet110), torchvision:NAME or timm:NAME; both methods "
                    "train it, ASGE cut into --split modules, BP end to end")
    add_config_flag(p, "split", nargs="+", more_help="; several (e.g. --split 4 16): a row for each")
    add_config_flag(p, "local_loss", default="asge")
    a("--width", type=float, nargs="+", help="width multiplier(s) (default 0.25 0.5 for the VGG presets, 1 for other "
                                             "networks)")
    a("--batch-size", type=int, default=128)
    a("--steps", type=int, default=12, help="timed training steps per method and row (default 12)")
    a("--warmup", type=int, default=2, help="untimed steps per method first (default 2)")
    a("--chunk", type=int, default=2, help="steps per timed chunk; chunks alternate ASGE/BP (default 2)")
    a("--dataset", default="synthetic",
      help="synthetic (default: random images of the model's size) or a dataset name (digits, cifar10, ...)")
    a("--data-root")
    a("--input-size", type=int, help="image side (synthetic: default the VGG preset's, 32 for other networks; real: "
                                      "the dataset's)")
    a("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    add_config_flag(p, "amp", default="none", more_help=" (both methods)")
    add_config_flag(p, "recipe", default="paper", help="the recipe's block options (asge/recipes.py); "
                                                       "--batch-size still sets the batch")
    for name in ("norm", "pool", "context"):
        add_config_flag(p, name, more_help=f" (default: the --recipe's, else {getattr(TrainConfig, name)})")
    add_config_flag(p, "context_options")
    add_config_flag(p, "context_blocks")
    a("--channels-last", action="store_true", help="channels_last memory format (both methods)")
    a("--compile", action="store_true", help="torch.compile each ASGE block's step and the BP forward")
    add_config_flag(p, "cuda_graphs", default="off",
                    help="on: each method's whole step captured once as a CUDA graph and replayed (CUDA only; "
                         "refused with fp16 or --compile); off and auto: every step eager")
    a("--threads", type=int, help="torch threads (default: torch's)")
    a("--lr", type=float, default=2e-4)
    a("--seed", type=int, default=0)
    a("--profile", action="store_true", help="also profile one step of each (tables in --out)")
    a("--matmul-peak", action="store_true", default=True, help=argparse.SUPPRESS)
    a("--no-matmul-peak", dest="matmul_peak", action="store_false",
      help="skip measuring the fp32 matmul peak")
    a("--out", default="bench", help="directory for bench.json (default ./bench)")
    a("--force", action="store_true",
      help="replace the results already in --out (bench.json, overhead.json, profile tables); without it they "
           "are never overwritten: choose another --out")
    a("--equal-memory", action="store_true",
      help="also, per row: ASGE at the largest batch (a multiple of 8) whose step needs no more memory than "
           "BP's at --batch-size (CUDA peak on GPUs, saved-for-backward bytes elsewhere), in its own row")
    a("--overhead", action="store_true",
      help="instead: host time per step, ASGE vs BP, at VGG8 width 1/32 (channels 4..16), batch 1 "
           "(2 with BatchNorm layers), 1 thread, steps alternating (the per-call work that bounds small GPU steps); writes overhead.json")
    a("--overhead-steps", type=int, default=200, help="timed steps per method for --overhead (default 200)")


#: Options that ``--overhead`` does not read (it measures VGG8 at width 1/32, batch 1, its own steps).
NOT_FOR_OVERHEAD = ("width", "split", "local_loss", "batch_size", "steps", "chunk", "dataset", "data_root",
                    "input_size", "norm", "pool", "context", "context_option", "context_blocks", "channels_last",
                    "compile", "cuda_graphs", "profile", "equal_memory")


def profile_name(method: str, width: float, split: Optional[str]) -> str:
    """The profile table of ``method`` at ``width`` (and ``split``, when given): ``profile_asge_w0.5.txt``,
    ``profile_asge_w0.5_split4.txt``."""
    return f"profile_{method}_w{width:g}" + (f"_split{split}" if split is not None else "") + ".txt"


def result_files(args: argparse.Namespace) -> list[Path]:
    """The files in ``--out`` that this ``asge bench`` would write and that exist already: overhead.json
    (``--overhead``), else bench.json and, with ``--profile``, each method's profile table per width and
    split."""
    out = Path(args.out)
    names = ["overhead.json"] if args.overhead else ["bench.json"] + (
        [profile_name(m, w, k) for w in args.width for k in (args.split or [None]) for m in METHODS]
        if args.profile else [])
    return [out / n for n in names if (out / n).exists()]


def command(args: argparse.Namespace) -> int:
    from ..nn.presets import PRESETS
    from ..runs.build import resolve_device
    if args.overhead:
        if args.model not in PRESETS:
            raise AsgeError(f"--overhead measures a VGG preset at width 1/32 ({', '.join(PRESETS)}), not "
                            f"{args.model}")
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        defaults = vars(parser.parse_args([]))
        given = [k for k in NOT_FOR_OVERHEAD if getattr(args, k, None) != defaults[k]]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise AsgeError(f"{flags}: not used by --overhead, which measures {args.model} at width 1/32, batch 1 "
                            "(--model, --recipe, --amp, --device, --threads, --lr, --seed, --warmup and --overhead-steps apply)")
        refuse_overwrite(Path(args.out), "benchmark results", result_files(args), args.force)
        from .overhead import run_overhead
        return run_overhead(args)
    args.width = args.width or ([0.25, 0.5] if args.model in PRESETS else [1.0])
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("steps", "warmup", "chunk", "batch_size"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise AsgeError(f"--{name.replace('_', '-')} must be positive")
    device = resolve_device(args.device)
    if args.cuda_graphs == "on":
        from ..train.graphs import graphs_blocker
        why = graphs_blocker(args, device)
        if why is not None:
            raise AsgeError(f"--cuda-graphs on: {why}")
    configs = []                          # every configuration checked (TrainConfig.validate) before anything
    for width in args.width:              # is written
        for split in args.split or [None]:
            options = dict(recipe=args.recipe, dataset="digits" if args.dataset == "synthetic" else args.dataset,
                           data_root=args.data_root, model=args.model, split=split, local_loss=args.local_loss,
                           width=width, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=str(device),
                           amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                           input_size=args.input_size, cuda_graphs=args.cuda_graphs)
            for key in ("norm", "pool", "context", "context_blocks"):
                if getattr(args, key) is not None:
                    options[key] = getattr(args, key)
            if args.context_option:
                options["context_options"] = dict(args.context_option)
            cfg = TrainConfig.from_dict(options)
            cfg = cfg.resolved()
            cfg.dataset = args.dataset
            check_cut(cfg)
            configs.append(cfg)
    from ..runs.directory import make_directory
    refuse_overwrite(Path(args.out), "benchmark results", result_files(args), args.force)
    out = make_directory(args.out, "bench directory (--out)", AsgeError)
    results = []
    for cfg in configs:
        what = f"{args.model} width {cfg.width:g}" + (f", split {cfg.split}" if cfg.split is not None else "") + \
            (f", {cfg.local_loss} rule" if cfg.local_loss != "asge" else "")
        print(f"{what}, batch {args.batch_size}, {args.steps} timed steps per method on {device} "
              f"({torch.get_num_threads()} threads)", flush=True)
        log = lambda s: print(s, flush=True)  # noqa: E731
        results.append(bench_one(cfg, steps=args.steps, warmup=args.warmup, chunk=args.chunk, device=device,
                                 profile_dir=out if args.profile else None, log=log))
        if args.equal_memory:
            equal = equal_memory_batch(cfg, device, log=log)
            print(f"{what}, equal memory: ASGE at batch {equal['asge_batch']}, BP at {args.batch_size}", flush=True)
            record = bench_one(cfg, steps=args.steps, warmup=args.warmup, chunk=args.chunk, device=device,
                               log=log, asge_batch=equal["asge_batch"])
            results.append(dict(record, equal_memory=equal))
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


def check_cut(cfg: TrainConfig) -> None:
    """Build ``cfg``'s network once, on the CPU for 3-channel images of the run's size, so that a --split it
    cannot take is refused (one line) before anything is written. (Its rule is ASGE's here: the data's number
    of classes, which another rule may depend on, is known once the data is read.)"""
    from ..data import DatasetInfo, native_size
    from ..runs.build import build_model
    from .batches import synthetic_size
    size = synthetic_size(cfg) if cfg.dataset == "synthetic" else cfg.input_size or native_size(cfg.dataset)
    build_model(dataclasses.replace(cfg, local_loss="asge"), DatasetInfo("check", num_classes=10, in_channels=3,
                                                                          image_size=size))


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
