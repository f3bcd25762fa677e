"""The tools around training, on a network cut into modules (resnet20, --split K, --local-loss RULE): bench,
ablate, report, --pipeline, torchrun, --amp bf16, --channels-last and the graphed step's needs, the summary
line; each through the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from asge.cli import main
from asge.config import TrainConfig
from asge.data import DatasetInfo
from asge.runs.build import build_model
from asge.train import Backprop, LocalLearning

from test_capture import SYNCS, Dispatched, rng_state_calls  # noqa: F401  (rng_state_calls: a fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

CUT = ["--model", "resnet20", "--width", "0.25", "--split", "4"]
FAST = ["--dataset", "digits", "--subset", "200", "--batch-size", "50", "--progress", "none", "--device", "cpu"]


def weights(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory, single_thread):
    """resnet20 (width 0.25) cut into 4 modules, asge rule, 2 epochs on 200 digits: the sequential reference."""
    out = tmp_path_factory.mktemp("cut") / "run"
    assert main(["train", *CUT, "--epochs", "2", "--out", str(out), *FAST]) == 0
    return out


# -- the graphed step's needs (--cuda-graphs), checked on the CPU ---------------------------------------------
@pytest.mark.parametrize("rule", ["asge", "cwc", "dgl", "predsim"])
@pytest.mark.parametrize("method", ["asge", "bp"])
def test_cut_network_step_is_capture_ready(method, rule, rng_state_calls):  # noqa: F811
    """tests/test_capture.py's check on resnet20 cut into 4 modules, every rule: over consecutive steps the
    device step dispatches the same operators on the same shapes, with no host sync and no RNG-state call."""
    cfg = TrainConfig.from_dict({"model": "resnet20", "width": 1.25 if rule == "cwc" else 0.5, "split": "4",
                                 "local_loss": rule, "method": method, "lr": 1e-2, "epochs": 1}).resolved()
    torch.manual_seed(0)
    net = build_model(cfg, DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=16))
    m = (LocalLearning if method == "asge" else Backprop)(net, cfg, 10, torch.device("cpu"))
    m.start_epoch(5)
    del rng_state_calls[:]
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(3)]
    m.train_step(*batches[0], 0)
    recorded = []
    for step, (x, y) in enumerate(batches[1:], 1):
        m.begin_step(step)
        with Dispatched() as d:
            m.device_step(x, y)
        m.end_step(y.shape[0])
        recorded.append(d.ops)
    first, second = recorded
    assert len(first) > 100 and first == second
    assert [op for op, *_ in first if op in SYNCS] == []
    assert rng_state_calls == []
