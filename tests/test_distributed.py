"""Data parallelism (torchrun): ranks shard every batch, all-reduce each block's gradient, stay identical;
only rank 0 writes the run directory."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asge.config import TrainConfig
from asge.runs.directory import load_checkpoint
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


def torchrun(*args: str) -> subprocess.Popen:
    """``torchrun --nproc_per_node=2 -m asge train ARGS``, exactly as the README writes it. Only the rendezvous
    port is chosen, through torchrun's own PET_MASTER_PORT, so that test runs side by side do not collide."""
    exe = shutil.which("torchrun")
    assert exe, "torchrun (installed with torch) is not on PATH"
    env = dict(os.environ, PET_MASTER_PORT=str(free_port()), PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([exe, "--nproc_per_node=2", "-m", "asge", "train", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen) -> tuple[str, str]:
    out, err = p.communicate(timeout=600)
    return out, err


def wait_for_step_line(p: subprocess.Popen) -> list[str]:
    """Read rank 0's output up to its first progress line (training is under way)."""
    seen = []
    for line in p.stdout:
        seen.append(line)
        if " step " in line:
            return seen
    raise AssertionError("the run ended before its first progress line: " + "".join(seen))


def rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the worker of ``rank`` that torchrun started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if ppid == launcher.pid and f"RANK={rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun {launcher.pid}")


README_ARGS = ("--epochs", "2", "--batch-size", "16")        # digits: 68 steps per epoch; every other option default


@pytest.mark.slow
def test_readme_torchrun_command_with_defaults_and_preemption(tmp_path):
    """The README's data-parallel command with default options (progress auto, device auto) for 2 processes;
    then the same command stopped by SIGTERM (what a scheduler sends torchrun) in the middle of an epoch and
    resumed: every rank stopped at the same step, and the result is bitwise the uninterrupted run's."""
    # --log-interval 17: a progress line every quarter epoch (the default, output to a pipe, waits 30 s too)
    full = torchrun(*README_ARGS, "--log-interval", "17", "--out", str(tmp_path / "full"))
    cut = torchrun(*README_ARGS, "--log-interval", "17", "--out", str(tmp_path / "cut"))
    wait_for_step_line(cut)
    cut.send_signal(signal.SIGTERM)
    _, err = finish(cut)
    stopped = [line for line in err.splitlines() if line.startswith("asge:") and "stopped by" in line]
    assert len(stopped) == 1 and "stopped by SIGTERM after step" in stopped[0], err[-3000:]
    announced = [line for line in err.splitlines() if "SIGTERM received: stopping after the current step" in line]
    assert len(announced) == 1, err[-3000:]        # the main rank, once the ranks agree (stop_signal)
    assert "--resume" in stopped[0]
    partial = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["partial"]
    assert 0 < partial["step"] < 68

    out, err = finish(full)
    assert full.returncode == 0, out[-3000:] + err[-3000:]
    assert ": error:" not in err and out.count("  run directory  ") == 1   # rank 0 alone reports
    assert "step 17/68" in out                                                # progress: lines
    metrics = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]     # written once, not once per rank
    # Every epoch counts the whole training split (both ranks' shards).
    assert metrics[-1]["images_per_second"] * metrics[-1]["seconds"] == pytest.approx(1077, rel=1e-6)

    resumed = torchrun("--out", str(tmp_path / "cut"), "--resume")
    out, err = finish(resumed)
    assert resumed.returncode == 0, out[-3000:] + err[-3000:]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["test_accuracy"] == \
        json.loads((tmp_path / "full" / "summary.json").read_text())["test_accuracy"]


@pytest.mark.slow
def test_a_dead_rank_stops_the_others_with_one_line_naming_it(tmp_path):
    run = torchrun("--epochs", "50", "--batch-size", "16", "--log-interval", "17", "--out", str(tmp_path / "run"))
    wait_for_step_line(run)
    victim = rank_pid(run, 1)
    os.kill(victim, signal.SIGKILL)
    _, err = finish(run)                                # bounded: the subprocess timeout, far below 60 minutes
    assert run.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith(("asge:", "asge train:"))]
    assert len(ours) == 1, err[-3000:]
    assert f"rank 1 (process {victim} on " in ours[0] and "died" in ours[0] and "--resume" in ours[0]
