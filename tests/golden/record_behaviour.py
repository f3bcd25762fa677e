"""Record (or re-compute) what five small digits runs produce, for ``tests/test_no_behaviour_change.py``.

Both the golden file and the test come from :func:`record`, so they hash and filter the same way. Each run is
CPU, one torch thread, the defaults' seed (0), 2 epochs on scikit-learn's digits (a few seconds each):

* ``default``   ``asge.train.fit(TrainConfig(dataset="digits", epochs=2, ...))``, the Python entry point;
* ``bp``        ``asge train ... --method bp`` (``asge.cli.main``, in this process);
* ``plus``      ``asge train ... --recipe plus``;
* ``pipeline2`` ``asge train ... --pipeline 2`` (the blocks in 2 processes);
* ``resumed``   ``asge train ... --checkpoint-every 3`` stopped by SIGINT after step 4 of epoch 2 (sent when the
  progress line of that step is printed: ``--progress lines --log-interval 4``), then ``asge train --out
  ... --resume``: its final weights must equal the uninterrupted ``default`` run's.

Recorded per run: the sha256 of every tensor of ``checkpoints/best.pt``'s and ``checkpoints/last.pt``'s
``"model"`` state dict (read with ``torch.load(..., weights_only=True)``), by name; ``summary.json``; and
the records of ``metrics.jsonl``; the last two without timing, provenance and path keys (:data:`DROPPED`).

Regenerate the golden file from the commit it is named after (here add640f), so that it holds that code's
numbers even if the working tree has changed since::

    git worktree add /tmp/asge-add640f add640f
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/asge-add640f/src python tests/golden/record_behaviour.py \\
        --expect-src /tmp/asge-add640f/src tests/golden/behaviour-add640f.json
    git worktree remove /tmp/asge-add640f
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

#: Keys dropped at any depth of summary.json and metrics.jsonl: timing, provenance, paths, and
#: best_compute_fraction, which since add640f counts every convolution and matrix product the early exit runs
#: against what Fusion runs (it counted the blocks' convs alone): a change of what is reported, not of training.
DROPPED = frozenset({"train_seconds", "images_per_second", "seconds", "provenance", "device_name", "torch",
                     "out", "root", "path", "data_root", "cwd", "dir", "best_compute_fraction"})

COMMON = ["--dataset", "digits", "--epochs", "2", "--device", "cpu"]

#: The mid-epoch stop of the ``resumed`` run: the progress line printed after this step of this epoch.
STOP_LINE = re.compile(r"epoch 2/2 step 4/")


def tensor_hash(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (any dtype, any layout)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_hashes(path: Path) -> dict[str, str]:
    """{name: sha256} of every tensor of the checkpoint's ``"model"`` state dict."""
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return {name: tensor_hash(t) for name, t in sorted(state.items())}


def timeless(value: Any) -> Any:
    """``value`` (parsed JSON) without the :data:`DROPPED` keys, at any depth."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in DROPPED}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def read_run(out: Path) -> dict:
    """What is compared of one finished run directory."""
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"summary": timeless(json.loads((out / "summary.json").read_text())),
            "metrics": timeless(metrics),
            "best.pt": checkpoint_hashes(out / "checkpoints" / "best.pt"),
            "last.pt": checkpoint_hashes(out / "checkpoints" / "last.pt")}


class _StopAt(io.StringIO):
    """stdout that sends this process SIGINT when ``pattern`` is printed (once): the run's stop handler
    records it, and the loop stops after that step with a checkpoint of it."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern, self.sent = pattern, False

    def write(self, text: str) -> int:
        n = super().write(text)
        if not self.sent and self.pattern.search(text):
            handler = signal.getsignal(signal.SIGINT)
            if handler in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None):
                raise AssertionError("no stop handler is installed while training: SIGINT would not stop "
                                     "the run with a checkpoint")
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return n


def cli(argv: list[str], expect_rc: int = 0, stdout: io.StringIO | None = None) -> str:
    """``asge.cli.main(argv)`` in this process, its output captured; the exit code must be ``expect_rc``."""
    from asge.cli import main
    out, err = stdout or io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    if rc != expect_rc:
        raise AssertionError(f"asge {' '.join(argv)}: exit code {rc}, expected {expect_rc}\n"
                             f"stdout:\n{out.getvalue()}\nstderr:\n{err.getvalue()}")
    return err.getvalue()


def run_default(out: Path) -> None:
    from asge.config import TrainConfig
    from asge.train import fit
    fit(TrainConfig(dataset="digits", epochs=2, out=str(out), progress="none", device="cpu"), log=lambda *_: None)


def run_resumed(out: Path) -> None:
    stopper = _StopAt(STOP_LINE)
    err = cli(["train", *COMMON, "--out", str(out), "--checkpoint-every", "3", "--progress", "lines",
               "--log-interval", "4"], expect_rc=128 + signal.SIGINT, stdout=stopper)
    if not stopper.sent:
        raise AssertionError(f"the run ended before its progress line {STOP_LINE.pattern!r}:\n"
                             f"{stopper.getvalue()}")
    if "after step 4/" not in err or "epoch 2/2" not in err:
        raise AssertionError(f"the run did not stop after step 4 of epoch 2:\n{err}")
    cli(["train", "--out", str(out), "--resume", "--progress", "none"])


#: name -> a function that trains a run into the (new) directory it is given.
RUNS: dict[str, Callable[[Path], None]] = {
    "default": run_default,
    "bp": lambda out: cli(["train", *COMMON, "--method", "bp", "--out", str(out), "--progress", "none"]),
    "plus": lambda out: cli(["train", *COMMON, "--recipe", "plus", "--out", str(out), "--progress", "none"]),
    "pipeline2": lambda out: cli(["train", *COMMON, "--pipeline", "2", "--out", str(out), "--progress", "none"]),
    "resumed": run_resumed,
}


def environment() -> dict:
    """Where the numbers were computed (informational: bitwise results can differ across torch versions or
    CPU kernels)."""
    import asge
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "asge_src": str(Path(asge.__file__).resolve().parent.parent)}


def record(workdir: Path, names=None) -> dict:
    """Train every run of :data:`RUNS` (or ``names``) under ``workdir``, one torch thread; return
    {name: read_run(...)}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {}
        for name in names or RUNS:
            out = Path(workdir) / name
            RUNS[name](out)
            results[name] = read_run(out)
        return results
    finally:
        torch.set_num_threads(threads)


def differences(golden: Any, current: Any, where: str = "") -> list[str]:
    """Where ``current`` departs from ``golden``: every key of a golden mapping must be in ``current`` with
    an equal value (keys only ``current`` has are allowed: new fields); lists equal in length and entries;
    anything else of the same type and equal (floats exactly)."""
    if isinstance(golden, dict):
        if not isinstance(current, dict):
            return [f"{where}: expected a mapping, got {current!r}"]
        diffs = []
        for k, v in golden.items():
            if k in DROPPED:
                continue
            if k not in current:
                diffs.append(f"{where}/{k}: missing")
            else:
                diffs += differences(v, current[k], f"{where}/{k}")
        return diffs
    if isinstance(golden, list):
        if not isinstance(current, list) or len(current) != len(golden):
            return [f"{where}: expected {golden!r}, got {current!r}"]
        return [d for i, (g, c) in enumerate(zip(golden, current)) for d in differences(g, c, f"{where}[{i}]")]
    same = type(golden) is type(current) and golden == current     # 1 is not 1.0, nor True
    return [] if same else [f"{where}: expected {golden!r}, got {current!r}"]


def git_commit(src: Path) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=7", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="the golden JSON file to write")
    p.add_argument("--expect-src", help="refuse unless asge is imported from this src folder (PYTHONPATH)")
    args = p.parse_args(argv)
    import asge
    src = Path(asge.__file__).resolve().parent.parent
    if args.expect_src and src != Path(args.expect_src).resolve():
        p.error(f"asge is imported from {src}, not {args.expect_src}: set PYTHONPATH={args.expect_src}")
    with tempfile.TemporaryDirectory(prefix="asge-behaviour-") as tmp:
        runs = record(Path(tmp))
    default, resumed = runs["default"], runs["resumed"]
    if resumed["last.pt"] != default["last.pt"] or resumed["best.pt"] != default["best.pt"]:
        raise SystemExit("the resumed run's weights differ from the uninterrupted run's: not a golden run")
    golden = {"recorded_from": {"commit": git_commit(src), **environment()}, "runs": runs}
    Path(args.output).write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.output}: {', '.join(runs)} from asge at {src} ({golden['recorded_from']['commit']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
