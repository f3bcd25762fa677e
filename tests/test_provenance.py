"""Runs record where they came from (version, commit, command line, data files, machine), extend to more epochs
with --resume --epochs N, and start from another run's weights with --init-from (issue 16 item 15)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import asge
from asge.config import TrainConfig
from asge.runs.provenance import git_info
from asge.runs.directory import load_checkpoint
from asge.train import fit
from asge.runs.build import build_model
from asge.train.resume import load_init_weights

FASHION = Path("/usr/share/datasets/fashion-mnist")
SMALL = ["--channels", "8,8v", "--progress", "none"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "asge", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def one_line_refusal(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_summary_records_version_commit_command_data_and_machine(tmp_path):
    run = tmp_path / "run"
    r = cli("train", *SMALL, "--epochs", "1", "--out", str(run))
    assert r.returncode == 0, r.stderr
    assert "after 1 epoch," in r.stdout and "1 epochs" not in r.stdout        # the summary table, singular
    s = json.loads((run / "summary.json").read_text())
    p = s["provenance"]
    assert p["asge_version"] == asge.__version__
    assert p["command"][1:] == ["train", *SMALL, "--epochs", "1", "--out", str(run)]
    source = Path(asge.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:            # run from a checkout (as the tests are)
        assert p["git"]["commit"] == head.stdout.strip() and isinstance(p["git"]["dirty"], bool)
    else:
        assert "git" not in p
    data = p["data"]
    (digits,) = data["files"]
    assert digits["name"] == "digits.csv.gz" and digits["bytes"] == (Path(data["dir"]) / "digits.csv.gz").stat().st_size
    assert s["device_name"] and s["device_name"] == p["device_name"]


def test_git_info_is_absent_outside_a_checkout(tmp_path):
    assert git_info(tmp_path) is None


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST not installed at {FASHION}")
def test_fashion_mnist_run_records_the_directory_and_files_read(tmp_path):
    r = cli("train", "--dataset", "fashion-mnist", *SMALL, "--subset", "256", "--epochs", "1",
            "--val-subset", "256", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "run" / "summary.json").read_text())["provenance"]["data"]
    assert data["dir"] == str(FASHION.resolve())
    names = {f["name"]: f for f in data["files"]}
    assert len(names) == 4 and all(n.endswith(".gz") or "ubyte" in n for n in names)
    for n, f in names.items():
        assert f["bytes"] == (FASHION / n).stat().st_size and len(f["sha256"]) == 64


def test_tensorboard_hparams_hold_config_and_provenance(tmp_path, single_thread):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from tensorboard.plugins.hparams import plugin_data_pb2
    run = tmp_path / "run"
    summary = fit(TrainConfig(channels=[8, 8], downsample=[False, True], epochs=1, progress="none",
                              tensorboard=True, out=str(run)), log=lambda m: None)
    acc = ea.EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["epochs"].number_value == 1 and hp["dataset"].string_value == "digits"
    assert hp["provenance/asge_version"].string_value == asge.__version__
    if "git" in summary["provenance"]:
        assert hp["provenance/git_commit"].string_value == summary["provenance"]["git"]["commit"]
    assert hp["provenance/data_dir"].string_value == summary["provenance"]["data"]["dir"]


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    run = tmp_path / "run"
    assert cli("train", *SMALL, "--epochs", "2", "--out", str(run)).returncode == 0
    r = cli("train", "--out", str(run), "--resume", "--epochs", "4")
    assert r.returncode == 0, r.stderr
    assert "extending" in r.stdout and "from 2 to 4 epochs" in r.stdout and "cosine schedule is rebuilt" in r.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in records] == [1, 2, 3, 4]
    assert records[2]["lr"]["blocks"] > 10 * records[1]["lr"]["blocks"]      # back up from the old end value
    assert records[3]["lr"]["blocks"] == pytest.approx(records[1]["lr"]["blocks"])   # down to min_lr again
    s = json.loads((run / "summary.json").read_text())
    assert s["epochs"] == 4 and s["extensions"][0]["from_epochs"] == 2 and s["extensions"][0]["to_epochs"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 4
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["epochs"] == 4
    again = cli("train", "--out", str(run), "--resume")                   # finished at 4: nothing to do
    assert again.returncode == 0 and "finished" in again.stdout
    fewer = cli("train", "--out", str(run), "--resume", "--epochs", "3")
    one_line_refusal(fewer, "epochs")


def test_init_from_starts_from_another_runs_weights(tmp_path, single_thread):
    a = tmp_path / "a"
    assert cli("train", *SMALL, "--epochs", "1", "--out", str(a)).returncode == 0
    r = cli("train", *SMALL, "--epochs", "1", "--init-from", str(a), "--seed", "5", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert "starting from the model weights of" in r.stdout and "optimizer and schedule are new" in r.stdout
    best = (a / "checkpoints" / "best.pt").resolve()
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["init_from"] == str(a)
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["init_from"]["path"] == str(best) and s["init_from"]["epoch"] == 1
    # the weights loaded are the other run's, not this seed's own init
    from asge.data import load_data
    cfg = TrainConfig(channels=[8, 8], downsample=[False, True], seed=5).resolved()
    net = build_model(cfg, load_data("digits", None, subset=None, seed=5, device="cpu").info)
    load_init_weights(net, str(a))
    state = load_checkpoint(best)["model"]
    assert all((net.state_dict()[k] == v).all() for k, v in state.items())


def test_init_from_refuses_what_it_cannot_use(tmp_path):
    a = tmp_path / "a"
    assert cli("train", *SMALL, "--epochs", "1", "--out", str(a)).returncode == 0
    one_line_refusal(cli("train", *SMALL, "--epochs", "1", "--init-from", str(tmp_path / "nope"),
                         "--out", str(tmp_path / "b")), "init_from", "does not exist")
    assert not (tmp_path / "b" / "summary.json").exists()
    one_line_refusal(cli("train", "--channels", "8,16v", "--progress", "none", "--epochs", "1", "--init-from",
                         str(a), "--out", str(tmp_path / "c")), "another configuration")
    assert not (tmp_path / "c" / "summary.json").exists()
