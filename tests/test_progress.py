"""Progress everywhere, quietly: --log-interval, the patient default for logs, progress and stop signals during
validation and test, --val-every and --val-subset (issue 16 items 9-11)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import same_tensors

from asge.config import TrainConfig
from asge.errors import Preempted
from asge.runs.directory import RunDir, load_checkpoint
from asge.train import fit
from asge.train import loop
from asge.runs.evaluation import split_subset
from asge.runs.progress import Progress

TINY = dict(dataset="digits", channels=[8, 8], downsample=[False, True], batch_size=128, seed=1)  # 9 steps


def quiet(*_):
    pass


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "asge", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def step_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " step " in line]


def test_piped_default_prints_no_step_lines_for_short_epochs(tmp_path):
    """The digits demo piped to a file: one line per epoch, not five (9 steps per epoch, well under 30 s)."""
    r = cli("train", "--channels", "8,8v", "--epochs", "3", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert step_lines(r.stdout) == []
    assert len([line for line in r.stdout.splitlines() if line.startswith("epoch ")]) == 3


def test_log_interval_in_steps_and_seconds(tmp_path, capsys):
    fit(TrainConfig(**TINY, epochs=2, progress="lines", log_interval=4, out=str(tmp_path / "a")))
    lines = step_lines(capsys.readouterr().out)
    train = [line for line in lines if line.strip().startswith("epoch")]
    assert [line.split()[3] for line in train] == ["4/9", "8/9"] * 2
    r = cli("train", "--channels", "8,8v", "--epochs", "1", "--log-interval", "ten", "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "log_interval" in r.stderr and "30s" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists()


def test_progress_rules(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    patient = Progress("auto", 100, "x")          # not a terminal under pytest: lines, patient
    assert patient.mode == "lines"
    assert not patient.wants(24)                  # a quarter done, but not 30 s
    clock[0] = 31.0
    assert patient.wants(24)
    patient.update(24, "t")
    clock[0] = 70.0
    assert not patient.wants(40) and patient.wants(49)    # 30 s passed; a quarter more only at step 49
    asked = Progress("lines", 100, "x")           # --progress lines: every quarter, as before
    assert asked.wants(24) and not asked.wants(25)
    seconds = Progress("lines", 100, "x", ("seconds", 5.0))
    clock[0] = 74.0
    assert not seconds.wants(1)
    clock[0] = 75.5
    assert seconds.wants(2)


def test_validation_and_test_show_progress(tmp_path, capsys):
    fit(TrainConfig(**TINY, epochs=1, progress="lines", log_interval=1, out=str(tmp_path / "run")))
    out = capsys.readouterr().out
    assert "validate 1/1 step 1/" in out and "images" in out        # 360 validation images, 2 batches of 256
    assert "test step 2/2  360/360 images" in out


def test_val_every_skips_epochs_and_always_validates_the_last(tmp_path, capsys):
    summary = fit(TrainConfig(**TINY, epochs=5, val_every=2, progress="none", out=str(tmp_path / "run")))
    records = RunDir(tmp_path / "run").read_metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert [("val" in r) for r in records] == [False, True, False, True, True]
    assert summary["best_epoch"] in (2, 4, 5)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == summary["best_epoch"]
    out = capsys.readouterr().out
    assert "not validated" in out


def test_val_subset_is_fixed_and_the_test_is_whole(tmp_path):
    from asge.data import load_data
    val = load_data("digits", None, subset=None, seed=0, device="cpu").val
    a, b = split_subset(val, 50), split_subset(val, 50)
    assert len(a) == 50 and same_tensors(a.images, b.images) and same_tensors(a.labels, b.labels)
    assert split_subset(val, 10 ** 6) is val and split_subset(val, None) is val
    from asge.data.folders import FolderSplit
    folder = FolderSplit([(f"img{i}.png", i % 3) for i in range(20)], 16, num_workers=0)
    sub = split_subset(folder, 5)
    assert isinstance(sub, FolderSplit) and len(sub) == 5 and sub.image_size == 16
    assert sub.samples == split_subset(folder, 5).samples and set(sub.samples) <= set(folder.samples)
    summary = fit(TrainConfig(**TINY, epochs=1, val_subset=7, progress="none", out=str(tmp_path / "run")))
    (record,) = RunDir(tmp_path / "run").read_metrics()
    assert all(round(a * 7 / 100, 6).is_integer() for a in record["val"]["block_acc"])  # 7 images
    assert sum(map(sum, summary["test_confusion"]["fusion"])) == 360                     # the whole test split


def test_bad_val_flags_are_refused(tmp_path):
    for flag, value in (("--val-every", "0"), ("--val-subset", "0")):
        r = cli("train", "--channels", "8,8v", "--epochs", "1", flag, value, "--out", str(tmp_path / "r"))
        assert r.returncode == 2 and flag[2:].replace("-", "_") in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "r").exists()


def test_stop_signal_during_validation_checkpoints_the_trained_epoch(tmp_path, single_thread, monkeypatch):
    """SIGTERM while validating epoch 2: the run stops at once with the epoch's training saved; --resume
    validates it and ends bitwise where an uninterrupted run ends."""
    cfg = dict(TINY, epochs=3, progress="none", dropout=0.2)
    fit(TrainConfig(**cfg, out=str(tmp_path / "full")), log=quiet)
    inner = loop.split_subset
    calls = [0]

    def stopping_split(split, n, seed=42):
        split = inner(split, n, seed)
        batches = split.batches

        def signalling(*a, **k):
            calls[0] += 1
            for i, batch in enumerate(batches(*a, **k)):
                if calls[0] == 2 and i == 0:       # the second validation (epoch 2), after its first batch
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch
        split.batches = signalling
        return split
    monkeypatch.setattr(loop, "split_subset", stopping_split)
    with pytest.raises(Preempted) as stopped:
        fit(TrainConfig(**cfg, out=str(tmp_path / "cut")), log=quiet)
    assert "while validating epoch 2/3" in str(stopped.value) and "--resume" in str(stopped.value)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and (ckpt["partial"]["epoch"], ckpt["partial"]["step"]) == (2, 9)
    monkeypatch.setattr(loop, "split_subset", inner)
    fit(TrainConfig(**cfg, out=str(tmp_path / "cut")), resume=True, log=quiet)
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("full", "cut"))
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["method"], b["method"])
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rs]  # noqa
    assert strip(RunDir(tmp_path / "full").read_metrics()) == strip(RunDir(tmp_path / "cut").read_metrics())


def test_eval_shows_progress_on_stderr(tmp_path):
    run = tmp_path / "run"
    fit(TrainConfig(**TINY, epochs=1, progress="none", out=str(run)), log=quiet)
    r = cli("eval", str(run), "--per-class", "--progress", "lines", "--batch-size", "64")
    assert r.returncode == 0, r.stderr
    assert "fusion:" in r.stdout and " step " not in r.stdout             # results alone on stdout
    summary = json.loads((run / "summary.json").read_text())
    assert f"fusion: {summary['test_accuracy']['fusion']:.2f}%" in r.stdout
    assert "test step 6/6  360/360 images" in r.stderr                     # quarter-epoch lines, as asked


def test_stop_signal_during_the_final_test_leaves_a_run_that_resume_tests(tmp_path, single_thread, monkeypatch):
    cfg = dict(TINY, epochs=1, progress="none")
    run = tmp_path / "run"
    real = loop.evaluate_split

    def evaluate(net, split, *a, **k):
        if k.get("confusion"):                       # the final test: a signal after its first batch
            batches = split.batches

            def signalling(*ba, **bk):
                for i, batch in enumerate(batches(*ba, **bk)):
                    if i == 0:
                        os.kill(os.getpid(), signal.SIGTERM)
                    yield batch
            split.batches = signalling
        try:
            return real(net, split, *a, **k)
        finally:
            split.__dict__.pop("batches", None)
    monkeypatch.setattr(loop, "evaluate_split", evaluate)
    with pytest.raises(Preempted, match="while testing the best-validation model"):
        fit(TrainConfig(**cfg, out=str(run)), log=quiet)
    assert not (run / "summary.json").exists()
    monkeypatch.setattr(loop, "evaluate_split", real)
    summary = fit(TrainConfig(**cfg, out=str(run)), resume=True, log=quiet)
    assert (run / "summary.json").is_file() and summary["epochs"] == 1
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [1]
