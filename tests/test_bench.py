"""asge bench: writes bench.json with the keys; the saved-tensor meter counts what autograd holds."""
from __future__ import annotations

import json
import re

import pytest
import torch

from asge.perf.activation_memory import SavedTensorMeter
from asge.perf.bench import RESULT_KEYS
from asge.nn.flops import conv_flops, conv_needs_input_grad
from asge.nn.model import ASGENet
from asge.cli import main


def test_meter_counts_saved_storages_once_and_releases_them():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64)
    meter = SavedTensorMeter(exclude=[w])
    with meter():
        h = torch.tanh(x @ w)                   # mm saves x (w excluded); tanh saves its result
        loss = (h * h).sum()                    # mul saves h (already counted)
    assert meter.current == x.numel() * 4 + h.numel() * 4
    loss.backward()
    assert meter.current == 0 and meter.peak == x.numel() * 4 + h.numel() * 4


def test_bench_writes_json_with_the_keys(tmp_path, capsys):
    rc = main(["bench", "--model", "digits", "--width", "0.25", "--batch-size", "16", "--steps", "2",
               "--warmup", "1", "--chunk", "1", "--device", "cpu", "--no-matmul-peak", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    (r,) = report["results"]
    for key in RESULT_KEYS:
        assert key in r, key
    assert set(r["images_per_second"]) == {"asge", "bp"} and all(v > 0 for v in r["images_per_second"].values())
    assert r["speed_ratio"] == r["images_per_second"]["asge"] / r["images_per_second"]["bp"]
    saved = r["saved_activation_bytes"]
    assert 0 < saved["asge"] < saved["bp"]       # one block's graph against the whole network's
    assert r["memory_ratio"] == saved["asge"] / saved["bp"]
    assert len(r["asge_block_saved_bytes"]) == len(r["channels"]) + 1     # every block, then the heads
    assert max(r["asge_block_saved_bytes"]) == saved["asge"]
    assert r["train_flops_per_image"]["asge"] <= r["train_flops_per_image"]["bp"]
    out = capsys.readouterr().out
    assert "speed" in out and "memory" in out and "bench.json" in out
    # a tool reports measurements; it does not grade itself against targets
    assert "goal" not in out.lower() and not re.search(r"\bmet\b|\bshort\b", out)
    assert "goals" not in r and not any("goal" in k for k in r)


def test_conv_input_gradients_counted_where_they_are_computed():
    for norm in ("layer", "rms"):
        net = ASGENet.from_preset("vgg8", width=0.25, norm=norm)
        assert conv_needs_input_grad(net, "asge") == [False] * 7     # inputs are detached
        assert conv_needs_input_grad(net, "bp") == [False] + [True] * 6
        a, b = conv_flops(net, "asge"), conv_flops(net, "bp")
        macs = sum(blk.conv_macs() for blk in net.blocks)
        assert a["forward"] >= 2 * macs and a["input_grad"] < 0.01 * a["total"]
        assert b["input_grad"] >= 2 * (macs - net.blocks[0].conv_macs())


def test_asge_computes_no_conv_input_gradient_without_a_trained_norm():
    """With ``norm="rms"`` nothing before the conv needs a gradient: autograd asks the conv for none."""
    import torch.nn.functional as F
    net = ASGENet.from_preset("vgg8", width=0.25, norm="rms")
    b = net.blocks[1]
    x = torch.randn(2, b.in_channels, 32, 32)
    y = b.features(x)
    loss = F.cross_entropy(b.local_logits(y), torch.zeros(2, dtype=torch.long))
    node = y.grad_fn
    while node.name() != "ConvolutionBackward0":
        node = node.next_functions[0][0]
    assert node.next_functions[0][0] is None       # the input slot: no gradient wanted
    loss.backward()


def test_bench_equal_memory_adds_a_row_with_the_largest_asge_batch_within_bps_memory(tmp_path, capsys):
    import dataclasses
    from asge.perf.bench import bench_batches, step_memory
    from asge.config import TrainConfig
    rc = main(["bench", "--model", "digits", "--width", "0.25", "--batch-size", "16", "--steps", "2",
               "--warmup", "1", "--chunk", "1", "--device", "cpu", "--no-matmul-peak", "--equal-memory",
               "--out", str(tmp_path)])
    assert rc == 0
    same, equal = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert same["batch_sizes"] == {"asge": 16, "bp": 16} and "equal_memory" not in same
    e = equal["equal_memory"]
    b = equal["batch_sizes"]["asge"]
    assert equal["batch_sizes"]["bp"] == 16 and b > 16 and b % 8 == 0 and e["asge_batch"] == b
    assert e["basis"] == "saved_activation_bytes"
    assert e["bp_bytes"] == same["saved_activation_bytes"]["bp"] == equal["saved_activation_bytes"]["bp"]
    assert e["asge_bytes"] == equal["saved_activation_bytes"]["asge"] <= e["bp_bytes"]
    cfg = TrainConfig.from_dict(dict(dataset="digits", model="digits", width=0.25, batch_size=16,
                                     device="cpu")).resolved()
    cfg = dataclasses.replace(cfg, dataset="synthetic")
    info = bench_batches(cfg, 1, torch.device("cpu"))[1]
    assert step_memory("asge", cfg, info, b + 8, torch.device("cpu"))[0] > e["bp_bytes"]      # the largest one
    ips = equal["images_per_second"]
    assert equal["speed_ratio"] == ips["asge"] / ips["bp"]
    assert equal["seconds"]["asge"] == pytest.approx(2 * b / ips["asge"])              # images of its batch
    out = capsys.readouterr().out
    assert f"{b}/16" in out and "a larger batch is another optimisation, not the same run" in out


def test_each_method_is_built_for_its_own_batch_size(monkeypatch):
    """A graphed step replays only batches of its configuration's size: at equal memory ASGE's method must
    be built for ASGE's batch, not BP's (else every ASGE step would silently run eager)."""
    import dataclasses
    import asge.perf.bench as bench
    from asge.config import TrainConfig
    built = {}
    real = bench.bench_method

    def spy(name, cfg, *a, **k):
        built[name] = cfg.batch_size
        return real(name, cfg, *a, **k)
    monkeypatch.setattr(bench, "bench_method", spy)
    cfg = TrainConfig.from_dict(dict(dataset="digits", model="digits", width=0.25, batch_size=16,
                                     device="cpu")).resolved()
    r = bench.bench_one(dataclasses.replace(cfg, dataset="synthetic"), steps=1, warmup=1, chunk=1,
                        device=torch.device("cpu"), log=lambda *_: None, asge_batch=24)
    assert built == {"asge": 24, "bp": 16} and r["batch_sizes"] == {"asge": 24, "bp": 16}
