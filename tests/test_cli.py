"""The asge command end to end on digits, config files, and the bad-input messages (exit 2, no traceback)."""
import json
import os
import subprocess
import sys

import pytest

from asge.cli import main

SMALL = ["--channels", "8,16v,16", "--subset", "300", "--batch-size", "64", "--progress", "none"]


def test_train_and_eval_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--seed", "3", *SMALL]) == 0
    text = capsys.readouterr().out
    rows = {line.split("  ")[1].strip(): line for line in text.splitlines() if line.startswith("  ")
            and "  " in line[2:]}
    assert {"headline", "strategies", "per block", "l*", "parameters", "seconds", "recipe", "method"} <= set(rows)
    assert "1: " in rows["per block"] and "fusion" in rows["strategies"] and "block " in rows["l*"]
    assert "{'" not in text and "2 epochs" in rows["headline"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["seed"] == 3
    assert main(["eval", str(out), "--strategy", "best"]) == 0
    text = capsys.readouterr().out
    assert f"best: {summary['test_accuracy']['best']:.2f}%" in text


def test_yaml_config_with_flag_override(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("dataset: digits\nepochs: 1\npool: max\nnorm: rms\nalpha: 0.5\nlr: 0.003\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--norm", "none", "--out", str(out), *SMALL]) == 0
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["pool"], saved["norm"], saved["alpha"], saved["lr"], saved["epochs"]) == ("max", "none", 0.5,
                                                                                           0.003, 1)


def test_resume_flag_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--progress", "none"]) == 0   # config from the run


@pytest.mark.parametrize("args,message", [
    (["--dataset", "svhn"], "valid: digits, mnist, fashion-mnist"),
    (["--model", "resnet"], "valid are resnet20, resnet32"),
    (["--model", "vgg9"], "valid: vgg8, vgg11, quick, digits, resnetN"),
    (["--pool", "median"], "valid: avg, max, rms"),
    (["--norm", "batch"], "valid: layer, none, rms"),
    (["--method", "hebb"], "valid: asge, bp"),
    (["--dataset", "mnist", "--data-root", "{tmp}/nothing"], "{tmp}/nothing"),
    (["--dataset", "cifar10", "--data-root", "{tmp}"], "cifar-10-batches-py"),
])
def test_bad_input_exits_2_with_message(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-m", "asge", "train", "--out", str(tmp_path / "r"), "--epochs", "1",
                        *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert message.replace("{tmp}", str(tmp_path)) in p.stderr


def test_eval_of_a_non_run_is_explained(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not an asge run directory" in capsys.readouterr().err


def test_damaged_best_checkpoint_is_explained(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    (out / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(out)]) == 2
    assert "damaged" in capsys.readouterr().err
