"""Analytical conv training FLOPs of ASGE and BP per image, block by block, and the machine's fp32 matmul peak.

Forward 2*MACs; weight gradient 2*MACs; input gradient 2*MACs. BP skips the input gradient only in block 1.
ASGE detaches every block's input, but a block whose entry norm has trainable parameters (``layer``, the
default) still needs the conv's input gradient to train that norm; with ``--norm rms`` or ``none`` it
computes none.

    python benchmarks/flops.py --model vgg8 --width 0.25 0.5 --norm layer rms
"""
import argparse

import torch

from asge.nn.flops import conv_flops, conv_needs_input_grad, matmul_peak_gflops
from asge.nn.model import ASGENet


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg8")
    p.add_argument("--width", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--norm", nargs="+", default=["layer", "rms"])
    p.add_argument("--no-peak", action="store_true")
    a = p.parse_args()
    for w in a.width:
        for norm in a.norm:
            net = ASGENet.from_preset(a.model, width=w, norm=norm)
            need = {k: conv_needs_input_grad(net, k) for k in ("asge", "bp")}
            print(f"\n{a.model} width {w:g}, norm {norm}: channels {net.channels}")
            print(f"{'block':>6}{'MACs/img (M)':>14}{'ASGE MFLOP':>12}{'BP MFLOP':>11}")
            for i, b in enumerate(net.blocks):
                m = b.conv_macs() / 1e6
                print(f"{i + 1:>6}{m:>14.2f}{(6 if need['asge'][i] else 4) * m:>12.2f}"
                      f"{(6 if need['bp'][i] else 4) * m:>11.2f}")
            fa, fb = conv_flops(net, "asge"), conv_flops(net, "bp")
            print(f"{'total':>6}{fa['forward'] / 2e6:>14.2f}{fa['total'] / 1e6:>12.2f}{fb['total'] / 1e6:>11.2f}"
                  f"   (BP/ASGE = {fb['total'] / fa['total']:.2f})")
    if not a.no_peak:
        print(f"\nfp32 matmul peak (2048^3, best of 5): {matmul_peak_gflops(torch.device('cpu')):.1f} GFLOP/s "
              f"on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
