"""``asge predict RUN PATH...``: classify image files with a trained run (or an exported .safetensors file).

Each PATH is an image file (PNG, JPEG, ... any size, grey or colour) or a folder, searched recursively for
images. Images go through the run's evaluation preprocessing (:mod:`asge.data.preprocess`) in batches, and each
gets its top-k classes with their probabilities (softmax of the strategy's scores).

Output (stdout), ``--format``:

* ``table`` (default): ``PATH  class (p)  class (p) ...``, one line per image;
* ``csv``: a header, then ``path,rank,class,probability`` rows (rank 1 = most probable);
* ``json``: one list, ``[{"path": ..., "predictions": [{"class": NAME, "probability": P}, ...]}, ...]``.

A file that cannot be read is named on stderr with the reason and the others are still predicted; the exit
code is then 1. A bad RUN or option exits with 2, as every asge command.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Iterator

import torch

from .inference import check_run_strategy, check_strategy_available, load
from ..data.preprocess import ImageReadError, find_images
from ..runs.build import resolve_device


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


@torch.inference_mode()
def predict_files(net, files: list[str], strategy: str, top_k: int, batch_size: int,
                  errors: list[str]) -> Iterator[dict]:
    """Yield ``{"path", "predictions": [{"class", "probability"}, ...]}`` per readable file, in order; the
    unreadable ones are appended to ``errors`` (one line each) and skipped."""
    device = net.best_block.device
    k = min(top_k, len(net.classes))
    for i in range(0, len(files), batch_size):
        rows, paths = [], []
        for path in files[i:i + batch_size]:
            try:
                rows.append(net.preprocessing.image(path))
                paths.append(path)
            except (ImageReadError, ValueError, OSError) as e:
                errors.append(str(e) if isinstance(e, ImageReadError) else f"{path}: {e}")
        if not rows:
            continue
        probs = net.predict(net.preprocessing.batch(rows, device), strategy).float().softmax(1)
        top = probs.topk(k, dim=1)
        for path, p, idx in zip(paths, top.values.tolist(), top.indices.tolist()):
            yield {"path": path, "predictions": [{"class": net.classes[j], "probability": q} for j, q in zip(idx, p)]}


def write(results: Iterator[dict], fmt: str, out=None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        json.dump(list(results), out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["path", "rank", "class", "probability"])
        for r in results:
            for rank, p in enumerate(r["predictions"], 1):
                w.writerow([r["path"], rank, p["class"], f"{p['probability']:.6f}"])
    else:
        for r in results:
            out.write(r["path"] + "  " + "  ".join(f"{p['class']} ({p['probability']:.3f})"
                                                   for p in r["predictions"]) + "\n")
            out.flush()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory, or a .safetensors file from asge export")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--strategy", help="best (default for ASGE runs: early exit after l*), fusion, or last "
                                      "(the only one of a backprop run)")
    p.add_argument("--top-k", type=positive_int, default=1, help="classes shown per image (default 1)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")


def command(args: argparse.Namespace) -> int:
    net = load(args.run, device=resolve_device(args.device))
    if net.load_note:
        print(f"asge predict: note: {net.load_note}", file=sys.stderr, flush=True)
    strategy = check_strategy_available(net, check_run_strategy(net.config.method, args.strategy))
    files, errors = find_images(args.paths)
    write(predict_files(net, files, strategy, args.top_k, args.batch_size, errors), args.format)
    for line in errors:
        print(f"asge: cannot read {line}", file=sys.stderr)
    return 1 if errors else 0


__all__ = ["predict_files", "write", "add_arguments", "command"]
