"""Training throughput of the sequential loop against ``--pipeline K`` on the same total cores.

The sequential run gets all C threads; the pipelined run gives each of its K stage processes C // K
threads. Both train the same network on the same data (digits resized to the model's image size, or any
dataset with --dataset), and report the training images/s of ``fit`` (evaluation excluded). Results are
equal bit for bit only with the same threads per process; here the point is speed.

    python benchmarks/pipeline_throughput.py --model vgg8 --width 0.25 --stages 2
"""
import argparse
import os
import tempfile
import time

import torch

from asge.config import TrainConfig
from asge.train import fit
from asge.train.pipeline import fit_pipeline


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg8")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--stages", type=int, nargs="+", default=[2])
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="total cores to use")
    p.add_argument("--repeats", type=int, default=2, help="alternate sequential/pipelined runs this often")
    a = p.parse_args()
    base = dict(dataset=a.dataset, model=a.model, width=a.width, input_size=a.input_size, subset=a.subset,
                batch_size=a.batch_size, epochs=a.epochs, lr=2e-4, progress="none", device="cpu")
    rows = {"sequential": []} | {f"pipeline {k}": [] for k in a.stages}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            torch.set_num_threads(a.threads)
            s = fit(TrainConfig(**base, out=os.path.join(tmp, f"seq{r}")), log=lambda *_: None)
            rows["sequential"].append(s["images_per_second"])
            for k in a.stages:
                s = fit_pipeline(TrainConfig(**base, out=os.path.join(tmp, f"pipe{k}-{r}"), pipeline=k),
                                 log=lambda *_: None, threads=max(1, a.threads // k))
                rows[f"pipeline {k}"].append(s["images_per_second"])
                bounds = s["pipeline"]["bounds"]
                print(f"  pipeline {k}: stages (blocks, 1-based) "
                      + ", ".join(f"{lo + 1}-{hi}" for lo, hi in bounds), flush=True)
    seq = sum(rows["sequential"]) / len(rows["sequential"])
    print(f"\n{a.model} width {a.width:g}, batch {a.batch_size}, {a.dataset} {a.input_size}px, "
          f"{a.threads} cores in total, {time.strftime('%Y-%m-%d')}")
    print(f"{'mode':<14}{'processes x threads':>21}{'train img/s':>13}{'vs sequential':>15}   runs")
    for name, v in rows.items():
        k = 1 if name == "sequential" else int(name.split()[1])
        mean = sum(v) / len(v)
        print(f"{name:<14}{f'{k} x {max(1, a.threads // k)}':>21}{mean:>13.1f}{mean / seq:>14.2f}x   "
              + " ".join(f"{x:.1f}" for x in v))


if __name__ == "__main__":
    main()
