"""asge ablate: grids, the CSV/Markdown tables, resuming finished settings, failing settings recorded."""
import csv
import json

import pytest

import asge.train
from asge.tools.ablate import CSV_COLUMNS, grid_settings, options_for, run_ablation, split_context_options
from asge.cli import main
from asge.config import TrainConfig
from asge.errors import AsgeError


pytestmark = pytest.mark.usefixtures("single_thread")


def base(**kw):
    d = dict(dataset="digits", channels=[16, 32], downsample=[True, False], epochs=1, subset=128,
             batch_size=64, progress="none", seed=2)
    d.update(kw)
    return TrainConfig(**d)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grids():
    pools, ctxs = ["rms", "avg", "max"], ["none", "sge", "ge"]
    assert grid_settings(pools, ctxs, "oat") == [("rms", "none"), ("avg", "none"), ("max", "none"),
                                                 ("rms", "sge"), ("rms", "ge")]
    assert grid_settings(pools, ctxs, "pool") == [("rms", "none"), ("avg", "none"), ("max", "none")]
    assert grid_settings(pools, ctxs, "context") == [("rms", "none"), ("rms", "sge"), ("rms", "ge")]
    assert len(grid_settings(pools, ctxs, "full")) == 9
    # The reference is always there (first when the grid lacks it), and it may be another setting.
    assert grid_settings(["avg"], ["sge"], "full") == [("rms", "none"), ("avg", "sge")]
    assert grid_settings(["avg", "max"], ["none", "ge"], "oat", reference=("max", "ge")) == [
        ("avg", "ge"), ("max", "ge"), ("max", "none")]
    with pytest.raises(ValueError, match="valid: oat, pool, context, full"):
        grid_settings(pools, ctxs, "diagonal")


def test_context_options_common_and_per_module():
    common, per = split_context_options({"reduction": 4, "sge:groups": 8, "ge:extent": 2})
    assert common == {"reduction": 4} and per == {"sge": {"groups": 8}, "ge": {"extent": 2}}
    assert options_for("ge", common, per) == {"reduction": 4, "extent": 2}
    assert options_for("none", common, per) == {}
    with pytest.raises(ValueError, match="unknown context 'sse'"):
        split_context_options({"sse:groups": 8})


def test_mini_grid_tables_resume_and_failure(tmp_path, monkeypatch):
    out = tmp_path / "abl"
    logs = []
    # 2 x 2: rms/avg x none/sge, with SGE groups that do not divide the 16 channels: both sge settings fail.
    rows = run_ablation(base(context_options={"sge:groups": 3}), ["rms", "avg"], ["none", "sge"], out,
                        grid="full", log=logs.append)
    assert [r["setting"] for r in rows] == ["rms-none", "rms-sge", "avg-none", "avg-sge"]
    assert [r["status"] for r in rows] == ["trained", "failed", "trained", "failed"]
    for r in rows[1::2]:
        assert "groups=3" in r["error"] and "ValueError" in r["error"]

    table = read_csv(out / "ablation.csv")
    assert list(table[0]) == list(CSV_COLUMNS)
    assert [(r["pool"], r["context"]) for r in table] == [("rms", "none"), ("rms", "sge"), ("avg", "none"),
                                                           ("avg", "sge")]
    for r in (table[0], table[2]):
        for k in ("fusion", "last", "best", "epoch_seconds", "images_per_second"):
            assert 0 <= float(r[k]) and float(r[k]) == float(r[k]), (k, r[k])
        assert 1 <= int(r["best_block"]) <= 2 and int(r["parameters_blocks"]) > 0
        assert len(r["block_test_accuracy"].split()) == 2 and r["error"] == ""
        summary = json.loads((out / r["setting"] / "summary.json").read_text())
        assert float(r["best"]) == pytest.approx(summary["test_accuracy"]["best"], abs=1e-3)
        assert (out / r["setting"] / "metrics.jsonl").is_file()
    assert table[0]["epoch_time_ratio"] == "1.0000" and table[0]["parameters_context"] == "0"
    assert table[1]["fusion"] == "" and "groups=3" in table[1]["error"]

    md = (out / "ablation.md").read_text()
    assert "| setting | pool | context | fusion % | last % | best % | l* |" in md
    for name in ("rms-none", "rms-sge", "avg-none", "avg-sge"):
        assert f"| {name} |" in md
    assert "rms-sge failed: `ValueError" in md and "reference setting `rms-none`" in md

    # Rerun with SGE fixed: the finished settings are read back, not retrained; the failed ones train now.
    stamps = {n: (out / n / "summary.json").stat().st_mtime_ns for n in ("rms-none", "avg-none")}
    trained = []
    real_fit = asge.train.fit

    def counting_fit(cfg, **kw):
        trained.append((cfg.pool, cfg.context, cfg.context_options))
        return real_fit(cfg, **kw)

    monkeypatch.setattr(asge.train, "fit", counting_fit)
    rows = run_ablation(base(context_options={"sge:groups": 4}), ["rms", "avg"], ["none", "sge"], out,
                        grid="full", log=logs.append)
    assert trained == [("rms", "sge", {"groups": 4}), ("avg", "sge", {"groups": 4})]
    assert [r["status"] for r in rows] == ["reused", "trained", "reused", "trained"]
    assert {n: (out / n / "summary.json").stat().st_mtime_ns for n in stamps} == stamps
    assert any("rms-none: finished earlier" in m for m in logs)
    table = read_csv(out / "ablation.csv")
    assert all(r["error"] == "" and r["fusion"] != "" for r in table)
    assert int(table[1]["parameters_context"]) == 2 * 2 * 4      # SGE: gamma and beta per group, 2 blocks

    # Another ablation there (another budget, a smaller grid) would lose the table's results: refused before
    # anything trains, the tables untouched; with force the tables are rewritten, and the finished setting
    # trained with another budget is recorded as failed, not silently reused.
    trained.clear()
    tables = {n: (out / n).read_bytes() for n in ("ablation.csv", "ablation.md")}
    with pytest.raises(AsgeError) as e:
        run_ablation(base(epochs=2, context_options={"sge:groups": 4}), ["rms"], ["none"], out, grid="full",
                     log=logs.append)
    assert str(e.value) == (f"{out} already holds another ablation (ablation.csv has avg-none, avg-sge, rms-sge, "
                            "which this grid lacks; rms-none was trained with another configuration (epochs "
                            "(1 -> 2))); pass --force to replace its tables (no run directory is removed), or "
                            "choose another --out")
    assert trained == [] and {n: (out / n).read_bytes() for n in tables} == tables
    rows = run_ablation(base(epochs=2, context_options={"sge:groups": 4}), ["rms"], ["none"], out, grid="full",
                        log=logs.append, force=True)
    assert trained == [] and rows[0]["status"] == "failed" and "epochs (1 -> 2)" in rows[0]["error"]
    assert (out / "avg-none" / "summary.json").is_file()       # no run directory is removed


def test_cli_one_factor_grid(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["ablate", "--dataset", "digits", "--channels", "16v,32", "--subset", "128", "--batch-size", "64",
                 "--epochs", "1", "--progress", "none", "--pools", "rms,max", "--contexts", "none,ge-minus",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| rms-none | rms | none |" in text and "ablation directory:" in text
    table = read_csv(out / "ablation.csv")
    assert [r["setting"] for r in table] == ["rms-none", "max-none", "rms-ge-minus"]
    assert all(r["status"] == "trained" for r in table)
    assert (out / "ablation.md").is_file() and (out / "max-none" / "config.yaml").is_file()
    assert main(["ablate", "--pools", "median", "--out", str(tmp_path / "bad")]) == 2
    assert "valid: avg, max, rms, soft" in capsys.readouterr().err


def test_seeds_give_mean_and_sd_per_setting(tmp_path, capsys):
    """--seeds 0,1: every setting once per seed (SETTING/seed-S), mean ± sample sd in ablation.md/.csv, each
    seed's row in ablation-seeds.csv; a rerun reads the finished seeds back."""
    import statistics
    out = tmp_path / "abl"
    args = ["ablate", "--dataset", "digits", "--channels", "8v,8", "--subset", "128", "--batch-size", "64",
            "--epochs", "1", "--progress", "none", "--grid", "pool", "--pools", "rms,avg", "--seeds", "0,1",
            "--out", str(out)]
    assert main(args) == 0
    table = read_csv(out / "ablation.csv")
    per_seed = read_csv(out / "ablation-seeds.csv")
    assert [r["setting"] for r in table] == ["rms-none", "avg-none"]
    assert [(r["setting"], r["seed"]) for r in per_seed] == [("rms-none", "0"), ("rms-none", "1"),
                                                            ("avg-none", "0"), ("avg-none", "1")]
    for r in table:
        assert r["seeds"] == "0,1" and r["status"] == "trained"
        for k in ("fusion", "last", "best"):
            values = [json.loads((out / r["setting"] / f"seed-{s}" / "summary.json").read_text())["test_accuracy"][k]
                      for s in (0, 1)]
            assert float(r[k]) == pytest.approx(statistics.mean(values), abs=1e-3)
            assert float(r[f"{k}_sd"]) == pytest.approx(statistics.stdev(values), abs=1e-3)
        seeds = {json.loads((out / r["setting"] / f"seed-{s}" / "config.yaml").read_text().split("seed: ")[1]
                            .split("\n")[0]) for s in (0, 1)}
        assert seeds == {0, 1}
    md = (out / "ablation.md").read_text()
    assert "±" in md and "seeds 0, 1 (mean ± sample sd" in md and "| seeds |" in md
    capsys.readouterr()
    assert main(args) == 0                       # everything finished: read back, not retrained
    assert all(r["status"] == "reused" for r in read_csv(out / "ablation.csv"))
    with pytest.raises(SystemExit) as bad:
        main(["ablate", "--seeds", "0,x", "--out", str(tmp_path / "bad")])
    assert bad.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
