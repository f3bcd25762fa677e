"""Preemption: SIGTERM / SIGINT stop a run after its current step with an exact checkpoint of that point;
--resume then ends bitwise where the uninterrupted run ends (CPU, one thread)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from helpers import same_tensors

from asge.config import TrainConfig
from asge.errors import Preempted
from asge.runs.directory import RunDir, load_checkpoint
from asge.train import METHODS, fit

TINY = dict(dataset="digits", channels=[8, 16, 16], downsample=[False, True, False], epochs=3, subset=400,
            batch_size=16, dropout=0.2, progress="none", seed=1)     # 25 steps per epoch


def quiet(*_):
    pass


def assert_same_run(a, b) -> None:
    """Two finished run directories hold bitwise the same weights, optimizer states and metrics."""
    ca, cb = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (a, b))
    assert same_tensors(ca["model"], cb["model"])
    assert same_tensors(ca["method"], cb["method"])
    timeless = [[{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")}
                 for m in RunDir(d).read_metrics()] for d in (a, b)]
    assert timeless[0] == timeless[1]


def signal_at(method_name: str, call: int, signum: int):
    """A method factory whose trainer sends ``signum`` to this process during its ``call``-th step."""
    def factory(net, cfg, total_steps, device):
        method = METHODS[method_name](net, cfg, total_steps, device)
        inner, count = method.train_step, [0]

        def train_step(x, y, step):
            inner(x, y, step)
            count[0] += 1
            if count[0] == call:
                os.kill(os.getpid(), signum)
        method.train_step = train_step
        return method
    return factory


@pytest.mark.parametrize("method,signum", [("asge", signal.SIGTERM), ("bp", signal.SIGINT)])
def test_signal_mid_epoch_checkpoints_that_step_and_resume_is_exact(tmp_path, single_thread, method, signum):
    fit(TrainConfig(**TINY, method=method, out=str(tmp_path / "full")), log=quiet)
    cfg = TrainConfig(**TINY, method=method, out=str(tmp_path / "cut"))
    with pytest.raises(Preempted) as stopped:
        fit(cfg, log=quiet, method_factory=signal_at(method, 25 + 11, signum))    # step 11 of epoch 2
    assert stopped.value.exit_code == 128 + signum
    assert "after step 11/25 of epoch 2/3" in str(stopped.value) and "--resume" in str(stopped.value)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["partial"]["epoch"] == 2 and ckpt["partial"]["step"] == 11
    assert signal.getsignal(signum) is not None and signal.getsignal(signum) != signal.SIG_IGN  # restored
    fit(cfg, resume=True, log=quiet)
    assert_same_run(tmp_path / "full", tmp_path / "cut")


class Crash(Exception):
    pass


def test_checkpoint_every_loses_at_most_n_steps(tmp_path, single_thread):
    """A crash (no signal, no chance to save) between checkpoints resumes from the last multiple of N."""
    fit(TrainConfig(**TINY, out=str(tmp_path / "full")), log=quiet)

    def crash_at(net, cfg, total_steps, device):
        method = METHODS["asge"](net, cfg, total_steps, device)
        inner = method.train_step

        def train_step(x, y, step):
            if method.epoch_seed is not None and step == 17 and len(RunDir(cfg.out).read_metrics()) == 1:
                raise Crash                    # epoch 2, step 17: checkpoints were written after steps 7 and 14
            inner(x, y, step)
        method.train_step = train_step
        return method

    cfg = TrainConfig(**TINY, out=str(tmp_path / "cut"), checkpoint_every=7)
    with pytest.raises(Crash):
        fit(cfg, log=quiet, method_factory=crash_at)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["partial"]["step"] == 14
    fit(TrainConfig(**TINY, out=str(tmp_path / "cut"), checkpoint_every=0), resume=True, log=quiet)
    assert_same_run(tmp_path / "full", tmp_path / "cut")


def test_pipelined_run_stops_every_stage_at_the_signalled_step(tmp_path, single_thread, monkeypatch):
    """Stage 0 is signalled; the other stages finish the steps already sent, the checkpoint gathers them,
    and the resumed pipelined run ends where the sequential one does."""
    from asge.train.pipeline import PipelineLearning, fit_pipeline
    base = dict(TINY, channels=[8, 16, 16, 32], downsample=[False, True, False, False], epochs=2)
    fit(TrainConfig(**base, out=str(tmp_path / "seq")), log=quiet)
    inner, count = PipelineLearning.train_step, [0]

    def train_step(self, x, y, step):
        inner(self, x, y, step)
        count[0] += 1
        if count[0] == 30:                     # step 5 of epoch 2
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(PipelineLearning, "train_step", train_step)
    cfg = TrainConfig(**base, out=str(tmp_path / "pipe"), pipeline=2)
    with pytest.raises(Preempted, match="after step 5/25 of epoch 2/2"):
        fit_pipeline(cfg, log=quiet, threads=1)
    monkeypatch.setattr(PipelineLearning, "train_step", inner)
    fit_pipeline(cfg, resume=True, log=quiet, threads=1)
    a = load_checkpoint(tmp_path / "seq" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "pipe" / "checkpoints" / "last.pt")
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["method"], b["method"])


def run_cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "asge", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_sigterm_to_a_real_training_process(tmp_path):
    """The command as a scheduler sees it: SIGTERM in the middle of an epoch, exit 143 with how to resume,
    then --resume ends bitwise where an uninterrupted process ends."""
    args = ["--channels", "8,16v,16", "--subset", "400", "--batch-size", "8", "--epochs", "2", "--seed", "1",
            "--progress", "lines"]                                          # 50 steps per epoch
    full = run_cli([*args, "--out", str(tmp_path / "full")])
    cut = run_cli([*args, "--out", str(tmp_path / "cut")])
    for line in cut.stdout:
        if "epoch 1/2 step" in line:           # the first progress line: step 12 of 50 is done
            cut.send_signal(signal.SIGTERM)
            break
    out, err = cut.communicate(timeout=300)
    assert cut.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    stopped = [line for line in err.splitlines() if line.startswith("asge: stopped by SIGTERM")]
    assert len(stopped) == 1 and f"asge train --out {tmp_path / 'cut'} --resume" in stopped[0]
    partial = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["partial"]
    assert partial["epoch"] == 1 and 12 <= partial["step"] < 50
    resumed = run_cli(["--out", str(tmp_path / "cut"), "--resume", "--progress", "none"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert full.wait(timeout=300) == 0, full.stderr.read()
    for p in (full, resumed, cut):
        for stream in (p.stdout, p.stderr):
            stream.close()
    assert_same_run(tmp_path / "full", tmp_path / "cut")
