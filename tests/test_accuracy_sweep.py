"""benchmarks/accuracy_sweep.py: its table's numbers, its merge of sweeps, and one real tiny run."""
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("accuracy_sweep", ROOT / "benchmarks" / "accuracy_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def summary(fusion, blocks, method="asge"):
    acc = {"fusion": fusion, "last": fusion - 1, "best": max(blocks)} if method == "asge" else {"last": fusion}
    return {"method": method, "headline": "fusion" if method == "asge" else "last", "test_accuracy": acc,
            "block_test_accuracy": blocks if method == "asge" else [], "best_block": 2 if method == "asge" else None,
            "train_seconds": 10.0, "parameters": {"blocks": 100, "fusion": 10, "last": 5}}


def test_table_mean_sd_and_merge(sweep, tmp_path):
    a = {"budget/plus-s0": summary(80.0, [70.0, 81.0]), "budget/plus-s1": summary(84.0, [72.0, 83.0]),
         "budget/bp-s0": summary(88.0, [], "bp"), "budget/paper-s0": {"error": "boom"}}
    b = {"budget/paper-s0": summary(75.0, [60.0, 76.0]), "budget/plus-s1": {"error": "later failure"}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    merged = sweep.load_results([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert merged[("budget", "plus-s1")]["test_accuracy"]["fusion"] == 84.0   # a failure does not hide a result
    assert merged[("budget", "paper-s0")]["test_accuracy"]["fusion"] == 75.0  # a later result replaces a failure
    md = sweep.table(merged)
    row = next(line for line in md.splitlines() if "| plus |" in line)
    assert f"{statistics.mean([80, 84]):.2f} ± {statistics.stdev([80, 84]):.2f}" in row
    assert "| 2 |" in row and "71.0 82.0" in row and "| 115 |" in row
    assert sweep.main(["--report", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "sweep.md").read_text() == md
    assert (tmp_path / "r" / "blocks-budget.png").read_bytes()[:4] == b"\x89PNG"


def test_one_real_tiny_run_and_resume_from_its_summary(sweep, tmp_path, capsys):
    args = ["--tiny", "--only", "paper", "--seeds", "0", "--jobs", "1", "--out", str(tmp_path)]
    assert sweep.main(args) == 0
    result = json.loads((tmp_path / "sweep.json").read_text())["tiny/paper-s0"]
    kept = tmp_path / "runs" / "tiny" / "paper-s0"
    assert result == json.loads((kept / "summary.json").read_text())
    assert (kept / "metrics.jsonl").is_file() and not (kept / "checkpoints").exists()
    assert sweep.main(args) == 0                       # read back, not trained again
    assert json.loads((tmp_path / "sweep.json").read_text())["tiny/paper-s0"] == result


def test_colour_suite_runs_on_a_held_back_test_split_and_needs_its_data(sweep, tmp_path, capsys):
    runs = sweep.suite_runs("colour", [0, 1], tiny=False)
    names = {name for _, name, _ in runs}
    assert {"paper-s0", "plus-s1", "colour-s0", "colour-s1", "bp-s1", "bp+augment-none-s0"} <= names
    for _, name, flags in runs:
        assert flags[:4] == ["--dataset", "imagefolder", "--test-split", "5000"] and flags[-2:] == ["--seed", name[-1]]
    assert dict(zip(*[iter(next(f for _, n, f in runs if n == "colour-s0"))] * 2))["--recipe"] == "colour"
    # without --colour-data nothing is started, and the sweep says why
    assert sweep.main(["--suite", "colour", "--seeds", "0", "--only", "paper", "--out", str(tmp_path)]) == 1
    assert "the colour suite needs --colour-data DIR" in json.loads((tmp_path / "sweep.json").read_text())["colour/paper-s0"]["error"]
