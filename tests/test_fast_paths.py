"""The fast local step: no input gradient, no host sync, dropout seeded per (epoch, step, block), and the
bf16 autocast, channels_last and compile paths (they run and learn on digits)."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from asge.config import TrainConfig
from asge.nn.model import ASGENet
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
    assert block.fusable                                 # this is the fused path (block.fused_local_forward)


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


def _plain_local_forward(block, x):
    """The fused step's reference: relu -> square -> window average -> projection, differentiated by autograd."""
    from asge.nn.goodness import _bin_sizes
    y = block.features(local_mod.channels_last(x))
    b, c, h, w = y.shape
    p = block.partition
    g = y.square()
    g = g.mean(dim=(2, 3), keepdim=True) if p == 1 else torch.nn.functional.avg_pool2d(g, (h // p, w // p))
    if block.goodness == "sum":
        g = g * (_bin_sizes(h, p, y.device)[:, None] * _bin_sizes(w, p, y.device)[None, :])
    return y, block.projection(g.flatten(1))


def plain_and_fused_steps(nets, opts, x, y, step: int) -> list[list[torch.Tensor]]:
    """One local step of every block of ``nets[0]`` by the plain graph and of ``nets[1]`` by the fused path:
    [outputs, features and losses of every block] for each."""
    import functools
    results = []
    for k, net in enumerate(nets):
        h, outs = x, []
        for l, b in enumerate(net.blocks):
            plain = functools.partial(_plain_local_forward, b) if k == 0 else None
            h, feat, loss, _ = block_step(b, opts[k][l], h, y, dropout_seed=dropout_seed(1, step, l), forward=plain)
            outs += [h, feat, loss]
        results.append(outs)
    return results


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
@pytest.mark.parametrize("goodness", ["mean", "sum"])
def test_fused_step_trains_bitwise_like_plain_autograd(norm, goodness):
    """block.fused_local_forward (ReLU + goodness with a one-pass backward, Y**2 reused by the RMS pooling)
    gives the weights, outputs and features of the plain autograd graph, bit for bit, over three steps."""
    nets = [ASGENet([8, 16, 16, 32], [False, True, False, True], in_channels=3, num_classes=10, image_size=8,
                    norm=norm, goodness=goodness, seed=0) for _ in range(2)]
    assert all(b.fusable for b in nets[1].blocks) and {b.partition for b in nets[1].blocks} == {1, 2, 4}
    opts = [[make_optimizer(b.parameters(), 1e-2, 1e-3, 10, 1e-5)[0] for b in n.blocks] for n in nets]
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x, y = torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)
        assert all(torch.equal(a, b) for a, b in zip(*plain_and_fused_steps(nets, opts, x, y, step)))
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)


def test_fused_goodness_matches_spatial_goodness_and_its_gradient():
    from asge.nn.goodness import relu_spatial_goodness, spatial_goodness
    z = torch.randn(3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    shifts = [torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True),     # the folded norm's beta map
              torch.randn(4, 1, 1, dtype=torch.float64, requires_grad=True)]
    for p, reduce, shift in [(p, r, s) for p in (1, 2, 4) for r in ("mean", "sum") for s in shifts]:
        g, y, sq = relu_spatial_goodness(z, p, reduce, shift=shift)
        assert not y.requires_grad and not sq.requires_grad
        ref = spatial_goodness(torch.relu(z + shift), p, reduce)
        torch.testing.assert_close(g, ref)
        w = torch.randn_like(g)
        got = torch.autograd.grad((g * w).sum(), (z, shift))
        want = torch.autograd.grad((ref * w).sum(), (z, shift))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="equal patches"):
        relu_spatial_goodness(z, 3)


def test_dropout16_mask_rate_layout_gradient_and_seed():
    from asge.layers import Dropout16
    from asge.layers.dropout import drop_levels, keep_mask
    x = torch.rand(64, 16, 16, 16) + 0.5
    assert drop_levels(0.1) == 6554 and drop_levels(0.0) == 0 and drop_levels(1.0) == 65536
    keep = keep_mask(x, 0.1, torch.Generator().manual_seed(0))
    assert keep.dtype == torch.bool and keep.shape == x.shape
    assert abs(keep.float().mean().item() - 0.9) < 0.003
    cl = x.contiguous(memory_format=torch.channels_last)
    assert keep_mask(cl, 0.1).is_contiguous(memory_format=torch.channels_last)
    d = Dropout16(0.25)
    torch.manual_seed(3)
    out = d(cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    kept = out != 0
    torch.testing.assert_close(out[kept], cl[kept] / 0.75)
    torch.manual_seed(3)
    assert torch.equal(d(cl), out)                       # the mask comes from the global RNG's state
    xg = x.clone().requires_grad_()
    d(xg).sum().backward()
    assert set(xg.grad.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    d.eval()
    assert d(x) is x
    assert torch.equal(Dropout16(1.0)(x), torch.zeros_like(x))


@pytest.mark.parametrize("kernel,padding", [(3, 1), (5, 2), (3, 0), (1, 0)])
def test_beta_map_equals_the_convolution_of_the_constant_map(kernel, padding):
    from asge.nn.block import beta_map
    conv = torch.nn.Conv2d(6, 4, kernel, padding=padding, dtype=torch.float64)
    beta = torch.randn(6, dtype=torch.float64, requires_grad=True)
    ref = conv._conv_forward(beta.view(1, -1, 1, 1).expand(1, -1, 7, 9), conv.weight, None)
    got = beta_map(conv, beta, 7, 9)
    torch.testing.assert_close(got, ref)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((got * w).sum(), (beta, conv.weight)),
                    torch.autograd.grad((ref * w).sum(), (beta, conv.weight))):
        torch.testing.assert_close(a, b)


def test_the_asge_command_sleeps_idle_openmp_threads_and_keeps_freed_buffers():
    """runtime.py: OMP_WAIT_POLICY=PASSIVE for the asge command only (set before torch loads, a user's own
    value kept); allocator.py: the CLI's malloc setting."""
    import subprocess
    from asge.runs.allocator import tune_malloc
    from asge.runs.runtime import apply_cli_defaults, launched_as_cli
    probe = ("import os, sys; sys.orig_argv = {argv!r}; import asge; "
             "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda argv, **kw: subprocess.run([sys.executable, "-c", probe.format(argv=argv)], capture_output=True,  # noqa: E731
                                            text=True, env=dict(env, **kw), check=True).stdout.split()
    assert run(["python", "-u", "-m", "asge", "train"]) == ["PASSIVE", "True"]
    assert run(["python", "-m", "asge", "train"], OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "True"]
    assert run(["python", "-c", "import asge"]) == ["None", "True"]          # a library import: untouched
    assert run(["python", "-m", "pytest"]) == ["None", "True"]
    assert not apply_cli_defaults()                                           # torch is loaded here already
    assert not launched_as_cli() or os.path.basename(sys.argv[0]) == "asge"
    assert tune_malloc() in (True, False) and tune_malloc() == tune_malloc()  # idempotent
