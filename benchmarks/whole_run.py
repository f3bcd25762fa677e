"""Whole-run speed: ``asge train`` by ASGE against ``--method bp`` with the same flags, as a user would time them.

    python benchmarks/whole_run.py                              # the issue's pair, both at once, 1 thread each
    python benchmarks/whole_run.py --repeats 3 --out runs/whole-run
    python benchmarks/whole_run.py --mode sequential            # one after the other, torch's default threads
    python benchmarks/whole_run.py -- --norm rms                # anything after -- goes to both runs

Default pair: real Fashion-MNIST, VGG8 x0.25, ``--subset 20000 --epochs 3 --lr 2e-3 --seed 0``. In the
default ``concurrent`` mode both runs start together, each with one torch thread, so that on a shared
machine both see the same load (on 2 cores they fill the machine); when the faster one ends, a discarded
copy of it runs until the other ends, so the slower one is never timed on an emptier machine. Prints each run's ``train_seconds``
(summary.json: the epochs' training time, evaluation excluded), its test accuracies, and the ratio
BP train_seconds / ASGE train_seconds per repeat; writes OUT/whole_run.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PAIR = ["--dataset", "fashion-mnist", "--model", "vgg8", "--width", "0.25", "--subset", "20000", "--epochs", "3",
        "--lr", "2e-3", "--seed", "0", "--progress", "none"]


def launch(method: str, out: Path, extra: list[str], threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "asge", "train", *PAIR, *extra, "--method", method, "--out", str(out)]
    log = open(out.with_suffix(".log"), "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, out: Path) -> dict:
    if proc.wait() != 0:
        raise SystemExit(f"{out} failed (exit {proc.returncode}); see {out.with_suffix('.log')}")
    s = json.loads((out / "summary.json").read_text())
    return {"train_seconds": s["train_seconds"], "images_per_second": s["images_per_second"],
            "test_accuracy": s["test_accuracy"]}


def run_together(outs: dict[str, Path], extra: list[str], threads: int | None) -> dict:
    """Start both runs at once; when one ends, a filler copy of it (discarded) keeps the other company, so
    the slower run never has the machine to itself for its last part (that would flatter it)."""
    procs = {m: launch(m, outs[m], extra, threads) for m in outs}
    res, fillers = {}, []
    while len(res) < len(outs):
        for m, p in procs.items():
            if m not in res and p.poll() is not None:
                res[m] = finish(p, outs[m])
                if len(res) < len(outs):
                    filler = outs[m].with_name(outs[m].name + "-filler")
                    fillers.append((launch(m, filler, extra, threads), filler))
        time.sleep(1)
    for p, _ in fillers:
        p.terminate()
        p.wait()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/whole-run", help="directory for the runs and whole_run.json")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--mode", choices=("concurrent", "sequential"), default="concurrent")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: 1 concurrent, torch's sequential)")
    ap.add_argument("--data-root", help="passed to asge train (default: its own search, Debian's package included)")
    ap.add_argument("extra", nargs="*", help="more asge train flags for both runs (after --)")
    args = ap.parse_args(argv)
    extra = list(args.extra) + (["--data-root", args.data_root] if args.data_root else [])
    threads = args.threads or (1 if args.mode == "concurrent" else None)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    repeats = []
    for r in range(args.repeats):
        outs = {m: root / f"{stamp}-r{r}-{m}" for m in ("asge", "bp")}
        load0 = os.getloadavg()
        if args.mode == "concurrent":
            res = run_together(outs, extra, threads)
        else:
            order = ("asge", "bp") if r % 2 == 0 else ("bp", "asge")
            res = {m: finish(launch(m, outs[m], extra, threads), outs[m]) for m in order}
        ratio = res["bp"]["train_seconds"] / res["asge"]["train_seconds"]
        repeats.append({"asge": res["asge"], "bp": res["bp"], "ratio_bp_over_asge": ratio,
                        "load_average_start": load0, "load_average_end": os.getloadavg()})
        a, b = res["asge"], res["bp"]
        print(f"repeat {r + 1}: ASGE {a['train_seconds']:.1f} s ({a['images_per_second']:.0f} img/s, test "
              + ", ".join(f"{k} {v:.2f}" for k, v in a["test_accuracy"].items())
              + f")  BP {b['train_seconds']:.1f} s ({b['images_per_second']:.0f} img/s, test last "
              f"{b['test_accuracy']['last']:.2f})  BP/ASGE train_seconds = {ratio:.3f}", flush=True)
    ratios = [r["ratio_bp_over_asge"] for r in repeats]
    report = {"pair": PAIR + extra, "mode": args.mode, "threads": threads, "repeats": repeats,
              "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    (root / "whole_run.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"BP train_seconds / ASGE train_seconds: median {report['ratio_median']:.3f} "
          f"(range {report['ratio_min']:.3f}-{report['ratio_max']:.3f}, {len(ratios)} repeat(s)); "
          f"wrote {root / 'whole_run.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
