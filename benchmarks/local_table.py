"""The K-table: local rules side by side on the same network, data and budget, over splits K and seeds.

    python benchmarks/local_table.py --data DIR --out OUT --model resnet32 --splits 2,4,8,16 \
        --losses asge,cwc,dgl,predsim --seeds 0,1 [--train "--subset 10000 --epochs 5"] [--jobs 2] [--bench]

Every cell is a plain `asge train` run (one torch thread) in OUT/runs/<model>/<loss>-k<K>-s<seed>, plus one
backprop run per seed on the same network (its split does not change backprop); a cell whose summary.json
exists is read back and one with a checkpoint is resumed, so a killed table continues where it stopped.
`--data` is an ImageFolder tree holding train/ (CIFAR-10's JPEGs): 5,000 class-balanced images of it are held
back as the test split (`--test-split`), so nothing is tuned on them. `--bench` adds `asge bench` per
(loss, K) on the same network: images/s and saved-activation memory relative to backprop, same batches.

After every finished cell OUT/table.json (every cell's summary, every bench) and OUT/table.md (per rule and K:
headline test accuracy mean ± sd over seeds, best single module, speed and memory relative to BP, the local
heads' parameters and multiply-accumulates relative to their modules) are rewritten, and OUT/accuracy_vs_k.png
plots the headline accuracy against K, one line per rule, BP as a band.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from accuracy_sweep import mean_sd, run_one



def cells(args) -> list[tuple[str, list[str]]]:
    """(name, flags) of every training run of the table, in the order they start: BP per seed (its split does
    not change backprop), then each rule at ``--main-split`` for every seed, then the other K for the first
    ``--other-seeds`` seeds; so a table cut short by time still holds its reference and main rows."""
    model = ["--dataset", "imagefolder", "--test-split", str(args.test_split), "--model", args.model,
             *shlex.split(args.train)]
    main = args.main_split or args.splits[0]
    cell = lambda loss, k, seed: (f"{loss}-k{k}-s{seed}", [*model, "--split", str(k),  # noqa: E731
                                                         "--local-loss", loss, "--seed", str(seed)])
    out = [(f"bp-s{seed}", [*model, "--split", str(main), "--method", "bp", "--seed", str(seed)])
           for seed in args.seeds] if not args.no_bp else []
    out += [cell(loss, main, seed) for seed in args.seeds for loss in args.losses]
    others = args.seeds[:args.other_seeds] if args.other_seeds else args.seeds
    out += [cell(loss, k, seed) for seed in others for k in args.splits if k != main for loss in args.losses]
    return out


def bench(args, loss: str, k: int) -> dict:
    """`asge bench` of this rule at K against BP on the same network (its JSON), or {"error": ...}."""
    out = Path(args.out) / "bench" / f"{loss}-k{k}"
    if (out / "bench.json").is_file():
        return json.loads((out / "bench.json").read_text())
    cmd = [sys.executable, "-m", "asge", "bench", "--model", args.model, "--split", str(k), "--local-loss", loss,
           "--batch-size", "128", "--steps", str(args.bench_steps), "--out", str(out), "--force",
           *shlex.split(args.bench_flags)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **os.environ})
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["bench failed"])[-1]}
    return json.loads((out / "bench.json").read_text())


def table(args, results: dict, benches: dict) -> str:
    """Markdown, one row per rule and K (and BP): mean ± sd over the finished seeds."""
    lines = ["| rule | K | seeds | Fusion | Last | Best (l*) | each module (mean) | images/s vs BP | saved activations "
             "vs BP | head params | head MACs / module MACs (max, train) |", "|---" * 11 + "|"]
    for loss in [*args.losses, "bp"]:
        for k in (sorted(args.splits) if loss != "bp" else [None]):
            runs = [results[n] for n in results if n.startswith(f"{loss}-k{k}-s" if k else "bp-s")
                    and "error" not in results[n]]
            if not runs:
                continue
            acc = lambda key: [r["test_accuracy"][key] for r in runs if key in r["test_accuracy"]]  # noqa: E731
            blocks = [r["block_test_accuracy"] for r in runs if r.get("block_test_accuracy")]
            modules = " / ".join(f"{statistics.mean(col):.1f}" for col in zip(*blocks)) if blocks else "–"
            lstar = ",".join(str(r["best_block"]) for r in runs if r.get("best_block"))
            b = benches.get(f"{loss}-k{k}", {}).get("results", [{}])[0] if k else {}
            speed = b.get("speed_ratio")
            memory = b.get("memory_ratio")
            mods = runs[0].get("modules") or []
            params = sum(m["head_parameters"] for m in mods)
            ratio = max((m["head_train_macs_ratio"] for m in mods), default=0.0)
            lines.append(f"| {loss} | {k or '–'} | {len(runs)} | {mean_sd(acc('fusion'))} | {mean_sd(acc('last'))} | "
                         f"{mean_sd(acc('best'))}{f' ({lstar})' if lstar else ''} | {modules} | "
                         f"{f'{speed:.2f}x' if speed else '–'} | {f'{memory:.2f}x' if memory else '–'} | "
                         f"{params:,} | {100 * ratio:.2f}% |" if loss != "bp" else
                         f"| bp | – | {len(runs)} | – | {mean_sd(acc('last'))} | – | – | 1x | 1x | – | – |")
    return "\n".join(lines) + "\n"


def plot(args, results: dict, path: Path) -> None:
    """The figure is drawn on an Agg canvas of its own (no pyplot state, as asge report draws)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for loss in args.losses:
        xs, ys, es = [], [], []
        for k in sorted(args.splits):
            head = [r["test_accuracy"][r["headline"]] for n, r in results.items()
                    if n.startswith(f"{loss}-k{k}-s") and "error" not in r]
            if head:
                xs.append(k)
                ys.append(statistics.mean(head))
                es.append(statistics.stdev(head) if len(head) > 1 else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=loss)
    bp = [r["test_accuracy"]["last"] for n, r in results.items() if n.startswith("bp-s") and "error" not in r]
    if bp:
        ax.axhline(statistics.mean(bp), color="k", linestyle="--", label="bp")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K (modules)")
    ax.set_ylabel("test accuracy, headline (%)")
    ax.set_title(f"{args.model}: accuracy against K")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="ImageFolder tree with train/ (CIFAR-10 JPEGs)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="resnet32")
    p.add_argument("--splits", type=lambda t: [int(v) for v in t.split(",")], default=[2, 4, 8, 16])
    p.add_argument("--losses", type=lambda t: t.split(","), default=["asge"])
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0, 1, 2])
    p.add_argument("--train", default="--subset 10000 --epochs 5",
                   help="more train flags, one string (batch 128 unless they or a --recipe set another)")
    p.add_argument("--test-split", type=int, default=5000,
                   help="class-balanced images of the tree held back as the test split (default 5000)")
    p.add_argument("--main-split", type=int, help="the K every seed runs first (default: the first of --splits)")
    p.add_argument("--other-seeds", type=int, help="how many of --seeds the other K run (default: all)")
    p.add_argument("--no-bp", action="store_true", help="leave out the backprop runs")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--bench", action="store_true", help="also asge bench per rule and K")
    p.add_argument("--bench-steps", type=int, default=6)
    p.add_argument("--bench-flags", default="--dataset synthetic")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    benches: dict = {}

    lock = threading.Lock()

    def write(name=None, result=None) -> None:
        with lock:                        # the cells finish in several threads
            if name is not None:
                results[name] = result
            _write()

    def _write() -> None:
        (out / "table.json").write_text(json.dumps({"cells": results, "bench": benches}, indent=1))
        (out / "table.md").write_text(table(args, results, benches))
        plot(args, results, out / "accuracy_vs_k.png")

    def train(cell):
        name, flags = cell
        write(name, run_one(out, out / "work", args.model, name, flags, args.data))

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(train, cells(args)))
    if args.bench:
        for loss in args.losses:
            for k in args.splits:
                benches[f"{loss}-k{k}"] = bench(args, loss, k)
                write()
    write()
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
