"""Analytical convolution FLOPs of a training step (read from the autograd graph) and the fp32 matmul peak
they are compared with (``asge bench``'s GFLOP/s and utilisation); the multiply-accumulates of a forward
pass (``forward_macs``: the Best strategy's early-exit cost, :meth:`asge.nn.model.ASGENet.compute_fraction`)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def _conv_nodes(block, needs_input_grad: bool, train_batch: int = 128, batch: int = 2):
    """(MACs per image, computes its input's gradient) of every convolution in one training forward of
    ``block``, read from the autograd graph of a small probe batch (so it follows whatever the block does,
    e.g. an entry norm folded into the conv). A conv whose batch is not the probe's runs once per batch:
    its cost per image is divided by ``train_batch``."""
    p = next(block.parameters())
    x = torch.randn(batch, block.in_channels, block.in_size, block.in_size, device=p.device, dtype=p.dtype)
    x.requires_grad_(needs_input_grad)
    y = block.features(x)
    out, seen, stack = [], set(), [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == "ConvolutionBackward0":
            b, cin, h, w = node._saved_input.shape
            cout, _, kh, kw = node._saved_weight.shape
            per = batch if b == batch else train_batch
            out.append((b * cin * cout * kh * kw * h * w / per, node.next_functions[0][0] is not None))
        stack.extend(f for f, _ in node.next_functions)
    return out


def conv_needs_input_grad(net, method: str) -> list[bool]:
    """Whether each block's (main) conv computes the gradient of its input in a training step.

    BP: every block but the first (whose input is the image needs none); ASGE: none by detachment, unless
    something before the conv learns from the block's loss (a trainable entry norm applied before the conv).
    """
    return [max(_conv_nodes(b, method == "bp" and i > 0))[1] for i, b in enumerate(net.blocks)]


def conv_flops(net, method: str, batch: int = 128) -> dict:
    """Analytical conv FLOPs per training image: forward 2*MACs, weight gradient 2*MACs, input gradient
    2*MACs for the convolutions that compute it (read from the autograd graph, see ``_conv_nodes``)."""
    fwd = wgrad = igrad = 0.0
    for i, b in enumerate(net.blocks):
        for macs, needs in _conv_nodes(b, method == "bp" and i > 0, batch):
            fwd += 2 * macs
            wgrad += 2 * macs
            igrad += 2 * macs if needs else 0
    return {"forward": int(fwd), "weight_grad": int(wgrad), "input_grad": int(igrad),
            "total": int(fwd + wgrad + igrad)}


def forward_macs(run: Callable[[torch.Tensor], object], example: torch.Tensor) -> int:
    """Multiply-accumulates per image that ``run(x)`` spends in convolutions and matrix products (linear
    layers, matmuls, and einsums that torch computes as one), as torch dispatches them, counted by
    ``torch.utils.flop_counter`` (2 FLOPs per multiply-accumulate; bias additions, norms and other
    elementwise work are not counted). ``example``: one input, (1, C, H, W).

    ``run`` is counted on a batch of one and a batch of two copies of ``example``, and the difference is
    the cost per image: work done once per batch whatever its size (an affine entry norm's beta map,
    :func:`asge.nn.block.beta_map`) is left out. Gradients are off; the caller chooses train or eval mode.
    """
    from torch.utils.flop_counter import FlopCounterMode
    flops = []
    for batch in (1, 2):
        x = example.expand(batch, *example.shape[1:]).contiguous()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run(x)
        flops.append(counter.get_total_flops())
    return (flops[1] - flops[0]) // 2


def matmul_peak_gflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best of ``reps`` fp32 n x n matmuls, in GFLOP/s (2 n^3 per product)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9
