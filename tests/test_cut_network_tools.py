"""The tools around training, on a network cut into modules (resnet20, --split K, --local-loss RULE): bench,
ablate, report, --pipeline, torchrun, --amp bf16, --channels-last and the graphed step's needs, the summary
line; each through the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from asge.cli import main
from asge.config import TrainConfig
from asge.data import DatasetInfo
from asge.runs.build import build_model
from asge.train import Backprop, LocalLearning
from asge.train.graphs import GraphedStep

from test_capture import SYNCS, recorded_steps, rng_state_calls  # noqa: F401  (rng_state_calls: a fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

CUT = ["--model", "resnet20", "--width", "0.25", "--split", "4"]
FAST = ["--dataset", "digits", "--subset", "200", "--batch-size", "50", "--progress", "none", "--device", "cpu"]


def weights(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory, single_thread):
    """resnet20 (width 0.25) cut into 4 modules, asge rule, 2 epochs on 200 digits: the sequential reference."""
    out = tmp_path_factory.mktemp("cut") / "run"
    assert main(["train", *CUT, "--epochs", "2", "--out", str(out), *FAST]) == 0
    return out


# -- the graphed step's needs (--cuda-graphs), checked on the CPU ---------------------------------------------
@pytest.mark.parametrize("rule", ["asge", "cwc", "dgl", "predsim"])
@pytest.mark.parametrize("method", ["asge", "bp"])
def test_cut_network_step_is_capture_ready(method, rule, rng_state_calls):  # noqa: F811
    """tests/test_capture.py's check on resnet20 cut into 4 modules, every rule: over consecutive steps the
    device step dispatches the same operators on the same shapes, with no host sync and no RNG-state call."""
    cfg = TrainConfig.from_dict({"model": "resnet20", "width": 1.25 if rule == "cwc" else 0.5, "split": "4",
                                 "local_loss": rule, "method": method, "lr": 1e-2, "epochs": 1}).resolved()
    torch.manual_seed(0)
    net = build_model(cfg, DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=16))
    m = (LocalLearning if method == "asge" else Backprop)(net, cfg, 10, torch.device("cpu"))
    m.start_epoch(5)
    del rng_state_calls[:]
    (first, second), _ = recorded_steps(m, (3, 16, 16))
    assert len(first) > 100 and first == second
    assert [op for op, *_ in first if op in SYNCS] == []
    assert rng_state_calls == []


def test_graphed_step_of_a_cut_network_with_a_stand_in_graph_equals_eager(stand_in_graph):
    """GraphedStep on resnet20 cut into 4 modules, its CUDA graph stood in for by device_step replayed on the
    static buffers (as tests/test_capture.py does for the VGG blocks): the weights, BatchNorm statistics and
    step statistics of eager training, bit for bit."""
    captures = stand_in_graph

    def run(wrap: bool):
        cfg = TrainConfig.from_dict({"model": "resnet20", "width": 0.25, "split": "4", "lr": 1e-2, "epochs": 1,
                                     "batch_size": 4}).resolved()
        torch.manual_seed(0)
        net = build_model(cfg, DatasetInfo("synthetic", num_classes=10, in_channels=3, image_size=16))
        m = LocalLearning(net, cfg, 10, torch.device("cpu"))
        m.start_epoch(5)
        if wrap:
            m = GraphedStep(m, warmup=2)
        g = torch.Generator().manual_seed(3)
        for step in range(6):
            m.train_step(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g), step)
        return m
    eager, graphed = run(False), run(True)
    assert captures == [2]
    for (name, a), b in zip(eager.net.state_dict().items(), graphed.net.state_dict().values()):
        assert torch.equal(a, b), name
    for k in ("loss_sum", "correct", "first_bad_step"):
        assert torch.equal(getattr(eager, k), getattr(graphed.method, k))


# -- --pipeline and torchrun ----------------------------------------------------------------------------------
def test_two_stage_pipeline_of_a_cut_network_equals_sequential(cut_run, tmp_path):
    """--pipeline 2 (each stage one thread, as the sequential run): the same weights, BatchNorm statistics,
    optimizer states and per-epoch training records, bit for bit."""
    from helpers import same_tensors
    out = tmp_path / "pipe"
    assert main(["train", *CUT, "--epochs", "2", "--pipeline", "2", "--out", str(out), *FAST]) == 0
    assert json.loads((out / "summary.json").read_text())["model"] == "resnet20"
    assert_same_weights(cut_run, out)
    seq, pipe = (torch.load(r / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
                 for r in (cut_run, out))
    assert same_tensors(seq["method"], pipe["method"])
    read = lambda run: [json.loads(line)["train"] for line in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert read(cut_run) == read(out)


def test_one_process_group_of_a_cut_network_equals_sequential(cut_run, tmp_path, monkeypatch):
    """asge train as the one rank of a torchrun group goes through every data-parallel hook (the batch
    slices, the gradient all-reduce, the buffers' broadcast) and changes nothing."""
    from asge.train.distributed import free_port
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "dp"
    assert main(["train", *CUT, "--epochs", "2", "--out", str(out), *FAST]) == 0
    assert_same_weights(cut_run, out)


def test_two_ranks_validate_the_network_rank_0_checkpoints(tmp_path):
    """torchrun with 2 ranks: each rank's BatchNorm layers see only its slice of the batches, so their running
    statistics differ; every rank validates with rank 0's (broadcast after each epoch), so the validation
    accuracies recorded are those of the checkpoint written."""
    from test_distributed import finish, torchrun
    from asge.runs.build import load_run_data
    from asge.runs.directory import RunDir
    from asge.runs.evaluation import evaluate_split, split_subset
    import asge
    out = tmp_path / "dp2"
    p = torchrun(*CUT, "--epochs", "2", "--out", str(out), *FAST)
    _, err = finish(p)
    assert p.returncode == 0, err
    summary = json.loads((out / "summary.json").read_text())
    cfg = RunDir(out).read_config()
    val = split_subset(load_run_data(cfg, torch.device("cpu")).val, cfg.val_subset)
    again = evaluate_split(asge.load(out), val, 256, torch.device("cpu"))      # best.pt, in one process
    assert again["block_acc"] == summary["block_val_accuracy"]
    assert again["fusion_acc"] == summary["val_accuracy"]["fusion"]


# -- --amp bf16 and --channels-last ---------------------------------------------------------------------------
@pytest.mark.parametrize("flags, tolerance", [(["--amp", "bf16"], 0.1), (["--channels-last"], 1e-3)])
def test_amp_and_channels_last_train_a_cut_network(cut_run, tmp_path, flags, tolerance):
    """The same run in bf16 (its convolutions round otherwise: other weights, near the float32 run's) or in
    the channels_last memory format (the same arithmetic in another order: float32 rounding apart)."""
    out = tmp_path / "run"
    assert main(["train", *CUT, "--epochs", "2", "--out", str(out), *FAST, *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["modules"]) == 4 and all(0 <= a <= 100 for a in summary["test_accuracy"].values())
    mine, reference = weights(out), weights(cut_run)
    floats = [k for k in mine if mine[k].is_floating_point()]
    assert all(mine[k].dtype == torch.float32 and torch.isfinite(mine[k]).all() for k in floats)
    assert all(torch.allclose(mine[k], reference[k], rtol=0, atol=tolerance) for k in floats)
    if "--amp" in flags:
        assert not all(torch.equal(mine[k], reference[k]) for k in floats)


# -- the end-of-run summary -----------------------------------------------------------------------------------
def test_the_summary_names_the_cut_network_its_modules_and_rule(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *CUT[:-1], "3", "--local-loss", "dgl", "--epochs", "1", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "resnet20 cut into 3 modules (dgl rule) on digits, channels " in printed and "preset" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "3" and summary["local_loss"] == "dgl" and len(summary["modules"]) == 3
    preset = tmp_path / "preset"
    assert main(["train", "--model", "digits", "--width", "0.25", "--epochs", "1", "--out", str(preset), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "digits preset on digits, channels 8, 16, 16, 32, 32" in printed and "cut into" not in printed
    grouped = tmp_path / "grouped"
    assert main(["train", "--model", "digits", "--width", "0.25", "--split", "2", "--epochs", "1", "--out",
                 str(grouped), *FAST]) == 0
    assert "digits preset cut into 2 modules (asge rule) on digits" in capsys.readouterr().out


# -- asge report ----------------------------------------------------------------------------------------------
def test_report_shows_the_model_its_modules_and_rule(cut_run, tmp_path):
    """The runs table names the model, its modules and rule; the modules table gives each module's units,
    output shape, parameters, MACs and head share from summary.json. A run whose summary predates them
    (no modules, split or local_loss) still renders, its modules counted by its blocks."""
    import shutil
    from test_report import table_rows
    old = tmp_path / "old"
    shutil.copytree(cut_run, old)
    s = json.loads((old / "summary.json").read_text())
    for key in ("modules", "split", "local_loss"):
        s.pop(key)
    (old / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "report"
    assert main(["report", str(cut_run), str(old), "--labels", "CUT,OLD", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    runs = {row[0]: dict(zip(table_rows(md, "Runs")[0], row)) for row in table_rows(md, "Runs")[1:]}
    assert runs["CUT"]["model (channels)"] == "resnet20 (4, 8, 8, 16)"
    assert runs["CUT"]["modules"] == "4" and runs["CUT"]["local rule"] == "asge"
    assert runs["OLD"]["modules"] == "4" and runs["OLD"]["local rule"] == "asge"     # from its config.yaml
    modules = table_rows(md, "Modules")
    assert modules[0] == ["run", "module", "units", "output shape (C × H × W)", "parameters", "MACs per image",
                          "head share"]
    recorded = json.loads((cut_run / "summary.json").read_text())["modules"]
    assert [row[0] for row in modules[1:]] == ["CUT"] * 4                      # the old run has none
    for row, m in zip(modules[1:], recorded):
        units = str(m["units"][0]) if m["units"][0] == m["units"][1] else f"{m['units'][0]}–{m['units'][1]}"
        assert row[2:] == [units, " × ".join(map(str, m["out_shape"])), f"{m['parameters']:,}", f"{m['macs']:,}",
                           f"{100 * m['head_macs_ratio']:.2f}%"]
    assert "<h2>Modules</h2>" in (out / "report.html").read_text()


# -- asge bench -----------------------------------------------------------------------------------------------
def test_bench_times_the_cut_network_against_backprop_on_it_for_each_split(tmp_path, capsys):
    """--split 2 4: a row each, resnet20 cut into that many modules (each its own dgl rule) against backprop
    on the same network: images/s of both, the bytes saved for backward (ASGE: the largest module's graph)."""
    import re
    out = tmp_path / "bench"
    assert main(["bench", "--model", "resnet20", "--width", "0.25", "--split", "2", "4", "--local-loss", "dgl",
                 "--batch-size", "16", "--steps", "1", "--warmup", "1", "--chunk", "1", "--device", "cpu",
                 "--no-matmul-peak", "--out", str(out)]) == 0
    two, four = json.loads((out / "bench.json").read_text())["results"]
    for r, k in ((two, 2), (four, 4)):
        assert (r["model"], r["split"], r["local_loss"], r["modules"]) == ("resnet20", str(k), "dgl", k)
        assert len(r["channels"]) == k and len(r["asge_block_saved_bytes"]) == k + 1     # the modules, the heads
        assert all(v > 0 for v in r["images_per_second"].values())
        saved = r["saved_activation_bytes"]
        assert 0 < saved["asge"] < saved["bp"] and r["memory_ratio"] == saved["asge"] / saved["bp"]
        assert r["train_flops_per_image"]["asge"] < r["train_flops_per_image"]["bp"]
    assert two["saved_activation_bytes"]["bp"] == four["saved_activation_bytes"]["bp"]   # one network
    assert four["saved_activation_bytes"]["asge"] < two["saved_activation_bytes"]["asge"]
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.startswith("resnet20 ") and "width" not in line]
    assert [row[:4] for row in rows] == [["resnet20", "0.25", "2", "dgl"], ["resnet20", "0.25", "4", "dgl"]]
    assert re.search(r"\bK\b", printed) and "rule" in printed
    assert main(["bench", "--model", "resnet20", "--split", "2", "99", "--device", "cpu",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot cut 10 units into 99 modules" in err and not (tmp_path / "bad").exists()


# -- asge ablate ----------------------------------------------------------------------------------------------
def test_ablate_grid_over_splits_and_rules(tmp_path, capsys):
    """--splits 2,4 --losses asge,dgl on resnet20: four ordinary runs (split<K>-<rule>/), the table's rows with
    the split and rule of each; the same command again reads them back; refusals in one line."""
    from test_ablate import read_csv
    out = tmp_path / "abl"
    args = ["ablate", "--model", "resnet20", "--width", "0.25", "--splits", "2,4", "--losses", "asge,dgl",
            "--epochs", "1", "--out", str(out), *FAST]
    assert main(args) == 0
    table = read_csv(out / "ablation.csv")
    assert [(r["setting"], r["split"], r["local_loss"], r["status"]) for r in table] == [
        ("split2-asge", "2", "asge", "trained"), ("split2-dgl", "2", "dgl", "trained"),
        ("split4-asge", "4", "asge", "trained"), ("split4-dgl", "4", "dgl", "trained")]
    for r in table:
        summary = json.loads((out / r["setting"] / "summary.json").read_text())
        assert (summary["model"], summary["split"], summary["local_loss"]) == ("resnet20", r["split"], r["local_loss"])
        assert len(summary["modules"]) == len(r["block_test_accuracy"].split()) == int(r["split"])
        assert float(r["fusion"]) == pytest.approx(summary["test_accuracy"]["fusion"], abs=1e-3)
    md = (out / "ablation.md").read_text()
    assert "# Ablation: splits and local rules" in md and "reference setting `split2-asge`" in md
    assert "| setting | split | rule | fusion % |" in md and "| pool |" not in md
    assert "| split4-dgl | 4 | dgl |" in capsys.readouterr().out
    assert main(args) == 0
    assert all(r["status"] == "reused" for r in read_csv(out / "ablation.csv"))
    capsys.readouterr()
    for bad, message in ((["--losses", "asge,dgll"], "unknown local_loss 'dgll' in --losses; valid: asge, cwc, dgl"),
                         (["--pools", "rms,max"], "--pool applies to the VGG presets' blocks"),
                         (["--splits", "2,x"], "split: expected a number of modules")):
        try:
            code = main(["ablate", "--model", "resnet20", *bad, "--epochs", "1", "--out", str(tmp_path / "bad"),
                         *FAST])
        except SystemExit as e:          # refused by the parser
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "bad").exists()


def test_ablate_crosses_pools_with_rules_on_vgg_blocks(tmp_path, capsys):
    """A VGG network's blocks keep their pools: --pools rms,max --grid pool --losses asge,predsim trains the
    four settings <pool>-none-<rule>/ and the table shows pool, context and rule."""
    from test_ablate import read_csv
    out = tmp_path / "abl"
    assert main(["ablate", "--channels", "8v,8", "--grid", "pool", "--pools", "rms,max", "--losses", "asge,predsim",
                 "--epochs", "1", "--out", str(out), *FAST]) == 0
    table = read_csv(out / "ablation.csv")
    assert [(r["setting"], r["pool"], r["local_loss"], r["split"]) for r in table] == [
        ("rms-none-asge", "rms", "asge", ""), ("rms-none-predsim", "rms", "predsim", ""),
        ("max-none-asge", "max", "asge", ""), ("max-none-predsim", "max", "predsim", "")]
    assert all(r["status"] == "trained" for r in table)
    assert json.loads((out / "max-none-predsim" / "summary.json").read_text())["local_loss"] == "predsim"
    assert "| setting | pool | context | rule | fusion % |" in (out / "ablation.md").read_text()
