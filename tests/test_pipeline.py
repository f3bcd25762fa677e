"""--pipeline K: stages in processes compute exactly what the sequential loop computes."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import same_tensors

from asge.config import TrainConfig
from asge.errors import AsgeError
from asge.nn.model import ASGENet
from asge.runs.directory import load_checkpoint
from asge.train import fit
from asge.train.pipeline import fit_pipeline, stage_bounds

TINY = dict(dataset="digits", model="digits", channels=[8, 16, 16, 32], downsample=[False, True, False, False],
            epochs=2, batch_size=64, subset=256, progress="none", seed=5)


def test_stage_bounds_are_contiguous_and_cover_every_block():
    net = ASGENet.from_preset("vgg8", width=0.25)
    for k in range(1, 8):
        b = stage_bounds(net, k)
        assert len(b) == k and b[0][0] == 0 and b[-1][1] == 7
        assert all(lo < hi for lo, hi in b) and all(b[i][1] == b[i + 1][0] for i in range(k - 1))
    with pytest.raises(AsgeError):
        stage_bounds(net, 8)


def test_two_stage_pipeline_equals_sequential(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                             # every stage runs 1 thread: the same kernels
    try:
        fit(TrainConfig(**TINY, out=str(tmp_path / "seq")), log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    summary = fit_pipeline(TrainConfig(**TINY, out=str(tmp_path / "pipe"), pipeline=2), log=lambda *_: None,
                           threads=1)
    assert summary["pipeline"]["stages"] == 2
    assert torch.get_num_threads() == threads           # restored
    seq = load_checkpoint(tmp_path / "seq" / "checkpoints" / "last.pt")
    pipe = load_checkpoint(tmp_path / "pipe" / "checkpoints" / "last.pt")
    assert seq["model"].keys() == pipe["model"].keys()
    for k in seq["model"]:
        assert torch.equal(seq["model"][k], pipe["model"][k]), k
    assert same_tensors(seq["method"], pipe["method"])          # optimizer and schedule states too
    read = lambda d: [json.loads(l)["train"] for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731,E741
    assert read("seq") == read("pipe")


def test_pipeline_rejects_backprop(tmp_path):
    with pytest.raises(AsgeError, match="asge"):
        fit_pipeline(TrainConfig(**{**TINY, "method": "bp"}, out=str(tmp_path / "bp"), pipeline=2))


class _Stop(Exception):
    pass


def test_interrupted_pipeline_resumes_to_the_sequential_result(tmp_path):
    """Stop a pipelined run after epoch 1, resume it pipelined: the states pushed back to the stages must
    give the sequential run's weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(TrainConfig(**TINY, out=str(tmp_path / "seq")), log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)

    def stop(epoch, record):
        if epoch == 1:
            raise _Stop

    cfg = TrainConfig(**TINY, out=str(tmp_path / "pipe"), pipeline=2)
    with pytest.raises(_Stop):
        fit_pipeline(cfg, log=lambda *_: None, threads=1, on_epoch_end=stop)
    assert torch.get_num_threads() == threads
    fit_pipeline(cfg, resume=True, log=lambda *_: None, threads=1)
    seq = load_checkpoint(tmp_path / "seq" / "checkpoints" / "last.pt")
    pipe = load_checkpoint(tmp_path / "pipe" / "checkpoints" / "last.pt")
    for k in seq["model"]:
        assert torch.equal(seq["model"][k], pipe["model"][k]), k
    assert same_tensors(seq["method"], pipe["method"])
