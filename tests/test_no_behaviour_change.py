"""No behaviour change since add640f: five small runs give bit for bit what that commit's code gave.

Guards restructurings (modules moved, ``fit`` split into functions) that are meant to change nothing. The
runs (CPU, one torch thread, default seed, 2 epochs on digits; about 15 s together on 2 CPU cores) are those of
``tests/golden/record_behaviour.py``: the default ``asge.train.fit`` run, ``--method bp``, ``--recipe
plus``, ``--pipeline 2``, and a run stopped by SIGINT in the middle of epoch 2 then continued with
``--resume``. For each, compared with ``tests/golden/behaviour-add640f.json``:

* the sha256 of every tensor of ``checkpoints/best.pt``'s and ``last.pt``'s ``"model"`` state dict, by name
  (the same names, the same hashes);
* ``summary.json`` and the records of ``metrics.jsonl`` without timing, provenance and path keys: every
  golden key present with the same value (floats exactly); keys added since are allowed.

The resumed run must also end with exactly the weights of the uninterrupted default run.

Only entry points that survive a restructure are used: ``asge.cli.main``, ``asge.train.fit``,
``asge.config.TrainConfig`` and ``torch.load(..., weights_only=True)`` of run-directory files.

A deliberate behaviour change (or a new torch version, whose kernels may round differently) needs a new
golden file, recorded from the code it is meant to describe; from a clean checkout of commit C::

    git worktree add /tmp/asge-C C
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/asge-C/src python tests/golden/record_behaviour.py \\
        --expect-src /tmp/asge-C/src tests/golden/behaviour-C.json
    git worktree remove /tmp/asge-C

then point :data:`GOLDEN` at it.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "behaviour-add640f.json"


def _recorder():
    name = "record_behaviour"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "golden" / "record_behaviour.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


recorder = _recorder()
golden = json.loads(GOLDEN.read_text())
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    """The five runs with the code under test."""
    return recorder.record(tmp_path_factory.mktemp("behaviour"))


def where_recorded() -> str:
    g = golden["recorded_from"]
    note = f" (golden recorded from {g['commit']} with torch {g['torch']} on {g['machine']}"
    if g["torch"] != torch.__version__:
        note += f"; this is torch {torch.__version__}: regenerate the golden file, see this module's docstring"
    return note + ")"


def test_golden_file_covers_every_run():
    assert sorted(golden["runs"]) == sorted(recorder.RUNS)


@pytest.mark.parametrize("run", sorted(recorder.RUNS))
@pytest.mark.parametrize("part", ["best.pt", "last.pt"])
def test_weights_are_bitwise_the_golden_ones(current, run, part):
    want, got = golden["runs"][run][part], current[run][part]
    assert sorted(got) == sorted(want), f"{run} {part}: other tensor names{where_recorded()}: " \
        f"missing {sorted(set(want) - set(got))}, new {sorted(set(got) - set(want))}"
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"{run} {part}: {len(changed)} of {len(want)} tensors differ{where_recorded()}: {changed}"


@pytest.mark.parametrize("run", sorted(recorder.RUNS))
@pytest.mark.parametrize("part", ["summary", "metrics"])
def test_summary_and_metrics_keep_the_golden_values(current, run, part):
    diffs = recorder.differences(golden["runs"][run][part], current[run][part], f"{run} {part}")
    assert not diffs, f"{len(diffs)} differences{where_recorded()}:\n" + "\n".join(diffs[:40])


def test_resumed_run_ends_where_the_uninterrupted_run_ends(current):
    for part in ("best.pt", "last.pt"):
        assert current["resumed"][part] == current["default"][part], part
    assert not recorder.differences(current["default"]["summary"], current["resumed"]["summary"])
    assert not recorder.differences(current["default"]["metrics"], current["resumed"]["metrics"])
