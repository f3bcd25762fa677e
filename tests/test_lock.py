"""One run per directory: a second process on a locked run directory stops at once, naming the holder."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from asge.cli import main
from asge.errors import RunLockedError
from asge.runs.lock import LOCK_NAME, RunLock

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))


def holder_of(directory) -> dict:
    """The lock file's record once a process holds it (waits for the holder to start; no timing asserted)."""
    path = directory / LOCK_NAME
    for _ in range(3000):
        text = path.read_text() if path.is_file() else ""
        if text.strip():
            return json.loads(text)
        time.sleep(0.1)
    raise AssertionError(f"nobody took {path}")


def test_a_second_train_on_a_directory_in_use_exits_2_naming_the_holder(tmp_path, capsys):
    """Two real processes: a training subprocess holds r1; this process tries train, train --resume and
    ablate on it."""
    out = tmp_path / "r1"
    first = subprocess.Popen([sys.executable, "-m", "asge", "train", "--out", str(out), "--epochs", "500",
                              "--channels", "8,16v,16", "--progress", "none"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        holder = holder_of(out)
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        for args in (["train", "--epochs", "1"], ["train", "--resume"], ["ablate", "--epochs", "1"]):
            assert main([*args, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1
            assert f"{out} is in use by process {first.pid} on {socket.gethostname()}" in err
        assert first.poll() is None, "the first run goes on undisturbed"
    finally:
        first.kill()
        first.wait()
        first.stderr.close()


def test_a_lock_left_by_a_killed_process_is_taken_over_saying_so(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from asge.runs.lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); time.sleep(600)", str(tmp_path)], env=ENV)
    holder_of(tmp_path)
    with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    said = []
    with RunLock(tmp_path, log=said.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and f"process {holder.pid} on {socket.gethostname()}" in said[0]
    assert "no longer exists" in said[0]
    assert (tmp_path / LOCK_NAME).read_text() == "", "released cleanly: nothing left to take over"
    said.clear()
    with RunLock(tmp_path, log=said.append):
        pass
    assert said == []


def test_bad_input_leaves_no_run_directory(tmp_path, capsys):
    out = tmp_path / "runs" / "r"
    assert main(["train", "--out", str(out), "--dataset", "mnist", "--data-root", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()
