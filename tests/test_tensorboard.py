"""TensorBoard logging from fit(): the event files read back with TensorBoard's own EventAccumulator."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from asge.config import TrainConfig
from asge.train.tensorboard import TensorBoardLogger, epoch_scalars
from asge.train import fit

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


pytestmark = pytest.mark.usefixtures("single_thread")


def train(tmp: Path, method: str) -> tuple[Path, dict]:
    run = tmp / method
    summary = fit(TrainConfig(epochs=2, out=str(run), progress="none", subset=300, method=method, device="cpu",
                              tensorboard=True), log=lambda s: None)
    return run, summary


def read_events(run: Path) -> EventAccumulator:
    logdir = run / "tensorboard"
    assert any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir())
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def values(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_asge_run_logs_every_block_strategy_head_lr_speed_and_test(tmp_path):
    run, summary = train(tmp_path, "asge")
    acc = read_events(run)
    tags = set(acc.Tags()["scalars"])
    L = len(summary["channels"])
    expected = {f"block/{l}/{k}" for l in range(1, L + 1) for k in ("train_acc", "train_loss", "val_acc", "val_loss")}
    expected |= {f"strategy/{s}/val_acc" for s in ("fusion", "last", "best")}
    expected |= {"strategy/fusion/train_acc", "strategy/last/train_acc", "heads/train_loss",
                 "heads/fusion/val_loss", "heads/last/val_loss", "lr/blocks", "lr/heads",
                 "speed/epoch_seconds", "speed/images_per_second"}
    expected |= {"test/fusion_acc", "test/last_acc", "test/best_acc", "test/best_block"}
    expected |= {f"test/block/{l}_acc" for l in range(1, L + 1)}
    assert tags == expected

    for r in metrics(run):
        e = r["epoch"]
        for l in range(L):
            assert values(acc, f"block/{l + 1}/val_acc")[e] == pytest.approx(r["val"]["block_acc"][l], abs=1e-4)
            assert values(acc, f"block/{l + 1}/train_loss")[e] == pytest.approx(r["train"]["block_loss"][l], rel=1e-5)
        for s, v in r["val_strategy"].items():
            assert values(acc, f"strategy/{s}/val_acc")[e] == pytest.approx(v, abs=1e-4)
        assert values(acc, "heads/train_loss")[e] == pytest.approx(r["train"]["head_loss"], rel=1e-5)
        assert values(acc, "lr/heads")[e] == pytest.approx(r["lr"]["heads"], rel=1e-5)
        assert values(acc, "speed/images_per_second")[e] == pytest.approx(r["images_per_second"], rel=1e-5)
    assert sorted(values(acc, "strategy/fusion/val_acc")) == [1, 2]

    step = summary["best_epoch"]
    for s, v in summary["test_accuracy"].items():
        assert values(acc, f"test/{s}_acc") == {step: pytest.approx(v, abs=1e-4)}
    assert values(acc, "test/best_block") == {step: summary["best_block"]}
    assert "summary" in " ".join(acc.Tags()["tensors"])


def test_bp_run_logs_its_loss_and_last_head_only(tmp_path):
    run, summary = train(tmp_path, "bp")
    acc = read_events(run)
    assert set(acc.Tags()["scalars"]) == {
        "strategy/last/val_acc", "strategy/last/train_acc", "heads/train_loss", "heads/last/val_loss",
        "lr/blocks", "speed/epoch_seconds", "speed/images_per_second", "test/last_acc"}
    for r in metrics(run):
        assert values(acc, "heads/train_loss")[r["epoch"]] == pytest.approx(r["train"]["loss"], rel=1e-5)
        assert values(acc, "strategy/last/train_acc")[r["epoch"]] == pytest.approx(r["train"]["last_acc"], abs=1e-4)
        assert values(acc, "strategy/last/val_acc")[r["epoch"]] == pytest.approx(r["val_strategy"]["last"], abs=1e-4)
    assert values(acc, "test/last_acc") == {summary["best_epoch"]: pytest.approx(summary["test_accuracy"]["last"],
                                                                                   abs=1e-4)}


def test_resumed_logger_drops_steps_from_the_restart_epoch_on(tmp_path):
    """A resumed run re-logs epochs after its checkpoint; TensorBoard must show the new values, not both."""
    run = tmp_path / "run"
    run.mkdir()
    record = {"epoch": 1, "train": {"loss": 1.0, "last_acc": 50.0}, "val_strategy": {"last": 60.0},
              "val": {"last_loss": 1.0}, "lr": {"blocks": 0.1}, "seconds": 1.0, "images_per_second": 10.0}
    with TensorBoardLogger(run) as board:
        board.log_epoch(1, record)
        board.log_epoch(2, {**record, "epoch": 2, "val_strategy": {"last": 70.0}})   # lost with the process
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")                   # checkpoint was at epoch 1
    with TensorBoardLogger(run) as board:
        board.log_epoch(2, {**record, "epoch": 2, "val_strategy": {"last": 75.0}})
    acc = read_events(run)
    assert values(acc, "strategy/last/val_acc") == {1: 60.0, 2: 75.0}


def test_epoch_scalars_skip_missing_and_non_finite_values():
    tags = epoch_scalars({"epoch": 1, "train": {"loss": float("nan"), "last_acc": 10.0}, "val": {},
                          "val_strategy": {"last": 12.5}, "lr": {"blocks": None}, "seconds": 2.0})
    assert tags == {"strategy/last/train_acc": 10.0, "strategy/last/val_acc": 12.5, "speed/epoch_seconds": 2.0}
