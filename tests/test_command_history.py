"""A resumed or extended run keeps the command that started it and every command that continued it, in order
(summary.json's provenance ``commands``; checkpoints/last.pt carries them between processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from asge.runs.directory import load_checkpoint, save_checkpoint

SMALL = ["--channels", "8,8v", "--subset", "128", "--batch-size", "64", "--progress", "none"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "asge", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def provenance(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["provenance"]


def check_time(entry: dict, before: float, after: float) -> None:
    at = time.mktime(time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 1 <= at <= after + 1, (entry["time"], before, after)


def test_resumed_and_extended_runs_record_every_command_in_order(tmp_path):
    run = tmp_path / "run"
    commands = [["train", *SMALL, "--epochs", "1", "--out", str(run)],
                ["train", "--out", str(run), "--resume", "--epochs", "2"],
                ["train", "--out", str(run), "--resume", "--epochs", "3"]]
    for i, argv in enumerate(commands):
        before = time.time()
        r = cli(*argv)
        assert r.returncode == 0, r.stderr
        p = provenance(run)
        assert p["command"][1:] == commands[0]                 # the command that started the run
        history = p["commands"]
        assert [h["command"][1:] for h in history] == commands[:i + 1]
        assert [h["at_epoch"] for h in history] == list(range(i + 1))       # each began after the epochs done
        check_time(history[-1], before, time.time())
        assert load_checkpoint(run / "checkpoints" / "last.pt")["commands"] == history
    # a finished run that --resume finds finished is not continued: nothing is added
    again = cli("train", "--out", str(run), "--resume")
    assert again.returncode == 0 and "finished" in again.stdout
    assert len(provenance(run)["commands"]) == 3


def test_a_checkpoint_from_before_command_histories_says_the_first_command_is_unknown(tmp_path):
    run = tmp_path / "run"
    assert cli("train", *SMALL, "--epochs", "1", "--out", str(run)).returncode == 0
    last = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["commands"], ckpt["format"]
    save_checkpoint(last, ckpt)
    r = cli("train", "--out", str(run), "--resume", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    p = provenance(run)
    assert p["command"] is None
    assert p["commands"][0] == {"command": None, "at_epoch": 0, "time": None}
    assert p["commands"][1]["command"][1:] == ["train", "--out", str(run), "--resume", "--epochs", "2"]
