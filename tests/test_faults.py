"""Faults and bad input lose nothing: one line, exit code 2, no traceback, no half-written run directory."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asge.runs.directory
from asge.cli import main
from asge.config import TrainConfig
from asge.runs.directory import load_checkpoint

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
    monkeypatch.setattr(asge.runs.directory.os, "replace", disk_full_at_second_last_pt)
    assert main(["train", "--epochs", "3", "--out", str(out), *SMALL]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"could not write {out / 'checkpoints' / 'last.pt'} (No space left on device)" in err
    assert "the previous one is kept intact" in err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(asge.runs.directory.os, "replace", replace)
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


# -- property: the commands that read runs, on run directories in every state -------------------------------
STATES = ("finished", "unfinished", "corrupt", "finished", "missing", "empty", "file", "no-epoch", "unfinished")
CORRUPTIBLE = ("config.yaml", "summary.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt")


@pytest.fixture(scope="session")
def run_states(tmp_path_factory):
    """Tiny digits runs, built once per session: finished (2 epochs, with an earlier report in RUN/report),
    unfinished (stopped after epoch 1 of 3), no-epoch (stopped before any epoch ended); an empty directory,
    a plain file, an image and a file that is not one."""
    import shutil
    import torch
    from PIL import Image
    from asge.train import fit
    root = tmp_path_factory.mktemp("run-states")
    tiny = dict(dataset="digits", channels=[4, 4], downsample=[False, True], progress="none", device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(TrainConfig(**tiny, epochs=2, out=str(root / "finished")), log=lambda *_: None)

        def stop(epoch, record):
            raise Accepted
        with pytest.raises(Accepted):
            fit(TrainConfig(**tiny, epochs=3, out=str(root / "unfinished")), on_epoch_end=stop, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    (root / "finished" / "report").mkdir()
    (root / "finished" / "report" / "report.md").write_text("an earlier report\n")
    shutil.copytree(root / "unfinished", root / "no-epoch")
    (root / "no-epoch" / "checkpoints" / "best.pt").unlink()
    (root / "no-epoch" / "metrics.jsonl").unlink()
    (root / "empty").mkdir()
    (root / "file").write_text("not a run\n")
    (root / "images").mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(root / "images" / "a.png")
    (root / "images" / "b.png").write_bytes(b"\x89PNG not really")
    return root


@st.composite
def run_path(draw, work: Path):
    """A RUN argument in one of STATES (a corrupt run: one of its files truncated, emptied or overwritten)."""
    state = draw(st.sampled_from(STATES))
    if state != "corrupt":
        return str(work / state)
    import shutil
    name = f"corrupt-{draw(st.integers(0, 10 ** 6))}"
    if not (work / name).exists():
        shutil.copytree(work / draw(st.sampled_from(["finished", "unfinished"])), work / name)
    victim = work / name / draw(st.sampled_from(CORRUPTIBLE))
    if victim.exists():
        data = victim.read_bytes()
        how = draw(st.sampled_from(["truncate", "empty", "garbage"]))
        victim.write_bytes(data[:len(data) // 2] if how == "truncate" else b"" if how == "empty" else
                           bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=40))))
    return str(work / name)


def pick(draw, flag: str, good: list, bad: tuple = ()) -> list[str]:
    """``[flag, value]``, the value mostly one of ``good`` and sometimes one of ``bad``; or nothing."""
    value = draw(st.sampled_from([None, *good * 2, None, *bad]))
    return [] if value is None else [flag, value]


@st.composite
def command(draw, work: Path) -> list[str]:
    """Random arguments for eval, predict, export, report or bench, over run directories in every state."""
    name = draw(st.sampled_from(["eval", "predict", "export", "report", "bench"]))
    under_file, fresh = str(work / "file" / "x"), str(work / "new" / "out")
    strategy = pick(draw, "--strategy", ["best", "fusion", "last"], ("bets",))
    if name == "eval":
        argv = [draw(run_path(work)), *pick(draw, "--strategy", ["all", "best", "fusion", "last"], ("bets",)),
                *pick(draw, "--batch-size", ["1", "100"], ("0", "x")), *pick(draw, "--device", ["cpu"], ("meta",)),
                *pick(draw, "--progress", ["none", "lines"], ("loud",)),
                *pick(draw, "--data-root", [], (str(work / "missing"), str(work))),
                *draw(st.sampled_from([[], ["--per-class"]]))]
    elif name == "predict":
        image_paths = [str(work / "images"), str(work / "images" / "a.png"), str(work / "images" / "b.png")]
        paths = draw(st.lists(st.sampled_from(image_paths * 2 + [str(work / "missing"), str(work / "empty")]),
                              min_size=1, max_size=3))
        argv = [draw(run_path(work)), *paths, *strategy, *pick(draw, "--top-k", ["1", "3"], ("0", "x")),
                *pick(draw, "--format", ["table", "csv", "json"], ("xml",)),
                *pick(draw, "--batch-size", ["1", "64"], ("0",))]
    elif name == "export":
        argv = [draw(run_path(work)), "--format", draw(st.sampled_from(["torchscript", "safetensors", "onnx"] * 3
                                                                        + ["pdf"])),
                *strategy, *pick(draw, "--out", [fresh + ".pt"], (under_file, str(work / "empty")))]
    elif name == "report":
        argv = [*draw(st.lists(run_path(work), min_size=1, max_size=3)),
                *pick(draw, "--out", [fresh, str(work / "finished" / "report")], (under_file,)),
                *draw(st.sampled_from([[], [], ["--labels", "a"], ["--labels", ","]])),
                *draw(st.sampled_from([[], ["--force"]]))]
    else:
        argv = [*pick(draw, "--model", ["digits", "quick"], ("resnet",)), *pick(draw, "--width", ["0.25"], ("-1", "x")),
                *pick(draw, "--steps", ["1"], ("0",)), *pick(draw, "--out", [fresh], (under_file,)),
                *pick(draw, "--context", ["ge", "none"], ("median",)),
                *pick(draw, "--context-option", ["extent=0"], ("foo=1", "groups")),
                *pick(draw, "--dataset", ["synthetic", "digits"], ("svhn",)), *pick(draw, "--device", ["cpu"], ("meta",))]
    junk = draw(st.sampled_from([[]] * 12 + [["--eopchs", "3"], ["--strat", "best"], ["--formt=json"]]))
    return [name, *argv, *junk]


def snapshot(root: Path) -> dict:
    """{path: bytes or None (a directory)} of everything under ``root``."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_commands_on_runs_in_every_state_never_traceback_never_overwrite(run_states, data, monkeypatch):
    """eval, predict, export, report and bench with random arguments, on missing, empty, unfinished,
    finished and corrupt run directories: exit code 0, 1 (predict: an unreadable image) or 2 with one line
    (an unfinished run: a note before it), no traceback; nothing that existed is changed, and a refusal
    writes nothing at all. bench's measurement, ONNX export and report drawing stop where they would start."""
    import shutil
    import asge.perf.bench
    import asge.use.export
    import asge.tools.report

    def accepted(*args, **kwargs):
        raise Accepted
    monkeypatch.setattr(asge.perf.bench, "bench_one", accepted)
    monkeypatch.setattr(asge.use.export, "export_onnx", accepted)
    monkeypatch.setattr(asge.tools.report, "_write_report", accepted)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        shutil.copytree(run_states, work)
        argv = data.draw(command(work), label="argv")
        before = snapshot(work)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
            except Accepted:
                code = None
        text = err.getvalue()
        assert "Traceback" not in text, (argv, text)
        after = snapshot(work)
        assert {k: v for k, v in after.items() if k in before} == before, f"{argv} changed what was there"
        if code is None:
            return
        assert code in (0, 1, 2), (argv, code, text)
        if code == 1:
            assert argv[0] == "predict" and "asge: cannot read" in text, (argv, text)
        if code == 2:
            lines = text.strip().splitlines()
            assert 1 <= len(lines) <= 2 and lines[-1].startswith(f"asge {argv[0]}: error: "), (argv, text)
            assert all(line.startswith(f"asge {argv[0]}: note: ") for line in lines[:-1]), (argv, text)
            assert after == before, f"{argv} was refused but wrote {sorted(set(after) - set(before))}"


# -- a network with BatchNorm layers and a batch of one image ----------------------------------------------
def test_a_last_batch_of_one_image_is_left_out_when_batchnorm_layers_train(tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--channels", "8,16v,16", "--subset", "129", "--batch-size", "64", "--progress", "none"]
    assert main(["train", "--context", "ge", "--epochs", "1", "--out", str(out), *small]) == 0
    text = capsys.readouterr().out
    assert ("each epoch's last batch would hold 1 image of 129, which the BatchNorm layers of context 'ge' "
            "cannot train on: it is left out (128 images per epoch)") in text
    train = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["train"]
    assert all(abs(a * 128 / 100 - round(a * 128 / 100)) < 1e-9 for a in train["block_acc"])   # counts of 128
    assert load_checkpoint(out / "checkpoints" / "last.pt")["images"] == 128
    # without BatchNorm layers the image is trained on
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "plain"), *small]) == 0
    assert "left out" not in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["images"] == 129


def test_batch_size_one_with_batchnorm_layers_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "plus", "--batch-size", "1", "--epochs", "1", "--out", str(out),
                 "--channels", "8,16v,16", "--subset", "64", "--progress", "none"]) == 2
    err = one_line(capsys.readouterr().err)
    assert ("--batch-size 1 cannot train this network: the BatchNorm layers of context 'ge' need at least 2 "
            "images per training batch; use --batch-size 2 or more") in err
    assert not out.exists()


def test_data_parallel_shares_of_the_last_batch_too_small_for_a_rank_leave_it_out():
    from asge.data import DatasetInfo
    from asge.errors import AsgeError
    from asge.runs.build import build_model
    from asge.train.loop import train_drop_last
    info = DatasetInfo("digits", num_classes=10, in_channels=1, image_size=16)
    said = []
    for context, images, ranks, dropped in [("none", 129, 2, True), ("none", 130, 2, False), ("none", 131, 4, True),
                                            ("ge", 131, 2, True), ("ge", 132, 2, False), ("ge", 135, 4, True),
                                            ("ge", 129, 1, True), ("ge", 130, 1, False), ("none", 129, 1, False)]:
        cfg = TrainConfig.from_dict(dict(dataset="digits", channels=[8, 16], downsample=[False, True],
                                         context=context, batch_size=64)).resolved()
        assert train_drop_last(build_model(cfg, info), cfg, images, said.append, ranks) == dropped, (context, images)
    assert said[0] == ("each epoch's last batch would hold 1 image of 129, a share of 0 on some of the 2 ranks, "
                       "where every rank needs 1: it is left out (128 images per epoch)")
    assert said[2] == ("each epoch's last batch would hold 3 images of 131, a share of 1 on some of the 2 ranks, "
                       "where the BatchNorm layers of context 'ge' need 2: it is left out (128 images per epoch)")
    assert len(said) == 5
    cfg = TrainConfig.from_dict(dict(dataset="digits", channels=[8, 16], downsample=[False, True], context="ge",
                                     batch_size=3)).resolved()
    with pytest.raises(AsgeError, match=r"--batch-size 3 cannot be shared over 2 ranks: a rank's share would hold "
                                        r"1 image\(s\), the BatchNorm layers of context 'ge' need 2; use "
                                        r"--batch-size 4 or more"):
        train_drop_last(build_model(cfg, info), cfg, 130, said.append, 2)
