"""Data-parallel training throughput: torchrun with 1 process against N processes on the same cores.

With C cores, the 1-process run uses C threads and each of the N ranks C // N threads (ASGE_THREADS).
Each run trains the same configuration with ``torchrun --nproc_per_node=N -m asge train``; the table shows
the training images/s that rank 0 reports (the whole batch of every step, all ranks' slices).

    python benchmarks/dp_throughput.py --model vgg8 --width 0.25 --procs 1 2
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from asge.train.distributed import free_port


def run(n: int, threads: int, a, out: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ASGE_THREADS=str(threads))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "asge", "train", "--dataset", a.dataset, "--model", a.model,
           "--width", str(a.width), "--input-size", str(a.input_size), "--batch-size", str(a.batch_size),
           "--epochs", str(a.epochs), "--lr", "2e-4", "--progress", "none", "--device", a.device, "--out", out]
    if a.subset:
        cmd += ["--subset", str(a.subset)]
    if a.method != "asge":
        cmd += ["--method", a.method]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return {"images_per_second": sum(x["images_per_second"] for x in records) / len(records)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg8")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--method", default="asge")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--subset", type=int)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cores", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    res = {n: [] for n in a.procs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for n in a.procs:
                res[n].append(run(n, max(1, a.cores // n), a, os.path.join(tmp, f"dp{n}-{r}"))["images_per_second"])
    base = sum(res[a.procs[0]]) / len(res[a.procs[0]])
    print(f"\n{a.method} {a.model} width {a.width:g}, global batch {a.batch_size}, {a.dataset} {a.input_size}px, "
          f"{a.subset or 'all'} images/epoch, {a.cores} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'processes x threads':>20}{'train img/s':>13}{'vs first':>10}   runs")
    for n, v in res.items():
        mean = sum(v) / len(v)
        print(f"{f'{n} x {max(1, a.cores // n)}':>20}{mean:>13.1f}{mean / base:>9.2f}x   " + " ".join(f"{x:.1f}" for x in v))


if __name__ == "__main__":
    main()
