"""The paper's rows at the paper's scale (run by ``benchmarks/reproduce.sh``): full-width VGG8, the paper's
recipe exactly (configs/vgg8-fashion-mnist.yaml, configs/vgg8-cifar10.yaml: AdamW lr 2e-4, weight decay
1e-3, cosine to 1e-5, batch 128, dropout 0.1, 100 epochs, the best-validation checkpoint tested).

    python benchmarks/reproduce.py fashion-mnist|cifar10 --data DIR --out DIR [--tiny] [--cuda-graphs on]

fashion-mnist: DIR holds the four Fashion-MNIST .gz files. cifar10: DIR is a JPEG ImageFolder tree with
train/<class>/*.jpg and, when given, test/<class>/*.jpg, or a .zip of such a tree (unpacked once into
OUT/data; a GPU machine is sent the 54 MB zip, not 50k files); without test/ (or val/), 10,000
class-balanced images of train/ are held back as the test split (``--test-split``, seed 42) and said so in
the summary.
Writes OUT/run (the run directory; a run cut short is resumed by the same command), OUT/report (plots,
val_blocks.png: the per-block curve), OUT/metrics.jsonl, OUT/block_curve.json (validation accuracy of every
block, Fusion and Last per epoch) and OUT/summary.json (test accuracy next to the paper's, train seconds).
The schedule is never shortened: ``--tiny`` (a 1/16-width VGG8, 2 epochs on a few hundred images, any
device: seconds, for the test suite) is the only other size, and the summary says it is tiny.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER = {"fashion-mnist": 93.41, "cifar10": 90.62}          # the paper's Fusion test accuracy, VGG8
CONFIGS = {"fashion-mnist": "configs/vgg8-fashion-mnist.yaml", "cifar10": "configs/vgg8-cifar10.yaml"}
TEST_SPLIT = 10_000
TREE = "a JPEG ImageFolder tree with train/<class>/*.jpg and, when given, test/"


def fail(message: str) -> int:
    print(f"reproduce: error: {message}", file=sys.stderr)
    return 2


def unpack_tree(archive: Path, out: Path) -> Path:
    """A .zip of an ImageFolder tree (members under train/, test/ or val/ only) unpacked into ``out``/data,
    once: a finished unpacking is kept and reused (it is written to data.partial, then renamed)."""
    data = out / "data"
    if data.is_dir():
        return data
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        bad = [n for n in names if n.split("/")[0] not in ("train", "test", "val") or ".." in n.split("/")]
        if bad:
            raise ValueError(f"{archive} holds {bad[0]!r}: expected only train/, test/ or val/ trees of images")
        partial = out / "data.partial"
        shutil.rmtree(partial, ignore_errors=True)
        z.extractall(partial)
    partial.rename(data)
    return data


def check_data(dataset: str, data: Path):
    """What is wrong with ``--data`` for ``dataset`` (one line), or None."""
    if dataset == "fashion-mnist":
        from asge.data.in_memory import idx_folder_problem
        problem = idx_folder_problem(data)
        return f"--data {problem}" if problem else None
    if data.suffix == ".zip" and data.is_file():
        return None if zipfile.is_zipfile(data) else f"--data {data}: not a readable zip file"
    if not data.is_dir():
        return f"--data {data}: not a directory or a .zip of one (expected {TREE})"
    return None if (data / "train").is_dir() else f"--data {data} has no train/ (expected {TREE})"


def train_command(args, run: Path, data: Path) -> tuple[list[str], dict]:
    """The ``asge train`` command for this dataset on ``data`` (a folder), and notes for the summary."""
    cmd = [sys.executable, "-m", "asge", "train", "--config", str(ROOT / CONFIGS[args.dataset]),
           "--data-root", str(data), "--out", str(run), "--progress", "lines", "--cuda-graphs", args.cuda_graphs]
    notes = {}
    if args.dataset == "cifar10":
        cmd += ["--dataset", "imagefolder"]
        if not any((data / t).is_dir() for t in ("test", "val")):
            n = 20 if args.tiny else TEST_SPLIT
            cmd += ["--test-split", str(n)]
            notes["test_split"] = (f"{data} has no test/: {n} class-balanced images of train/ held back as the "
                                   f"test split (seed 42); the paper tests on CIFAR-10's official 10k")
    if args.device:
        cmd += ["--device", args.device]
    if args.tiny:
        cmd += ["--width", "0.0625", "--epochs", "2", "--batch-size", "32", "--val-subset", "200"]
        if args.dataset == "fashion-mnist":
            cmd += ["--subset", "256"]
    if (run / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")                    # a run cut short continues where it stopped
        notes["resumed"] = True
    return cmd, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="fashion-mnist or cifar10")
    ap.add_argument("--data", required=True,
                    help="Fashion-MNIST .gz folder, or a CIFAR-10 JPEG ImageFolder tree (or a .zip of one)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--tiny", action="store_true", help="a 1/16-width VGG8 for 2 epochs: seconds, any device")
    ap.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"),
                    help="asge train --cuda-graphs (default auto, which is off until the CUDA tests pass)")
    ap.add_argument("--device", help="asge train --device (default auto)")
    args = ap.parse_args(argv)
    if args.dataset not in PAPER:
        return fail(f"unknown dataset {args.dataset!r}; valid: {', '.join(PAPER)}")
    problem = check_data(args.dataset, Path(args.data))
    if problem:
        return fail(problem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    if data.suffix == ".zip":
        try:
            data = unpack_tree(data, out)
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            return fail(str(e))
        print(f"reproduce: {args.data} unpacked in {data}", flush=True)
        problem = check_data(args.dataset, data)
        if problem:
            return fail(problem)
    run = out / "run"
    cmd, notes = train_command(args, run, data)
    print("reproduce: " + " ".join(cmd), flush=True)
    t = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    wall = time.monotonic() - t
    if rc != 0:
        return fail(f"asge train exited with {rc}; {run} keeps what it wrote (run the same command to resume)")
    report = subprocess.run([sys.executable, "-m", "asge", "report", str(run), "--out", str(out / "report"),
                             "--force"], cwd=ROOT, capture_output=True, text=True)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    shutil.copyfile(run / "metrics.jsonl", out / "metrics.jsonl")
    curve = [{"epoch": m["epoch"], "block_acc": m["val"]["block_acc"], "fusion_acc": m["val"]["fusion_acc"],
              "last_acc": m["val"]["last_acc"], "seconds": m["seconds"]} for m in metrics]
    (out / "block_curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    s = json.loads((run / "summary.json").read_text())
    fusion = s["test_accuracy"]["fusion"]
    summary = {"dataset": args.dataset, "tiny": args.tiny, "config": CONFIGS[args.dataset],
               "command": " ".join(cmd), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "paper_fusion_test_accuracy": PAPER[args.dataset], "test_accuracy": s["test_accuracy"],
               "fusion_minus_paper": fusion - PAPER[args.dataset],
               "best_epoch": s["best_epoch"], "best_block": s.get("best_block"),
               "block_test_accuracy": s.get("block_test_accuracy"), "epochs": s["epochs"], "width": s["width"],
               "train_seconds": s["train_seconds"], "images_per_second": s["images_per_second"],
               "wall_seconds_this_call": wall, "device": s["device"], "torch": s.get("torch"),
               "report": "report/val_blocks.png" if report.returncode == 0 else f"asge report failed: "
               f"{(report.stderr.strip().splitlines() or ['?'])[-1]}", **notes}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"reproduce: {args.dataset}{' (tiny)' if args.tiny else ''}: Fusion {fusion:.2f}% "
          f"(paper {PAPER[args.dataset]:.2f}), train {s['train_seconds']:.0f} s; wrote {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
