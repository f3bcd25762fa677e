"""The README's Python examples run as written: the blocks are read from README.md itself."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, single_thread, capsys):
    block, _ = python_blocks(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("seven.png", "three.jpg"):                     # the two images the example names
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(name)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    summary, net, x = namespace["summary"], namespace["net"], namespace["x"]
    assert set(summary["test_accuracy"]) == {"fusion", "last", "best"}
    assert (tmp_path / "runs" / "digits" / "summary.json").is_file()
    assert net.classes == tuple(str(i) for i in range(10)) and tuple(x.shape) == (2, 1, 8, 8)
    probs = net.predict(x, strategy="best").softmax(1)
    assert probs.shape == (2, 10) and float(probs.sum()) == pytest.approx(2.0, abs=1e-4)


def test_readme_your_own_network_runs_as_written(tmp_path, monkeypatch, single_thread, capsys):
    """torchvision's resnet18 cut into 4 modules, trained by fit, loaded back: the README's second block."""
    _, block = python_blocks(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    summary, net = namespace["summary"], namespace["net"]
    assert summary["model"] == "python" and len(summary["modules"]) == 4
    assert [m["units"] for m in summary["modules"]] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert capsys.readouterr().out.count(" MACs head ") == 4
    assert int(net.best_block) == summary["best_block"] and not net.training


def test_no_user_facing_file_cites_a_spec_that_is_not_shipped():
    root = README.parent
    files = [README, *root.glob("docs/*.md"), *root.glob("configs/*.yaml"), *root.glob("src/asge/**/*.py"),
             *root.glob("benchmarks/*.py")]
    cited = [str(f.relative_to(root)) for f in files if "SPEC.md" in f.read_text(encoding="utf-8")]
    assert cited == [] and not (root / "SPEC.md").exists()
