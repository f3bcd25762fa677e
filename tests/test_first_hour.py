"""A researcher's first hour (issue 16): every mistake one line and exit code 2 with nothing written, nothing
silently wrong (a --data-root used or refused, --resume that finds no run, a finished run left alone), help
that says what each option does and its default, files others can read, inference without autograd."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import asge
from asge.cli import build_parser, main
from asge.config import TrainConfig
from asge.layers.context import context_option_keys
from asge.train import fit

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
TINY = dict(dataset="digits", channels=[8, 8], downsample=[False, True], progress="none", device="cpu")


def quiet(*_):
    pass


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory, single_thread):
    """A finished run (2 epochs), one stopped after epoch 1 of 3 (best.pt, no summary) and one stopped
    before any epoch ended (no best.pt): digits, two 8-channel blocks, about a second each."""
    root = tmp_path_factory.mktemp("first-hour")
    fit(TrainConfig(**TINY, epochs=2, out=str(root / "finished")), log=quiet)

    def stop_after_first(epoch, record):
        raise Stop
    with pytest.raises(Stop):
        fit(TrainConfig(**TINY, epochs=3, out=str(root / "unfinished")), on_epoch_end=stop_after_first, log=quiet)
    shutil.copytree(root / "unfinished", root / "no-epoch")
    (root / "no-epoch" / "checkpoints" / "best.pt").unlink()
    (root / "no-epoch" / "metrics.jsonl").unlink()
    from PIL import Image
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).save(root / "digit.png")
    return {p.name: p for p in root.iterdir()}


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """``python -m asge ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "asge", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def refused(r, *needles: str) -> str:
    """Exit code 2, one or two lines on stderr, no traceback, each of ``needles`` in the message."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and 1 <= len(r.stderr.strip().splitlines()) <= 2, r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)
    return r.stderr


def in_process(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main(argv)`` in this process (argparse's exits included)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def tree(path: Path) -> dict:
    """{relative path: (sha256, mtime_ns, mode)} of every file under ``path``: what "nothing written" means."""
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns,
                                       p.stat().st_mode)
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


# -- 1: an unfinished run ------------------------------------------------------------------------------------
def test_unfinished_run_is_used_with_its_best_block_chosen_on_validation(runs, tmp_path, capsys):
    run = tmp_path / "unfinished"
    shutil.copytree(runs["unfinished"], run)
    before = tree(run)
    r = cli("eval", run, "--progress", "none")
    assert r.returncode == 0, r.stderr
    note = r.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("asge eval: note:") and "has not finished" in note[0]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    l_star = 1 + int(np.argmax(record["val"]["block_acc"]))
    assert f"l* = {l_star}, chosen on validation" in note[0]
    assert f"best_block: {l_star}" in r.stdout and "fusion:" in r.stdout and "last:" in r.stdout
    assert tree(run) == before
    net = asge.load(run)                                 # the Python side: the same l*, and the note
    assert int(net.best_block) == l_star and "has not finished" in net.load_note
    code, out, err = in_process(capsys, "predict", run, runs["digit.png"], "--strategy", "best")
    assert code == 0 and out.startswith(str(runs["digit.png"])) and "note:" in err
    code, out, err = in_process(capsys, "export", run, "--format", "safetensors", "--out", tmp_path / "m.safetensors")
    assert code == 0 and asge.load(tmp_path / "m.safetensors").best_block == l_star


def test_a_run_with_no_epoch_done_is_one_line_and_nothing_is_computed(runs, tmp_path, capsys):
    run = tmp_path / "no-epoch"
    shutil.copytree(runs["no-epoch"], run)
    before = tree(run)
    refused(cli("export", run, "--format", "onnx"), "has not finished an epoch yet", "--resume")
    for argv in (["eval", run], ["predict", run, runs["digit.png"]], ["export", run, "--format", "safetensors"]):
        code, out, err = in_process(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "has not finished an epoch yet" in err, (argv, err)
    assert tree(run) == before and not (run / "export").exists()


# -- 2 and 8: context options -------------------------------------------------------------------------------
def test_a_context_option_the_module_does_not_take_names_module_key_and_keys(tmp_path, capsys):
    refused(cli("train", "--context", "ge", "--context-option", "foo=1", "--out", tmp_path / "r"),
            "asge train: error: context 'ge' (GatherExcite) has no option 'foo'", "it takes: extent, reduction")
    (tmp_path / "my_gates.py").write_text(
        "from torch import nn\n\nclass ChannelGate(nn.Module):\n"
        "    def __init__(self, channels, hidden=8, device=None, dtype=None):\n        super().__init__()\n\n"
        "    def forward(self, x):\n        return x\n\n\ndef anything(channels, **options):\n    return nn.Identity()\n")
    refused(cli("train", "--context", "my_gates:ChannelGate", "--context-option", "hiden=16", "--out", "r",
                cwd=tmp_path), "context 'my_gates:ChannelGate' has no option 'hiden'", "it takes: hidden")
    sys.path.insert(0, str(tmp_path))
    try:
        assert context_option_keys("my_gates:anything") is None           # **options: anything goes
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_gates", None)
    code, _, err = in_process(capsys, "bench", "--context", "sge", "--context-option", "group=4",
                              "--out", tmp_path / "b")
    assert code == 2 and "context 'sge' (SpatialGroupEnhance) has no option 'group'" in err and "eps, groups" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "b").exists()
    assert {n: context_option_keys(n) for n in ("sge", "gsop", "ge-plus")} == {
        "sge": ["eps", "groups"], "gsop": ["dim", "grid", "upsample"], "ge-plus": ["extent", "reduction"]}


def test_context_options_with_no_context_and_abbreviated_flags_are_refused(tmp_path, capsys):
    refused(cli("train", "--context-option", "groups=4", "--epoch", "1", "--out", tmp_path / "r"),
            "asge train: error: unrecognized arguments: --epoch 1 (did you mean --epochs?)")
    code, _, err = in_process(capsys, "train", "--context-option", "groups=4", "--out", tmp_path / "r")
    assert code == 2 and "context 'none' takes no options, but got groups=4" in err
    code, _, err = in_process(capsys, "train", "--eopchs=3", "--out", tmp_path / "r")
    assert code == 2 and "(did you mean --epochs?)" in err
    code, _, err = in_process(capsys, "trian")
    assert code == 2 and "(did you mean train?)" in err
    assert not (tmp_path / "r").exists()


def test_ablate_refuses_an_option_key_no_module_of_its_grid_takes_before_training(tmp_path, capsys):
    for option, message in (("foo=1", "no context module of the grid takes the option 'foo'"),
                            ("ge:groups=2", "context 'ge' (GatherExcite) has no option 'groups'")):
        code, _, err = in_process(capsys, "ablate", "--pools", "rms", "--contexts", "none,sge,ge", "--context-option",
                                  option, "--epochs", "1", "--out", tmp_path / "abl")
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "abl").exists()


def test_context_blocks_without_the_context_get_no_options():
    net = asge.ASGENet([8, 8, 8], [False, True, False], in_channels=1, image_size=8, context="sge",
                       context_options={"groups": 4}, context_blocks=[2])
    assert [type(b.context).__name__ for b in net.blocks] == ["Identity", "SpatialGroupEnhance", "Identity"]


# -- 3: --out under a file -----------------------------------------------------------------------------------
def test_out_under_a_file_is_one_line_for_every_command_that_writes(runs, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    refused(cli("export", runs["finished"], "--format", "onnx", "--out", afile / "x.onnx"),
            f"{afile} is a file, not a directory")
    refused(cli("bench", "--out", afile, "--steps", "1"), f"{afile} is a file, not a directory")
    for argv in (["train", *"--channels 8,8v --epochs 1 --progress none --out".split(), afile / "run"],
                 ["ablate", *"--channels 8,8v --epochs 1 --progress none --out".split(), afile],
                 ["report", runs["finished"], "--out", afile / "rep"],
                 ["export", runs["finished"], "--format", "torchscript", "--out", tmp_path]):
        code, _, err = in_process(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert afile.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# -- 4: --data-root is used or refused ------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(head + array.tobytes())


def test_a_data_root_that_is_not_there_is_refused_never_replaced(tmp_path):
    err = refused(cli("train", "--dataset", "fashion-mnist", "--data-root", tmp_path / "nonexistent",
                      "--out", tmp_path / "r"), f"the data root {tmp_path / 'nonexistent'} does not exist")
    assert "/usr/share/datasets" not in err and not (tmp_path / "r").exists()


def test_the_directory_actually_read_is_recorded(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "fm"
    data.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(data / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(data / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    out = tmp_path / "run"
    code, _, err = in_process(capsys, "train", "--dataset", "fashion-mnist", "--data-root", data, "--channels", "4,4v",
                              "--epochs", "1", "--batch-size", "32", "--progress", "none", "--out", out)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["data"]["root"] == str(data)
    assert torch.load(out / "checkpoints" / "best.pt", weights_only=True)["data"]["root"] == str(data)


# -- 5 and 6: --resume --------------------------------------------------------------------------------------
def test_resume_where_there_is_no_run_is_refused(tmp_path, capsys):
    refused(cli("train", "--out", tmp_path / "typo", "--resume"), f"{tmp_path / 'typo'} does not exist",
            "no run to resume")
    (tmp_path / "empty").mkdir()
    code, _, err = in_process(capsys, "train", "--out", tmp_path / "empty", "--resume")
    assert code == 2 and "holds no run to resume (no checkpoints/last.pt)" in err
    code, _, err = in_process(capsys, "train", "--resume")
    assert code == 2 and "--resume needs --out" in err
    (tmp_path / "afile").write_text("x")
    code, _, err = in_process(capsys, "train", "--out", tmp_path / "afile", "--resume")
    assert code == 2 and "is a file, not a run directory" in err
    (tmp_path / "afile").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any((tmp_path / "empty").iterdir())


def test_resume_of_a_finished_run_says_so_and_rewrites_nothing(runs, tmp_path):
    run = tmp_path / "done"
    shutil.copytree(runs["finished"], run)
    before = tree(run)
    fusion = json.loads((run / "summary.json").read_text())["test_accuracy"]["fusion"]
    r = cli("train", "--out", run, "--resume")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == f"{run} is a finished run (2 epochs, test accuracy fusion {fusion:.2f}%): nothing to resume\n"
    assert tree(run) == before
    assert fit(TrainConfig(**TINY, epochs=2, out=str(run)), resume=True, log=quiet)["test_accuracy"]["fusion"] == fusion
    assert tree(run) == before


# -- 7: report ----------------------------------------------------------------------------------------------
def test_report_never_overwrites_without_force_and_takes_each_run_once(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    code, _, err = in_process(capsys, "report", runs["finished"], "--out", out)
    assert code == 0, err
    before = tree(out)
    refused(cli("report", runs["finished"], "--out", out), f"{out} already holds a report", "--force")
    assert tree(out) == before
    refused(cli("report", runs["finished"], runs["finished"] / ".." / "finished", "--out", tmp_path / "two"),
            "is given twice")
    assert not (tmp_path / "two").exists()
    code, _, err = in_process(capsys, "report", runs["finished"], "--out", out, "--force")
    assert code == 0, err
    assert "--force" in build_parser()._subparsers._group_actions[0].choices["report"].format_help()


# -- 14: --version, help, one error prefix ----------------------------------------------------------------
def test_version_help_and_one_error_prefix(runs, tmp_path, capsys):
    code, out, _ = in_process(capsys, "--version")
    assert code == 0 and out.strip() == f"asge {asge.__version__}"
    code, out, _ = in_process(capsys, "--help")
    assert code == 0 and "``" not in out and "Adaptive Spatial Goodness Encoding" in " ".join(out.split())
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        assert parser.description and parser.description.endswith("."), name
        assert not parser.allow_abbrev, name
    assert commands["eval"].format_usage().rstrip().endswith("RUN")
    code, _, err = in_process(capsys, "eval", tmp_path)
    assert code == 2 and err.startswith(f"asge eval: error: {tmp_path} is not an asge run directory")
    code, _, err = in_process(capsys, "eval", runs["finished"], "--strategy", "bets")
    assert code == 2 and err.startswith("asge eval: error: argument --strategy: invalid choice")
    assert "(did you mean best?)" in err


def test_train_help_gives_every_option_a_help_and_its_default():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    documented = [a for a in train._actions if a.dest in fields]
    assert len(documented) >= 35
    for action in documented:
        assert action.help and "default" in action.help, action.option_strings
    by = {a.dest: a for a in documented}
    assert by["pool"].metavar == "{rms,avg,max,soft}|MODULE:NAME" and by["norm"].metavar == "{layer,rms,none}"
    assert by["epochs"].help.endswith("(default: the preset's: vgg8 100, vgg11 100, quick 5, digits 30)")
    assert "quick 0.01, digits 0.01), else --lr" in by["head_lr"].help and "0.01 with --recipe plus" in by["head_lr"].help
    assert "(default: 128; 32 with --recipe colour)" in by["batch_size"].help and "(default: 0.1)" in by["dropout"].help
    assert "(default: none; ge with --recipe plus or colour)" in by["context"].help
    assert "(default: fixed; learned with --recipe colour)" in by["projection"].help
    text = train.format_help()
    assert "--epochs N" in text and "{asge,bp}" in text


# -- 16: the umask ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_a_run_writes_honour_the_umask(tmp_path, capsys, umask, mode, single_thread):
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        fit(TrainConfig(**TINY, epochs=1, out=str(out)), log=quiet)
        code, _, err = in_process(capsys, "export", out, "--format", "safetensors")
        assert code == 0, err
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file() and p.name != ".lock"]
    assert {"config.yaml", "metrics.jsonl", "summary.json", "best.pt", "last.pt",
            "model-best.safetensors"} <= {p.name for p in files}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: mode for p in files}


# -- 17: inference without autograd ---------------------------------------------------------------------------
def test_loaded_models_run_without_autograd(runs):
    net = asge.load(runs["finished"])
    assert not any(p.requires_grad for p in net.parameters())
    x = net.preprocess([str(runs["digit.png"])])
    for strategy in ("best", "fusion", "last"):
        y = net.predict(x, strategy=strategy)
        assert y.grad_fn is None and not y.requires_grad
    from asge.use.predict import predict_files
    rows = list(predict_files(net, [str(runs["digit.png"])], "fusion", 2, 4, []))
    assert len(rows) == 1 and len(rows[0]["predictions"]) == 2


def test_parse_args_reports_unrecognized_through_the_subcommand():
    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        from asge.cli import parse_args
        parse_args(parser, ["report", "x", "--forse"])
    assert e.value.code == 2
    assert isinstance(parser, argparse.ArgumentParser) and not parser.allow_abbrev
