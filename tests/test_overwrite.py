"""One rule for every command that writes results (export, report, bench, ablate): what is there already is
refused in one line (exit code 2) and left untouched, unless --force, which replaces it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from asge.cli import build_parser, main
from asge.config import TrainConfig
from asge.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(dataset="digits", channels=[8, 16], downsample=[False, True], subset=128, batch_size=64,
            epochs=1, progress="none")


@pytest.fixture(scope="module")
def run(tmp_path_factory, single_thread) -> Path:
    path = tmp_path_factory.mktemp("runs") / "tiny"
    fit(TrainConfig(**TINY, out=str(path)), log=lambda s: None)
    return path


def refused(capsys, argv: list[str], *phrases: str) -> None:
    """``asge ARGV`` exits 2 with one line holding ``phrases`` and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"asge {argv[0]}: error: "), err
    for phrase in phrases:
        assert phrase in err, err


def contents(*paths: Path) -> dict:
    return {p: p.read_bytes() for p in paths}


def test_every_command_that_writes_results_has_force():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("export", "report", "bench", "ablate"):
        assert "--force" in commands[name].format_help(), name


@pytest.mark.parametrize("default_out", [False, True])
def test_export_refuses_an_existing_file_or_card_and_force_replaces_them(run, tmp_path, capsys, default_out):
    target = run / "export" / "model-best.safetensors" if default_out else tmp_path / "m.safetensors"
    argv = ["export", str(run), "--format", "safetensors"] + ([] if default_out else ["--out", str(target)])
    card = target.with_name(target.name + ".md")
    assert main(argv) == 0 and target.is_file() and card.is_file()
    capsys.readouterr()
    target.write_bytes(b"the user's file")
    before = contents(target, card)
    refused(capsys, argv, f"{target.parent} already holds an export ({target.name}, {card.name}); pass --force "
                          "to replace it, or choose another --out")
    assert contents(target, card) == before
    assert main(argv + ["--force"]) == 0
    from safetensors.torch import load_file
    assert load_file(str(target)) and card.read_text().startswith("# ")           # replaced by the export
    target.unlink()                                   # the card alone is protected too
    card.write_text("the user's notes\n")
    refused(capsys, argv, f"already holds an export ({card.name})")
    assert card.read_text() == "the user's notes\n" and not target.exists()
    if default_out:
        for p in (target, card):
            p.unlink(missing_ok=True)


def test_report_refuses_an_existing_report_and_force_replaces_it(run, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(run), "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "report.md").write_text("the user's edits\n")
    before = contents(*sorted(out.iterdir()))
    refused(capsys, ["report", str(run), "--out", str(out)], f"{out} already holds a report (report.md",
            "pass --force to replace it")
    assert contents(*sorted(out.iterdir())) == before
    assert main(["report", str(run), "--out", str(out), "--force"]) == 0
    assert (out / "report.md").read_text().startswith("# asge report: tiny")


BENCH = ["bench", "--model", "digits", "--width", "0.25", "--batch-size", "16", "--steps", "1", "--warmup", "0",
         "--chunk", "1", "--device", "cpu", "--no-matmul-peak"]


def test_bench_refuses_results_it_would_replace_and_force_replaces_them(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(BENCH + ["--out", str(out)]) == 0
    first = json.loads((out / "bench.json").read_text())
    capsys.readouterr()
    before = contents(out / "bench.json")
    refused(capsys, BENCH + ["--out", str(out)], f"{out} already holds benchmark results (bench.json); pass "
                                                 "--force to replace it")
    assert contents(out / "bench.json") == before
    assert main(BENCH + ["--out", str(out), "--force"]) == 0
    assert json.loads((out / "bench.json").read_text())["date"] >= first["date"]
    # what --profile and --overhead would write is protected as well (refused before any measurement)
    fresh = tmp_path / "p"
    fresh.mkdir()
    (fresh / "profile_bp_w0.25.txt").write_text("kept\n")
    refused(capsys, BENCH + ["--out", str(fresh), "--profile"], "(profile_bp_w0.25.txt)")
    (fresh / "overhead.json").write_text("{}\n")
    refused(capsys, ["bench", "--overhead", "--out", str(fresh)], "already holds benchmark results (overhead.json)")
    assert (fresh / "overhead.json").read_text() == "{}\n" and sorted(p.name for p in fresh.iterdir()) == [
        "overhead.json", "profile_bp_w0.25.txt"]


ABLATE = ["ablate", "--dataset", "digits", "--channels", "8,16v", "--subset", "128", "--batch-size", "64",
          "--epochs", "1", "--progress", "none", "--pools", "rms", "--contexts", "none"]


def test_ablate_continues_the_same_ablation_refuses_another_and_force_rewrites(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(ABLATE + ["--out", str(out)]) == 0
    assert main(ABLATE + ["--out", str(out)]) == 0                   # the same command: continued, reused
    assert "finished earlier" in capsys.readouterr().out
    tables = contents(out / "ablation.csv", out / "ablation.md")
    other = [a if a != "1" else "2" for a in ABLATE]                 # --epochs 2: another budget
    refused(capsys, other + ["--out", str(out)], f"{out} already holds another ablation (rms-none was trained "
                                                 "with another configuration (epochs (1 -> 2)))",
            "pass --force to replace its tables")
    assert contents(out / "ablation.csv", out / "ablation.md") == tables
    assert main(other + ["--out", str(out), "--force"]) == 0
    assert "epochs (1 -> 2)" in (out / "ablation.csv").read_text()   # rewritten: the setting is an error now
    assert (out / "rms-none" / "summary.json").is_file()              # and its run directory is kept
