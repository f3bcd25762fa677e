"""Your own context modules and pools: by import path, by entry point, refused in one line when wrong; and
docs/extending.md's worked example, run as written."""
import csv
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

from asge import ASGENet
from asge.cli import main
from asge.layers import CONTEXTS, POOLS, create_context, create_pool

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"

MODULE = '''
import torch
from torch import nn

class Scale(nn.Module):                       # takes only channels and an option: feat_size etc. are not passed
    def __init__(self, channels, factor=1.0):
        super().__init__()
        self.w = nn.Parameter(torch.full((channels,), float(factor)))
    def forward(self, x):
        return x * self.w.view(1, -1, 1, 1)

class Squash(nn.Module):
    def __init__(self, channels, **kw):
        super().__init__()
    def forward(self, x):
        return x.mean(1, keepdim=True)

def half_pool(kernel_size=2, stride=None):
    return nn.AvgPool2d(kernel_size, stride)

def keep_pool():
    return nn.Identity()

def broken(channels, **kw):
    raise RuntimeError("cannot build this")
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A module ``plugmod_<test>`` on sys.path (restored afterwards). Returns its name."""
    name = "plugmod_" + re.sub(r"\W", "_", tmp_path.name)
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    yield name
    sys.modules.pop(name, None)
    for registry in (CONTEXTS, POOLS):
        for key in [k for k in registry.plugins if k.startswith(name)]:
            registry.plugins.pop(key)


def test_context_by_import_path_goes_into_the_blocks_with_its_options(plugin_dir):
    net = ASGENet([8, 16], [True, False], in_channels=1, num_classes=10, image_size=8,
                  context=f"{plugin_dir}:Scale", context_options={"factor": 2.0}, context_blocks=[2])
    assert type(net.blocks[0].context).__name__ == "Identity"
    gate = net.blocks[1].context
    assert type(gate).__name__ == "Scale" and torch.equal(gate.w, torch.full((16,), 2.0))
    assert net.predict(torch.randn(3, 1, 8, 8), "last").shape == (3, 10)


def test_pool_by_import_path(plugin_dir):
    pool = create_pool(f"{plugin_dir}:half_pool")
    assert pool(torch.randn(1, 3, 8, 8)).shape == (1, 3, 4, 4)


def test_train_with_a_custom_context_and_pool(plugin_dir, tmp_path, capsys, single_thread):
    assert main(["train", "--channels", "8,16v", "--epochs", "1", "--context", f"{plugin_dir}:Scale",
                 "--pool", f"{plugin_dir}:half_pool", "--out", str(tmp_path / "run"), "--progress", "none"]) == 0
    out = capsys.readouterr().out
    assert "strategies     fusion" in out and "headline" in out


def test_bench_with_a_custom_context(plugin_dir, tmp_path, capsys, single_thread):
    import json
    assert main(["bench", "--model", "digits", "--width", "0.25", "--steps", "1", "--warmup", "0", "--chunk", "1",
                 "--batch-size", "8", "--context", f"{plugin_dir}:Scale", "--context-option", "factor=0.5",
                 "--no-matmul-peak", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["context"] == f"{plugin_dir}:Scale"


@pytest.mark.parametrize("flag, target, message", [
    ("--context", "no_such_module_xyz:Gate", "module 'no_such_module_xyz' cannot be imported (ModuleNotFoundError"),
    ("--context", "{mod}:Missing", "module '{mod}' has no attribute 'Missing'"),
    ("--context", "{mod}:Squash", "must map (2, 8, 8, 8) to (2, 8, 8, 8), but returned (2, 1, 8, 8)"),
    ("--context", "{mod}:broken", "could not be built"),
    ("--pool", "{mod}:keep_pool", "must map (2, 4, 8, 8) to (2, 4, 4, 4), but returned (2, 4, 8, 8)"),
    ("--context", "nonsense", "or a class by import path"),
])
def test_bad_module_is_refused_in_one_line(plugin_dir, tmp_path, capsys, flag, target, message):
    target, message = target.format(mod=plugin_dir), message.format(mod=plugin_dir)
    assert main(["train", "--channels", "8,16v", "--epochs", "1", flag, target, "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and target in err and len(err.strip().splitlines()) == 1


def test_entry_points_register_names(plugin_dir, tmp_path, monkeypatch):
    dist = tmp_path / "gates_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gates-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[asge.contexts]\nep-scale = {plugin_dir}:Scale\n\n"
                                           f"[asge.pools]\nep-half = {plugin_dir}:half_pool\n")
    with pytest.raises(ValueError, match=r"valid: .*ep-scale"):
        CONTEXTS.check("ep-scal")
    assert type(create_context("ep-scale", 4, feat_size=8)).__name__ == "Scale"
    assert "ep-scale" not in CONTEXTS and "ep-scale" in CONTEXTS.plugins     # found, not listed as built-in
    assert create_pool("ep-half")(torch.randn(1, 2, 8, 8)).shape == (1, 2, 4, 4)
    for registry, name in ((CONTEXTS, "ep-scale"), (POOLS, "ep-half")):
        registry.plugins.pop(name)


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_extending_doc_example_runs_as_written(tmp_path, monkeypatch, capsys, single_thread):
    """Writes the doc's my_gates.py, runs its asge commands and its Python snippet, in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    text = DOC.read_text()
    python = _blocks(text, "python")
    module = next(b for b in python if b.startswith("# my_gates.py"))
    assert len(module.strip().splitlines()) - 1 <= 16          # "a gate in 15 lines" (plus the file name)
    (tmp_path / "my_gates.py").write_text(module)
    commands = [line for b in _blocks(text, "sh") for line in b.splitlines() if line.startswith("asge ")]
    assert len(commands) == 2
    try:
        for line in commands:
            assert main(shlex.split(line)[1:]) == 0, line
        capsys.readouterr()
        for snippet in python:
            if snippet is not module:
                exec(compile(snippet, "extending.md", "exec"), {})
        assert capsys.readouterr().out.strip() == "292"
    finally:
        sys.modules.pop("my_gates", None)
        CONTEXTS.plugins.pop("my_gates:ChannelGate", None)
    assert (tmp_path / "runs" / "digits-gate" / "summary.json").is_file()
    with open(tmp_path / "runs" / "digits-gate-ablation" / "ablation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["context"] for r in rows] == ["none", "ge", "my_gates:ChannelGate"]
    assert all(r["status"] == "trained" for r in rows)
    assert (tmp_path / "runs" / "digits-gate-ablation" / "rms-my_gates.ChannelGate" / "summary.json").is_file()
