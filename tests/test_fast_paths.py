"""The fast local step: no input gradient, no host sync, dropout seeded per (epoch, step, block), and the
bf16 autocast, channels_last and compile paths (they run and learn on digits)."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from asge.config import TrainConfig
from asge.model import ASGENet
from asge.train import LocalLearning, block_step, fit
from asge.train import local as local_mod
from asge.train.local import dropout_seed, make_optimizer

ASGE_DIR = os.path.dirname(os.path.dirname(local_mod.__file__))
TORCH_DIR = os.path.dirname(torch.__file__)
DISPATCH_FILES = {os.path.join(TORCH_DIR, f) for f in ("overrides.py", "_tensor.py")}


def tiny_net(**kw):
    return ASGENet([8, 16, 16], [False, True, False], in_channels=1, num_classes=10, image_size=8, seed=0, **kw)


def test_block_step_computes_no_input_gradient():
    net = tiny_net()
    block = net.blocks[1]
    opt, _ = make_optimizer(block.parameters(), 1e-3, 0.0, 10, 1e-5)
    x = torch.randn(4, 8, 8, 8, requires_grad=True)
    seen = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t) or t, lambda t: t):
        out, feat, loss, right = block_step(block, opt, x, torch.zeros(4, dtype=torch.long))
    assert not any(t is x for t in seen)                 # autograd kept no handle on the caller's tensor
    assert x.grad is None                                # the input is detached: no gradient flows to it
    assert not out.requires_grad and not feat.requires_grad and not loss.requires_grad
    assert all(p.grad is not None for p in block.parameters())
    assert out.shape == (4, 16, 4, 4) and feat.shape == (4, 16)


class _HostSyncSpy(TorchFunctionMode):
    """Records every host-syncing tensor call (item, tolist, bool, float, int, cpu, numpy) made from asge's
    own code (calls made inside torch, e.g. an optimizer reading its CPU step counter, are not ours)."""

    BANNED = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
              torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.cpu, torch.Tensor.numpy}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.BANNED:
            f = sys._getframe(1)
            while f is not None and f.f_code.co_filename in DISPATCH_FILES:
                f = f.f_back                             # torch's own dispatch layers, not a caller
            if f is not None and f.f_code.co_filename.startswith(ASGE_DIR):
                self.calls.append(f"{func.__name__} at {f.f_code.co_filename}:{f.f_lineno}")
        return func(*args, **(kwargs or {}))


def test_spy_sees_a_host_sync_in_asge_code():
    net = tiny_net()
    m = LocalLearning(net, TrainConfig(lr=1e-3), 10, torch.device("cpu"))
    with _HostSyncSpy() as spy:
        m.running()                                      # reads the statistics: one host sync, by design
    assert spy.calls


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_local_training_step_makes_no_host_sync(amp):
    net = tiny_net()
    m = LocalLearning(net, TrainConfig(lr=1e-3, amp=amp), 10, torch.device("cpu"))
    m.start_epoch(123)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    m.train_step(x, y, 0)                                # optimizer state created outside the spy
    with _HostSyncSpy() as spy:
        for step in range(1, 3):
            m.train_step(x, y, step)
    assert spy.calls == []


def test_dropout_seed_fixes_the_mask_and_restores_the_global_rng():
    net = tiny_net(dropout=0.5)
    block = net.blocks[0]
    x = torch.randn(4, 1, 8, 8)
    outs = []
    for _ in range(2):
        opt, _ = make_optimizer(block.parameters(), 0.0, 0.0, 10, 0.0)
        torch.manual_seed(7)
        before = torch.get_rng_state()
        out, *_ = block_step(block, opt, x, torch.zeros(4, dtype=torch.long), dropout_seed=dropout_seed(1, 2, 0))
        assert torch.equal(torch.get_rng_state(), before)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    seeds = {dropout_seed(e, s, b) for e in range(3) for s in range(50) for b in range(8)}
    assert len(seeds) == 3 * 50 * 8


def test_handoff_sees_the_output_before_the_update():
    net = tiny_net()
    block = net.blocks[0]
    opt, _ = make_optimizer(block.parameters(), 1e-2, 0.0, 10, 1e-5)
    got = {}

    def handoff(out, feat):
        got["out"], got["w"] = out.clone(), block.conv.weight.detach().clone()

    out, *_ = block_step(block, opt, torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), handoff=handoff)
    assert torch.equal(got["out"], out)
    assert not torch.equal(got["w"], block.conv.weight)  # the update came after the hand-off


def test_compile_flag_compiles_each_block(monkeypatch):
    compiled = []

    def fake_compile(fn, **kw):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(local_mod.torch, "compile", fake_compile)
    net = tiny_net()
    m = LocalLearning(net, TrainConfig(lr=1e-3, compile=True), 10, torch.device("cpu"))
    assert len(compiled) == len(net.blocks) and m.forwards[0] is compiled[0]
    m.train_step(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)), 0)


def _learns(tmp_path, **kw):
    cfg = TrainConfig(dataset="digits", model="digits", channels=[16, 32, 32], downsample=[False, True, False],
                      epochs=2, progress="none", seed=0, out=str(tmp_path / "run"), **kw)
    summary = fit(cfg, log=lambda *_: None)
    import json
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = metrics[0]["train"]["block_loss"], metrics[-1]["train"]["block_loss"]
    assert sum(last) < sum(first)                        # the local losses went down
    assert summary["test_accuracy"]["best"] > 30.0       # chance is 10%
    return summary


def test_bf16_autocast_trains_on_digits(tmp_path):
    _learns(tmp_path, amp="bf16")


def test_channels_last_trains_on_digits(tmp_path):
    _learns(tmp_path, channels_last=True)
