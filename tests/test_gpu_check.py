"""benchmarks/gpu_check.sh: end to end with --tiny on this machine, and its section bookkeeping (each
section's result written as soon as it ends; a failing or timed-out section recorded, not fatal)."""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sections_are_written_as_they_end_and_failures_are_recorded(tmp_path):
    gc = load_gpu_check()
    c = gc.Check(tmp_path, budget=60.0, args=argparse.Namespace(tiny=True, data=None))
    read = lambda: json.loads((tmp_path / "gpu_check.json").read_text())  # noqa: E731
    assert read()["sections"] == {}
    r = c.run("fails", [sys.executable, "-c", "import sys; print('partial'); sys.exit(3)"], 20)
    assert r["status"] == "failed" and r["returncode"] == 3 and read()["sections"]["fails"]["status"] == "failed"
    r = c.run("hangs", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"], 2)
    assert r["status"] == "timeout" and "started" in r["output_tail"]
    r = c.run("bad numbers", [sys.executable, "-c", "print('x')"], 20, parse=lambda s: {"v": 1 / 0})
    assert r["status"] == "failed" and "ZeroDivisionError" in r["parse_error"]
    r = c.run("works", [sys.executable, "-c", "print(41 + 1)"], 20, parse=lambda s: {"answer": int(s)})
    assert r["status"] == "ok" and r["answer"] == 42
    c.budget = c.elapsed() + 1.0                          # nothing left: the next section is skipped
    assert c.run("late", [sys.executable, "-c", "pass"], 20)["status"] == "skipped"
    assert list(read()["sections"]) == ["fails", "hangs", "bad numbers", "works", "late"]


@pytest.mark.slow
def test_gpu_check_tiny_runs_end_to_end(tmp_path):
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["environment", "tests", "overhead", "bench_fp32", "bench_fp32_graphs", "bench_bf16",
                              "bench_bf16_graphs", "train_asge", "train_bp", "bench_equal_memory"]
    graphs = {"bench_fp32_graphs", "bench_bf16_graphs"}
    cuda = sections["environment"]["cuda_available"]
    assert {k: v["status"] for k, v in sections.items()} == \
        {k: "skipped" if k in graphs and not cuda else "ok" for k in sections}, \
        {k: (v["status"], v.get("error") or v.get("reason")) for k, v in sections.items()}
    assert cuda or all("no CUDA" in sections[k]["reason"] for k in graphs)
    assert sections["overhead"]["median_ms"]["asge"] > 0 and sections["overhead"]["ratio"] > 0
    for name in ("bench_fp32", "bench_bf16"):
        (row,) = sections[name]["results"]
        assert row["images_per_second"]["asge"] > 0 and row["images_per_second"]["bp"] > 0
    assert sections["bench_bf16"]["results"][0]["amp"] == "bf16"
    assert sections["train_asge"]["train_seconds"] > 0 and sections["train_bp"]["test_accuracy"]["last"] >= 0
    assert report["whole_run"]["train_seconds_ratio_bp_over_asge"] > 0 and report["finished"]
    same, equal = sections["bench_equal_memory"]["results"]
    assert equal["batch_sizes"]["asge"] > same["batch_sizes"]["asge"] == equal["batch_sizes"]["bp"]
    assert equal["equal_memory"]["asge_bytes"] <= equal["equal_memory"]["bp_bytes"]


def test_bad_data_or_a_used_out_is_refused_before_anything_runs(tmp_path):
    script = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")]
    (tmp_path / "empty").mkdir()
    used = tmp_path / "used"
    used.mkdir()
    (used / "gpu_check.json").write_text("{}")
    cases = [(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a")], "not a directory"),
             (["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "b")],
              "lacks train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte"),
             (["--out", str(used)], "already holds a GPU check (gpu_check.json); choose another --out")]
    for argv, message in cases:
        p = subprocess.run(script + argv, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and message in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert (used / "gpu_check.json").read_text() == "{}"
