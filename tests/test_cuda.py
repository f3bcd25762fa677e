"""The CUDA paths: the fused local step, Dropout16, no host sync in either method's step, bf16, the bench's
peak memory, and short runs of both methods. Skipped without a GPU (benchmarks/gpu_check.sh runs them)."""
from __future__ import annotations

import pytest
import torch

from asge.config import TrainConfig
from asge.model import ASGENet
from asge.train import Backprop, LocalLearning, fit
from asge.train.local import make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run by benchmarks/gpu_check.sh)")

CUDA = torch.device("cuda")


def net_on(device, **kw):
    return ASGENet([16, 32, 32, 64], [False, True, False, True], in_channels=3, num_classes=10, image_size=16,
                   seed=0, **kw).to(device)


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_fused_step_matches_plain_autograd_on_cuda(norm):
    from test_fast_paths import plain_and_fused_steps
    nets = [net_on(CUDA, norm=norm) for _ in range(2)]
    opts = [[make_optimizer(b.parameters(), 1e-2, 1e-3, 10, 1e-5)[0] for b in n.blocks] for n in nets]
    x = torch.randn(8, 3, 16, 16, device=CUDA)
    y = torch.randint(0, 10, (8,), device=CUDA)
    for a, b in zip(*plain_and_fused_steps(nets, opts, x, y, 0)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_dropout16_on_cuda():
    from asge.layers.dropout import Dropout16, keep_mask
    x = torch.rand(32, 16, 16, 16, device=CUDA) + 0.5
    keep = keep_mask(x, 0.1)
    assert keep.is_cuda and abs(keep.float().mean().item() - 0.9) < 0.005
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)
    out = Dropout16(0.1)(cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)
    assert torch.equal(Dropout16(0.1)(cl), out)


@pytest.mark.parametrize("method", [LocalLearning, Backprop])
@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_training_step_makes_no_host_sync_on_cuda(method, amp):
    m = method(net_on(CUDA), TrainConfig(lr=1e-3, amp=amp), 10, CUDA)
    if hasattr(m, "start_epoch"):
        m.start_epoch(7)
    x = torch.randn(8, 3, 16, 16, device=CUDA)
    y = torch.randint(0, 10, (8,), device=CUDA)
    m.train_step(x, y, 0)                               # optimizer states are created outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 3):
            m.train_step(x, y, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.isfinite(m.loss_sum).all()


def test_bench_reports_cuda_peak_memory_for_both_methods():
    from asge.bench import bench_one
    cfg = TrainConfig(model="digits", width=0.25, batch_size=32, lr=2e-4, device="cuda").resolved()
    cfg.dataset = "synthetic"
    r = bench_one(cfg, steps=2, warmup=1, chunk=1, device=CUDA, log=lambda *_: None)
    peak = r["cuda_peak_bytes"]
    assert peak["asge"] > 0 and peak["bp"] > 0 and peak["asge"] < peak["bp"]
    assert r["images_per_second"]["asge"] > 0 and r["images_per_second"]["bp"] > 0


@pytest.mark.parametrize("method", ["asge", "bp"])
def test_both_methods_learn_digits_on_cuda_in_bf16(tmp_path, method):
    cfg = TrainConfig(dataset="digits", model="digits", channels=[16, 32, 32], downsample=[False, True, False],
                      epochs=3, progress="none", seed=0, device="cuda", amp="bf16", method=method,
                      out=str(tmp_path / method))
    summary = fit(cfg, log=lambda *_: None)
    assert summary["device"].startswith("cuda")
    # chance is 10%; 3 epochs of ASGE on these 16-32 channel blocks reach 35.8% on an H100 in bf16 and 38.9%
    # on the CPU in fp32 (2026-11-26): the bar is "learns", not a recipe's accuracy.
    assert max(summary["test_accuracy"].values()) > 25.0
