"""Data parallelism (torchrun): ranks shard every batch, all-reduce each block's gradient, stay identical;
only rank 0 writes the run directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from asge.config import TrainConfig
from asge.run import load_checkpoint
from asge.train import fit
from asge.train.distributed import fit_distributed, free_port, rank_seed

TINY = dict(dataset="digits", model="digits", channels=[8, 16, 16], downsample=[False, True, False],
            epochs=1, batch_size=64, subset=256, progress="none", seed=1)


def test_rank_seeds_differ_and_rank0_keeps_the_epoch_seed():
    assert rank_seed(123, 0) == 123
    assert len({rank_seed(123, r) for r in range(8)}) == 8


def test_one_process_group_equals_sequential(tmp_path, monkeypatch):
    """A world of one rank goes through every data-parallel hook and must change nothing."""
    threads = torch.get_num_threads()
    fit(TrainConfig(**TINY, out=str(tmp_path / "seq")), log=lambda *_: None)
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    summary = fit_distributed(TrainConfig(**TINY, out=str(tmp_path / "dp")), log=lambda *_: None)
    assert summary["world_size"] == 1 and summary["ranks_agree"]
    assert torch.get_num_threads() == threads
    a = load_checkpoint(tmp_path / "seq" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "dp" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_gloo_run_completes_and_ranks_agree(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", ASGE_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "asge", "train", "--dataset", "digits",
           "--channels", "8,16v,16", "--epochs", "2", "--batch-size", "64", "--subset", "256",
           "--progress", "none", "--device", "cpu", "--out", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # Ranks compare parameter checksums after every epoch and stop on any difference.
    assert "different parameters" not in r.stdout + r.stderr
    assert r.stdout.count("run directory:") == 1      # rank 0 alone reports
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]     # written once, not once per rank
    # Every epoch counts the whole training split (both ranks' shards).
    assert metrics[-1]["images_per_second"] * metrics[-1]["seconds"] == pytest.approx(256, rel=1e-6)
