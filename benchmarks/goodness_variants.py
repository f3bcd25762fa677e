"""The cost of the goodness path in ASGE's step, and of a leaner formulation of the same function.

``spatial_goodness`` computes ``adaptive_avg_pool2d(Y**2, P)``. Autograd then keeps Y**2 (a Y-sized
tensor) for the pool's backward on top of Y, and the pool's backward hands back a gradient whose memory
format differs from the conv's, which costs format copies. When H and W are multiples of P (every VGG
preset) the same function can be an autograd Function that saves only Y (kept by the ReLU anyway) and
whose backward is ``2 * Y * upsample(grad) / area``. This script measures, on the same ASGE network and
batches, the step time (alternating, CPU time and wall time) and the saved-for-backward bytes of both,
and checks that values and gradients agree. The lean version is an experiment patched in here only.

    python benchmarks/goodness_variants.py --width 0.25 0.5 --norm rms
"""
import argparse
import time

import torch
import torch.nn.functional as F

import asge.nn.block as block_module
from asge.perf.activation_memory import measure_saved_bytes
from asge.config import TrainConfig
from asge.nn.goodness import spatial_goodness
from asge.nn.model import ASGENet
from asge.train import LocalLearning


class PatchEnergy(torch.autograd.Function):
    """Mean of y**2 over each (H/P x W/P) patch; saves y only."""

    @staticmethod
    def forward(ctx, y, p):
        ctx.save_for_backward(y)
        ctx.p = p
        return F.avg_pool2d(y.square(), (y.shape[2] // p, y.shape[3] // p))

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        kh, kw = y.shape[2] // ctx.p, y.shape[3] // ctx.p
        up = F.interpolate(g, scale_factor=(kh, kw), mode="nearest") if (kh, kw) != (1, 1) else g
        return y * up * (2.0 / (kh * kw)), None


def lean_goodness(y, partition, reduce="mean"):
    h, w = y.shape[-2:]
    if reduce != "mean" or h % partition or w % partition:
        return spatial_goodness(y, partition, reduce)
    return PatchEnergy.apply(y, partition).flatten(1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--norm", default="layer")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()

    y = torch.randn(3, 4, 16, 16, requires_grad=True)
    for P in (1, 2, 4, 8):
        ga, = torch.autograd.grad(spatial_goodness(y, P).square().sum(), y)
        gb, = torch.autograd.grad(lean_goodness(y, P).square().sum(), y)
        assert torch.allclose(spatial_goodness(y, P), lean_goodness(y, P), atol=1e-6) and torch.allclose(ga, gb, atol=1e-6)

    print(f"{'width':>6} {'goodness':<9}{'saved MiB':>10}{'wall s/step':>12}{'CPU s/step':>11}")
    for w in a.width:
        rows = {}
        for name, fn in (("current", spatial_goodness), ("lean", lean_goodness)):
            block_module.spatial_goodness = fn
            cfg = TrainConfig(model="vgg8", width=w, lr=2e-4, norm=a.norm, channels_last=a.channels_last).resolved()
            net = ASGENet.from_preset("vgg8", width=w, norm=a.norm, seed=0)
            fmt = torch.channels_last if a.channels_last else torch.contiguous_format
            net = net.to(memory_format=fmt)
            m = LocalLearning(net, cfg, 100, torch.device("cpu"))
            m.start_epoch(0)
            g = torch.Generator().manual_seed(0)
            x = torch.rand(a.batch_size, 3, 32, 32, generator=g).contiguous(memory_format=fmt)
            lab = torch.randint(0, 10, (a.batch_size,), generator=g)
            m.train_step(x, lab, 0)
            saved, _ = measure_saved_bytes(m, x, lab, 1)
            rows[name] = [m, x, lab, fn, saved, 0.0, 0.0]
        for step in range(a.steps):
            for name in (("current", "lean") if step % 2 == 0 else ("lean", "current")):
                r = rows[name]
                block_module.spatial_goodness = r[3]
                t, c = time.perf_counter(), time.process_time()
                r[0].train_step(r[1], r[2], 2 + step)
                r[5] += time.perf_counter() - t
                r[6] += time.process_time() - c
        for name, r in rows.items():
            print(f"{w:>6g} {name:<9}{r[4] / 2 ** 20:>10.1f}{r[5] / a.steps:>12.3f}{r[6] / a.steps:>11.3f}")
    block_module.spatial_goodness = spatial_goodness


if __name__ == "__main__":
    main()
