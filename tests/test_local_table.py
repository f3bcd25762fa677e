"""benchmarks/local_table.py: the K-table on a tiny image tree, end to end: every cell trained once, its table's
numbers from the cells' summaries, the plot, and a second call that trains nothing."""
import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_table():
    sys.path.insert(0, str(ROOT / "benchmarks"))        # it imports accuracy_sweep, its neighbour
    try:
        spec = importlib.util.spec_from_file_location("local_table", ROOT / "benchmarks" / "local_table.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


def make_tree(root: Path, classes=("ant", "bee", "cow"), per_class=12, size=16) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            img[:, :, label] += 150                        # each class has its own colour
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def test_cells_leave_the_batch_to_the_recipe(local_table):
    args = argparse.Namespace(model="resnet20", train="--recipe colour", test_split=5000, main_split=None,
                              splits=[2, 4], seeds=[0], other_seeds=None, losses=["asge"], no_bp=False)
    cells = dict(local_table.cells(args))
    assert set(cells) == {"bp-s0", "asge-k2-s0", "asge-k4-s0"}
    assert all("--batch-size" not in flags and "--recipe" in flags for flags in cells.values())
    assert cells["bp-s0"][-4:] == ["--method", "bp", "--seed", "0"]


def test_a_tiny_k_table_end_to_end_and_resumed(local_table, tmp_path):
    data, out = make_tree(tmp_path / "tree"), tmp_path / "table"
    argv = ["--data", str(data), "--out", str(out), "--model", "resnet20", "--splits", "2,3", "--main-split", "2",
            "--other-seeds", "1", "--losses", "dgl", "--seeds", "0,1", "--test-split", "6", "--jobs", "1",
            "--train", "--subset 24 --epochs 1 --width 0.25 --batch-size 8"]
    assert local_table.main(argv) == 0
    cells = json.loads((out / "table.json").read_text())["cells"]
    assert set(cells) == {"bp-s0", "bp-s1", "dgl-k2-s0", "dgl-k2-s1", "dgl-k3-s0"}
    assert all("error" not in c for c in cells.values()), {n: c.get("error") for n, c in cells.items()}
    assert {c["local_loss"] for n, c in cells.items() if n.startswith("dgl")} == {"dgl"}
    assert [len(cells[n]["modules"]) for n in ("dgl-k2-s0", "dgl-k3-s0")] == [2, 3]
    md = (out / "table.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| dgl | 2 |"))
    fusion = [cells[f"dgl-k2-s{s}"]["test_accuracy"]["fusion"] for s in (0, 1)]
    assert f"| 2 | {statistics.mean(fusion):.2f} ± {statistics.stdev(fusion):.2f} |" in row
    heads = sum(m["head_parameters"] for m in cells["dgl-k2-s0"]["modules"])
    assert f"| {heads:,} |" in row and heads > 0
    bp = [cells[f"bp-s{s}"]["test_accuracy"]["last"] for s in (0, 1)]
    assert f"| bp | – | 2 | – | {statistics.mean(bp):.2f} ± {statistics.stdev(bp):.2f} |" in md
    assert (out / "accuracy_vs_k.png").stat().st_size > 0
    kept = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")}
    assert len(kept) == 5
    assert local_table.main(argv) == 0                 # finished cells are read back, not trained again
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")} == kept
