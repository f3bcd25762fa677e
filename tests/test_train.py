"""The training loop: run directory, strategies, checkpoints, resume, failures."""
import json
import pickle

import pytest
import torch
import yaml

from asge.config import TrainConfig
from asge.errors import AsgeError, CheckpointError, NonFiniteLossError
from asge.use.evaluate import evaluate_run
from asge.runs.directory import RunDir, load_checkpoint
from asge.train import fit


def cfg(tmp_path=None, **kw):
    base = dict(dataset="digits", channels=[8, 16, 16], downsample=[False, True, False], epochs=2,
                subset=400, batch_size=64, progress="none", seed=1)
    base.update(kw)
    if tmp_path is not None:
        base.setdefault("out", str(tmp_path / "run"))
    return TrainConfig(**base)


def test_fit_writes_run_directory(tmp_path):
    s = fit(cfg(tmp_path), log=lambda m: None)
    run = tmp_path / "run"
    for f in ["config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert summary == json.loads(json.dumps(s))
    for key in ["method", "dataset", "model", "epochs", "seed", "test_accuracy", "block_test_accuracy",
                "best_block", "parameters", "train_seconds", "images_per_second"]:
        assert key in summary
    assert set(summary["test_accuracy"]) == {"fusion", "last", "best"}
    assert len(summary["block_test_accuracy"]) == 3
    assert summary["test_accuracy"]["best"] == summary["block_test_accuracy"][summary["best_block"] - 1]
    assert summary["best_block"] == 1 + max(range(3), key=lambda i: summary["block_val_accuracy"][i])
    assert set(summary["parameters"]) == {"blocks", "fusion", "last", "best"}
    assert summary["parameters"]["best"] == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    r = lines[0]
    assert len(r["train"]["block_acc"]) == 3 and len(r["val"]["block_loss"]) == 3
    assert set(r["val_strategy"]) == {"fusion", "last", "best"} and r["seconds"] > 0 and "blocks" in r["lr"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["epochs"] == 2 and config["lr"] == 2e-3     # resolved from the digits preset


def test_asge_learns_digits(tmp_path):
    s = fit(cfg(tmp_path, epochs=5, subset=None, channels=None, downsample=None, width=0.5), log=lambda m: None)
    assert s["test_accuracy"]["best"] > 80          # chance is 10%
    assert s["test_accuracy"]["fusion"] > 50


def test_eval_matches_summary_and_uses_each_strategy(tmp_path):
    s = fit(cfg(tmp_path), log=lambda m: None)
    r = evaluate_run(str(tmp_path / "run"), device="cpu")
    assert r["best_block"] == s["best_block"]
    for k in ("fusion", "last", "best"):
        assert r[k] == pytest.approx(s["test_accuracy"][k])


def test_bp_baseline_same_blocks(tmp_path):
    s = fit(cfg(tmp_path, method="bp"), log=lambda m: None)
    assert set(s["test_accuracy"]) == {"last"}
    assert s["block_test_accuracy"] == [] and s["best_block"] is None
    assert s["parameters"]["blocks"] == fit(cfg(None, epochs=1), log=lambda m: None)["parameters"]["blocks"]
    r = evaluate_run(str(tmp_path / "run"), device="cpu")
    assert r == {"last": pytest.approx(s["test_accuracy"]["last"])}


class Killed(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path):
    full = fit(cfg(tmp_path / "a", epochs=3, dropout=0.2), log=lambda m: None)

    def kill(epoch, record):
        if epoch == 1:
            raise Killed
    with pytest.raises(Killed):
        fit(cfg(tmp_path / "b", epochs=3, dropout=0.2), on_epoch_end=kill, log=lambda m: None)
    with pytest.raises(AsgeError, match="--resume"):
        fit(cfg(tmp_path / "b", epochs=3, dropout=0.2), log=lambda m: None)
    resumed = fit(cfg(tmp_path / "b", epochs=3, dropout=0.2), resume=True, log=lambda m: None)
    a = load_checkpoint(tmp_path / "a/run/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "b/run/checkpoints/last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert resumed["test_accuracy"] == full["test_accuracy"]
    metrics_a = RunDir(tmp_path / "a/run").read_metrics()
    metrics_b = RunDir(tmp_path / "b/run").read_metrics()
    assert [m["val"] for m in metrics_a] == [m["val"] for m in metrics_b]


def test_resume_with_other_configuration_is_refused(tmp_path):
    fit(cfg(tmp_path, epochs=1), log=lambda m: None)
    with pytest.raises(CheckpointError, match="pool"):
        fit(cfg(tmp_path, epochs=1, pool="max"), resume=True, log=lambda m: None)


def test_damaged_and_foreign_checkpoints(tmp_path):
    fit(cfg(tmp_path, epochs=1), log=lambda m: None)
    last = tmp_path / "run/checkpoints/last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="damaged"):
        fit(cfg(tmp_path, epochs=1), resume=True, log=lambda m: None)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"format": "asge-checkpoint-1", "x": Evil()}))
    with pytest.raises(CheckpointError, match="damaged or not an asge checkpoint"):
        load_checkpoint(bad)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an asge checkpoint"):
        load_checkpoint(plain)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from asge.train import loop
    built = []
    build = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda *a: built.append(build(*a)) or built[-1])

    def poison(epoch, record):
        if epoch == 1:   # break block 2 after the first epoch's checkpoint
            with torch.no_grad():
                built[0].blocks[1].conv.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="block 2 became NaN or inf at step 0 of epoch 2"):
        fit(cfg(tmp_path, epochs=3), on_epoch_end=poison, log=lambda m: None)
    ckpt = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert ckpt["epoch"] == 1
    assert torch.isfinite(ckpt["model"]["blocks.1.conv.weight"]).all()
