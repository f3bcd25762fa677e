"""Using a trained run: asge.load, asge predict, asge export (TorchScript, ONNX, safetensors), net.best_block."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import asge
from asge.cli import main
from asge.config import TrainConfig
from asge.data import load_data
from asge.errors import CheckpointError
from asge.use.evaluate import evaluate_run
from asge.train import fit

STRATEGIES = ("best", "fusion", "last")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, single_thread):
    """A small ASGE run on digits (3 blocks, 3 epochs: a few seconds)."""
    out = tmp_path_factory.mktemp("use") / "run"
    fit(TrainConfig(dataset="digits", channels=[16, 32, 32], downsample=[False, True, False], epochs=3,
                    out=str(out), progress="none", device="cpu"), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def test_images(tmp_path_factory, run_dir):
    """The digits test split written as 8-bit PNG files, ``<index>_<label>.png``. Digits' values 0..16 are
    written as 0..240 (x 15): exact in 8 bits and the same image up to scale, which the per-image RMS
    normalisation removes (x 255/16 would round, and can flip a borderline prediction)."""
    folder = tmp_path_factory.mktemp("digits-png")
    test = load_data("digits").test
    images = (test.images * 15).to(torch.uint8)[:, 0].numpy()
    for i, (img, label) in enumerate(zip(images, test.labels.tolist())):
        Image.fromarray(img).save(folder / f"{i:03d}_{label}.png")
    return folder


def test_best_block_is_a_plain_assignment():
    net = asge.ASGENet.from_preset("digits", in_channels=1, num_classes=10)
    net.best_block = 3
    assert int(net.best_block) == 3 and int(net.state_dict()["best_block"]) == 3
    assert net.predict(torch.randn(2, 1, 8, 8), strategy="best").shape == (2, 10)
    with pytest.raises(ValueError, match="best_block must be 1..5"):
        net.best_block = 6


def test_load_run_directory(run_dir):
    net = asge.load(run_dir)
    assert not net.training
    assert net.classes == tuple(str(i) for i in range(10))
    assert int(net.best_block) == json.loads((run_dir / "summary.json").read_text())["best_block"]
    x = net.preprocess([np.zeros((8, 8), np.uint8), np.full((20, 30, 3), 200, np.uint8)])
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    assert net.predict(x, strategy="best").shape == (2, 10)


def test_preprocess_takes_paths_pil_and_arrays_alike(run_dir, test_images):
    net = asge.load(run_dir)
    path = sorted(test_images.iterdir())[0]
    pil = Image.open(path)
    array = np.asarray(pil)
    a, b, c = net.preprocess(str(path)), net.preprocess(pil), net.preprocess(array)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.allclose(a.square().mean(), torch.tensor(1.0), atol=1e-6)   # each image divided by its RMS


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_predict_on_written_test_images_agrees_with_eval(capsys, run_dir, test_images, strategy):
    assert main(["predict", str(run_dir), str(test_images), "--strategy", strategy, "--format", "json",
                 "--batch-size", "100"]) == 0
    results = json.loads(capsys.readouterr().out)
    predicted = [r["predictions"][0]["class"] for r in results]
    labels = [r["path"].rsplit("_", 1)[1].split(".")[0] for r in results]
    assert len(results) == 360
    accuracy = 100.0 * sum(p == y for p, y in zip(predicted, labels)) / len(results)
    assert accuracy == pytest.approx(evaluate_run(str(run_dir), strategy=strategy, device="cpu")[strategy], abs=1e-9)
    net, (x, _) = asge.load(run_dir), next(load_data("digits").test.batches(360, shuffle=False, augment=False,
                                                                             seed=0, device="cpu"))
    with torch.no_grad():                                                  # and image by image
        assert predicted == [net.classes[i] for i in net.predict(x, strategy).argmax(1).tolist()]


def test_predict_formats_and_top_k(capsys, run_dir, test_images):
    files = [str(p) for p in sorted(test_images.iterdir())[:3]]
    assert main(["predict", str(run_dir), *files, "--top-k", "3", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "path,rank,class,probability" and len(rows) == 1 + 3 * 3
    probs = [float(r.split(",")[3]) for r in rows[1:4]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert main(["predict", str(run_dir), files[0], "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(files[0]) and line.count("(") == 2


def test_predict_names_unreadable_files_and_predicts_the_others(capsys, run_dir, test_images, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    good = sorted(test_images.iterdir())[0]
    Image.open(good).convert("RGB").resize((40, 30)).save(tmp_path / "colour.jpg")     # any size, colour
    code = main(["predict", str(run_dir), str(tmp_path), str(tmp_path / "missing.png"), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert [r["path"] for r in json.loads(out)] == [str(tmp_path / "colour.jpg")]
    assert "broken.png" in err and "missing.png" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("argv, message", [
    (["predict", "nowhere", "x.png"], "neither a run directory nor a .safetensors file"),
    (["predict", "RUN", "x.png", "--strategy", "middle"], "valid: fusion, last, best"),
    (["export", "RUN", "--format", "torchscript", "--strategy", "middle"], "valid: fusion, last, best"),
])
def test_bad_run_or_option_is_one_line_exit_2(capsys, run_dir, argv, message):
    assert main([str(run_dir) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def _exported_scores(path, fmt, x):
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    ort = pytest.importorskip("onnxruntime")
    return torch.from_numpy(ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0])


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exported_graph_gives_pytorch_scores(capsys, run_dir, test_images, tmp_path, fmt, strategy):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    out = tmp_path / f"model.{fmt}"
    assert main(["export", str(run_dir), "--format", fmt, "--strategy", strategy, "--out", str(out)]) == 0
    net = asge.load(run_dir)
    x = net.preprocess(sorted(test_images.iterdir())[:13])          # a batch size other than the traced one
    with torch.no_grad():
        want = net.predict(x, strategy)
    torch.testing.assert_close(_exported_scores(out, fmt, x), want, atol=1e-4, rtol=0)
    card = (tmp_path / f"model.{fmt}.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{summary['test_accuracy'][strategy]:.2f}%" in card and "How to load" in card


def test_best_graph_holds_only_blocks_up_to_l_star(run_dir, tmp_path):
    from asge.use.export import InferenceGraph
    net = asge.load(run_dir)
    net.best_block = 2
    graph = InferenceGraph(net, "best")
    assert len(graph.blocks) == 2 and not any(k.startswith("net.") for k in graph.state_dict())


def test_safetensors_round_trip_is_bit_exact(capsys, run_dir, test_images, tmp_path):
    out = tmp_path / "model.safetensors"
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(out)]) == 0
    a, b = asge.load(run_dir), asge.load(out)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert b.classes == a.classes and b.config == a.config and b.preprocessing == a.preprocessing
    assert b.summary["test_accuracy"] == a.summary["test_accuracy"]
    x = a.preprocess(sorted(test_images.iterdir())[:8])
    for strategy in STRATEGIES:
        assert torch.equal(a.predict(x, strategy), b.predict(x, strategy))
    assert (tmp_path / "model.safetensors.md").is_file()
    assert main(["predict", str(out), str(sorted(test_images.iterdir())[0])]) == 0


def test_foreign_or_damaged_safetensors_is_refused(capsys, tmp_path):
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not one written by `asge export`"):
        asge.load(tmp_path / "other.safetensors")
    assert main(["predict", str(tmp_path / "bad.safetensors"), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "damaged or not a safetensors file" in err and len(err.strip().splitlines()) == 1


def test_backprop_run_predicts_and_exports_by_last_only(capsys, tmp_path, test_images, single_thread):
    run = tmp_path / "bp"
    fit(TrainConfig(dataset="digits", channels=[8, 16], downsample=[True, False], epochs=1, method="bp",
                    out=str(run), progress="none", device="cpu"), log=lambda m: None)
    assert main(["predict", str(run), str(sorted(test_images.iterdir())[0])]) == 0    # default: last
    assert main(["export", str(run), "--format", "torchscript", "--strategy", "best"]) == 2
    assert "only has the 'last' strategy" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert (run / "export" / "model-last.pt").is_file() and (run / "export" / "model-last.pt.md").is_file()


def test_class_names_travel_with_the_run(capsys, run_dir, tmp_path):
    """Recorded at training time (summary.json, best.pt), shown by eval, predict (above) and the report."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"]["classes"] == [str(i) for i in range(10)]
    assert torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["data"] == summary["data"]
    assert main(["eval", str(run_dir), "--per-class", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "classes (10): 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in out
    rows = out.split("test accuracy per class (%):")[1].strip().splitlines()
    assert rows[0].split() == ["class", "fusion", "last", "best"] and [r.split()[0] for r in rows[1:]] == \
        [str(i) for i in range(10)]
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert "10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in (tmp_path / "report" / "report.md").read_text()


def test_center_crop_preprocessing_is_the_folder_datasets_evaluation(tmp_path):
    """ImageFolder/ImageNet runs: asge predict's preprocessing gives bitwise the test split's batches."""
    from asge.data import FolderSplit
    from asge.data.preprocess import Preprocessing
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 30), (17, 50), (24, 24)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    x, _ = next(FolderSplit([(p, 0) for p in paths], 16, num_workers=0).batches(
        8, shuffle=False, augment=False, seed=0, device="cpu"))
    assert torch.equal(Preprocessing(16, 3, "center-crop")(paths), x)
