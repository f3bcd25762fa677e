"""asge bench: writes bench.json with the keys; the saved-tensor meter counts what autograd holds."""
from __future__ import annotations

import json

import torch

from asge.bench import RESULT_KEYS, SavedTensorMeter
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
    assert r["train_flops_per_image"]["asge"] < r["train_flops_per_image"]["bp"]
    out = capsys.readouterr().out
    assert "speed" in out and "memory" in out and "bench.json" in out
