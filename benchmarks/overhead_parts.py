"""What parts of ASGE's step cost in host time: ``asge bench --overhead``'s measurement (VGG8 width 1/32,
batch 1, one thread, ASGE and BP steps alternating) with one part of ASGE's step taken out at a time.

    python benchmarks/overhead_parts.py [--steps 300] [--out overhead_parts.json]

Parts: ``shipped`` (nothing taken out), ``no-heads`` (the heads' step replaced by two constant counts: no
Fusion/Last forward, backward or update), ``no-channels-last`` (the local step keeps its input's layout
instead of channels_last). Each row is its own alternating run, so BP is measured beside every variant. A
variant that takes a part out is no longer training the heads: it measures what that part costs, nothing
else.
"""
from __future__ import annotations

import argparse
import json
import re
import time
import warnings

import torch

import asge.train.local as local
from asge.config import TrainConfig
from asge.perf.overhead import measure_overhead


def without_heads(method, feats, labels):
    return [labels.sum(), labels.sum()]


VARIANTS = {
    "shipped": {},
    "no-heads": {"heads_step": without_heads},
    "no-channels-last": {"channels_last": lambda x: x},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="overhead_parts.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))  # no-heads
    cfg = TrainConfig.from_dict(dict(dataset="digits", model="vgg8", width=1 / 32, batch_size=1,
                                     device="cpu")).resolved()
    rows = {}
    for name, patch in VARIANTS.items():
        saved = {}
        for attr, value in patch.items():         # heads_step: a method of LocalLearning; channels_last: local's
            owner = local.LocalLearning if attr == "heads_step" else local
            saved[(owner, attr)] = getattr(owner, attr)
            setattr(owner, attr, value)
        try:
            r = measure_overhead(cfg, torch.device("cpu"), steps=args.steps)
        finally:
            for (owner, attr), value in saved.items():
                setattr(owner, attr, value)
        rows[name] = {"median_ms": r["median_ms"], "ratio": r["ratio"]}
        print(f"{name:<18} ASGE {r['median_ms']['asge']:6.2f} ms   BP {r['median_ms']['bp']:6.2f} ms   "
              f"ASGE/BP {r['ratio']:.2f}x", flush=True)
    report = {"rows": rows, "steps": args.steps, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "torch": torch.__version__}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
