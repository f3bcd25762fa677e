"""Faults and bad input lose nothing: one line, exit code 2, no traceback, no half-written run directory."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asge.run
from asge.cli import main
from asge.config import TrainConfig
from asge.run import load_checkpoint

SMALL = ["--channels", "8,16v,16", "--subset", "200", "--batch-size", "64", "--progress", "none"]


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- a checkpoint that cannot be written -------------------------------------------------------------------
def test_failing_checkpoint_write_keeps_the_previous_one_and_says_so(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    replace, writes = os.replace, []

    def disk_full_at_second_last_pt(src, dst):
        if str(dst).endswith("last.pt"):
            writes.append(dst)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return replace(src, dst)
    monkeypatch.setattr(asge.run.os, "replace", disk_full_at_second_last_pt)
    assert main(["train", "--epochs", "3", "--out", str(out), *SMALL]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"could not write {out / 'checkpoints' / 'last.pt'} (No space left on device)" in err
    assert "the previous one is kept intact" in err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(asge.run.os, "replace", replace)
    assert main(["train", "--out", str(out), "--resume", "--progress", "none"]) == 0   # nothing lost


# -- an unreadable image, through the command and its DataLoader workers ------------------------------------
def test_truncated_image_in_an_imagefolder_run_is_one_line(tmp_path):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(6):
                pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / c / f"{i}.png")
    bad = tmp_path / "train" / "a" / "3.png"
    bad.write_bytes(bad.read_bytes()[:50])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "asge", "train", "--dataset", "imagefolder", "--data-root",
                        str(tmp_path), "--num-workers", "2", "--input-size", "8", "--channels", "8,8", "--epochs", "1",
                        "--batch-size", "4", "--progress", "none", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert one_line(r.stderr).startswith(f"asge train: error: cannot read image {bad}")


# -- configuration: named key, value and expectation ------------------------------------------------------
@pytest.mark.parametrize("yaml_text,flags,message", [
    ("epochs: ten\n", [], "epochs: expected an integer >= 1, got 'ten'"),
    ("batch_size: 0\n", [], "batch_size: expected an integer >= 1, got 0"),
    ("lr: -0.1\n", [], "lr: expected a number > 0, got -0.1"),
    ("dropout: 1.5\n", [], "dropout: expected a number in [0, 1), got 1.5"),
    ("learning_rate: 0.1\n", [], "unknown config keys ['learning_rate']"),
    ("channels: [8, -1]\ndownsample: [false, true]\n", [], "channels: expected a list of integers >= 1"),
    ("epochs: [\n", [], "is not valid YAML"),
    ("- a list\n", [], "must hold a mapping"),
    ("", ["--subset", "-5"], "subset: expected an integer >= 1, got -5"),
    ("", ["--width", "nan"], "width: expected a number > 0, got nan"),
    ("", ["--checkpoint-every", "-1"], "checkpoint_every: expected an integer >= 0, got -1"),
    ("", ["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    ("", ["--device", "meta"], "unknown device 'meta'"),
])
def test_bad_config_value_is_one_line_naming_key_value_and_expectation(tmp_path, capsys, yaml_text, flags, message):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml_text)
    out = tmp_path / "run"
    try:
        code = main(["train", "--config", str(conf), *flags, "--out", str(out)])
    except SystemExit as e:                      # argparse's own errors (a flag's type)
        code = e.code
    assert code == 2
    assert message in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_yaml_numbers_written_as_exponents_are_numbers():
    """YAML 1.1 reads ``1e-3`` as a string; a real-valued key takes it as the number it means."""
    assert TrainConfig.from_dict(yaml.safe_load("lr: 1e-3\nhead_lr: 2E-2\n")).lr == 1e-3


# -- property: whatever the options, never a traceback, never a half-written run directory ------------------
class Accepted(Exception):
    """Raised where training would start: the configuration, data and model were all accepted."""


KEYS = [name for name in TrainConfig.__dataclass_fields__ if name not in ("out", "pipeline", "download")]
NAMES = {"dataset": ["digits", "svhn", "mnist", "cifar10", "imagefolder", "DIGITS"],
         "model": ["digits", "quick", "vgg8", "vgg11", "resnet"], "method": ["asge", "bp", "hebb"],
         "pool": ["rms", "avg", "max", "soft", "median"], "norm": ["layer", "rms", "none", "batch"],
         "context": ["none", "sge", "ge", "gsop", "se"], "amp": ["none", "bf16", "fp16", "fp8"],
         "progress": ["auto", "none", "lines", "loud"], "goodness": ["mean", "sum", "max"],
         "device": ["auto", "cpu", "cuda", "meta", "gpu"], "recipe": ["paper", "plus", "best"],
         "head_features": ["gap", "goodness", "patch", "all"]}
text = st.text(st.characters(blacklist_characters=":\x00", blacklist_categories=("Cs",)), max_size=6)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), text,
                   st.floats(-2, 3, allow_nan=False), st.sampled_from([float("nan"), float("inf"), 0.0, 1e-3]))
value = st.one_of(scalar, st.lists(st.integers(-2, 24), max_size=4),
                  st.dictionaries(text, st.integers(-2, 9), max_size=2))


@st.composite
def options(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(KEYS + ["foo", "learning-rate"]), max_size=5, unique=True))
    return {k: draw(st.sampled_from(NAMES[k]) | value) if k in NAMES else draw(value) for k in keys}


def as_flags(opts: dict) -> list[str]:
    argv = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        elif isinstance(v, list):
            argv += [flag, ",".join(map(str, v))]
        elif v is not None and v is not False:
            argv += [flag, str(v)]
    return argv


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(from_yaml=options(), from_flags=options(), raw_yaml=st.one_of(st.none(), text))
def test_random_options_never_traceback_never_half_written(from_yaml, from_flags, raw_yaml):
    from asge import train
    with tempfile.TemporaryDirectory() as tmp:
        out, conf = Path(tmp) / "runs" / "r", Path(tmp) / "c.yaml"
        conf.write_text(raw_yaml if raw_yaml is not None else yaml.safe_dump(from_yaml))
        argv = ["train", "--config", str(conf), *as_flags(from_flags), "--out", str(out)]
        err = io.StringIO()
        saved = dict(train.METHODS)
        train.METHODS.update({k: lambda *a, **kw: (_ for _ in ()).throw(Accepted()) for k in saved})
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as e:          # argparse: a flag that does not parse
                    code = e.code
                except Accepted:
                    code = None
        finally:
            train.METHODS.update(saved)
        if code is not None:
            assert code == 2, (argv, err.getvalue())
            assert err.getvalue().count("\n") == 1 and "Traceback" not in err.getvalue(), (argv, err.getvalue())
        assert not out.exists(), f"{argv} left {sorted(p.name for p in out.iterdir())}"
