"""Image trees as a user meets them through the CLI: a split folder given as the root, a run without --model,
unreadable files left out with --skip-unreadable, a small validation split said once."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from asge.cli import main

from test_same_pixels import make_tree

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
FAST = ["--epochs", "1", "--batch-size", "16", "--progress", "none", "--device", "cpu", "--num-workers", "0"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asge", *map(str, args)], capture_output=True, text=True, env=ENV)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("trees") / "tree", lambda s, c, i: (32, 32))


def test_a_split_folder_given_as_the_root_gets_did_you_mean(tree, tmp_path):
    r = cli("train", "--dataset", "imagefolder", "--data-root", tree / "train", "--out", tmp_path / "run", *FAST)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert f"{tree / 'train'} itself holds class folders: did you mean --data-root {tree}?" in r.stderr
    assert not (tmp_path / "run").exists()
    flat = tmp_path / "flat"                       # class folders with no train/ above them
    shutil.copytree(tree / "train", flat)
    r = cli("train", "--dataset", "imagefolder", "--data-root", flat, "--out", tmp_path / "run", *FAST)
    assert r.returncode == 2 and f"put them under {flat / 'train'}" in r.stderr


def test_without_model_a_32px_tree_trains_the_quick_preset_and_says_so(tree, tmp_path, capsys, single_thread):
    assert main(["train", "--dataset", "imagefolder", "--data-root", str(tree), "--out", str(tmp_path / "run"),
                 "--subset", "16", *FAST]) == 0
    out = capsys.readouterr().out
    assert "no --model given: training the quick preset, the default for 32x32 images" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == "quick" and summary["channels"] == [32, 64, 64, 128, 128, 128]
    assert "quick preset on imagefolder" in out
    assert main(["train", "--dataset", "imagefolder", "--data-root", str(tree), "--out", str(tmp_path / "custom"),
                 "--channels", "8,16v", *FAST]) == 0
    out = capsys.readouterr().out
    assert "no --model given: the custom channels take the quick preset's defaults (lr, epochs)" in out
    assert "custom channels on imagefolder, channels 8, 16" in out
    assert main(["train", "--out", str(tmp_path / "digits"), "--channels", "8,8v", *FAST]) == 0
    assert "digits preset's defaults" in capsys.readouterr().out


def test_small_validation_split_is_said_once(tree, tmp_path, capsys, single_thread):
    assert main(["train", "--dataset", "imagefolder", "--data-root", str(tree), "--out", str(tmp_path / "run"),
                 "--channels", "8,16v", *FAST]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "validation images" in line]
    assert notes == ["note: the best epoch and l* are chosen on 10 validation images (under 500): expect them to "
                     "be noisy (the summary table and asge report give 95% intervals of the test accuracies)"]


def test_skip_unreadable_leaves_files_out_counts_and_lists_them(tmp_path, capsys, single_thread):
    root = make_tree(tmp_path / "tree", lambda s, c, i: (32, 32))
    (root / "train" / "ant" / "zz-not-an-image.jpg").write_bytes(b"this is not a JPEG")
    good = (root / "test" / "bee" / "000.jpg").read_bytes()
    (root / "test" / "bee" / "zz-truncated.jpg").write_bytes(good[:len(good) // 2])   # the header reads
    r = cli("train", "--dataset", "imagefolder", "--data-root", root, "--out", tmp_path / "refused", "--channels",
            "8,16v", *FAST)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "zz-not-an-image.jpg" in r.stderr and "--skip-unreadable leaves such files out" in r.stderr
    assert main(["train", "--dataset", "imagefolder", "--data-root", str(root), "--out", str(tmp_path / "run"),
                 "--channels", "8,16v", "--skip-unreadable", *FAST]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "(--skip-unreadable)" in line]
    assert len(said) == 1 and said[0].startswith("left out 2 unreadable image file(s) (--skip-unreadable)")
    listed = (tmp_path / "run" / "unreadable.txt").read_text().splitlines()
    assert sorted(line.split(": ", 1)[0] for line in listed) == sorted(
        [str(root / "train" / "ant" / "zz-not-an-image.jpg"), str(root / "test" / "bee" / "zz-truncated.jpg")])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["unreadable_images"] == 2
    assert summary["provenance"]["data"]["images"]["test"] == 4 * 6      # the truncated file left out
    r = cli("train", "--dataset", "digits", "--skip-unreadable", "--out", tmp_path / "digits", *FAST)
    assert r.returncode == 2 and "skip_unreadable applies to image folders only" in r.stderr
