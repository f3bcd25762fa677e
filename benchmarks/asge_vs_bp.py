"""ASGE against backprop on VGG8, same network and batches, alternating timed chunks (``asge bench``).

    python benchmarks/asge_vs_bp.py                       # widths 0.25 and 0.5, batch 128, synthetic images
    python benchmarks/asge_vs_bp.py --channels-last --out bench-cl
    python benchmarks/asge_vs_bp.py --profile             # + torch.profiler tables of one step each

Extra arguments go to ``asge bench`` (see ``asge bench --help``); prints the table, writes OUT/bench.json.
"""
import sys

from asge.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", "bench"]
    sys.exit(main(["bench", "--model", "vgg8", *args]))
