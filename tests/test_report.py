"""``asge report``: plots, report.md and report.html from real (tiny) digits runs, and its bad-input errors."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from asge.cli import main
from asge.config import TrainConfig
from asge.errors import RunDirError
from asge.tools.report import make_report
from asge.tools.results import read_results
from asge.runs.directory import RunDir
from asge.train import fit
from test_stats import score_test_interval

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, single_thread) -> dict[str, Path]:
    """Two finished 2-epoch digits runs on 300 images: ASGE and its backprop baseline."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("asge", "bp"):
        out[method] = root / f"digits-{method}"
        fit(TrainConfig(epochs=2, out=str(out[method]), progress="none", subset=300, method=method, device="cpu"),
            log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> dict[str, Path]:
    """The report comparing the two runs, written through the CLI."""
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(runs["asge"]), str(runs["bp"]), "--out", str(out), "--labels", "ASGE,BP"]) == 0
    return {p.name: p for p in out.iterdir()}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def check_png(data: bytes, min_size=(400, 250), max_size=(3000, 2500)) -> tuple[int, int]:
    """Assert ``data`` is a PNG that PIL decodes fully, of a plausible plot size; return (width, height)."""
    from PIL import Image
    assert data[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.format == "PNG"
        w, h = im.size
        assert min_size[0] <= w <= max_size[0] and min_size[1] <= h <= max_size[1], im.size
        # not a blank canvas: a plot has many colours
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20
    return w, h


# -- files ----------------------------------------------------------------------------------------------------
def test_writes_every_plot_and_both_reports(report):
    assert set(report) == {"val_blocks.png", "test_by_block.png", "strategies.png", "val_headline.png",
                           "losses.png", "confusion.png", "speed.png", "report.md", "report.html"}
    for name, path in report.items():
        if name.endswith(".png"):
            check_png(path.read_bytes())


def test_make_report_returns_written_paths_and_single_run_defaults_into_the_run(runs, tmp_path):
    run = tmp_path / "one"
    shutil.copytree(runs["asge"], run)
    written = make_report([run])
    assert set(written) == {"val_blocks", "test_by_block", "strategies", "losses", "confusion", "markdown", "html"}
    assert all(p.parent == run / "report" and p.is_file() for p in written.values())
    # a bp run alone has no per-block plots but its validation curve
    written = make_report([runs["bp"]], tmp_path / "bp")
    assert set(written) == {"strategies", "val_headline", "losses", "confusion", "markdown", "html"}


def test_several_runs_default_to_report_in_the_current_directory(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = make_report([runs["asge"], runs["bp"]])
    assert written["html"].resolve() == (tmp_path / "report" / "report.html").resolve()
    assert (tmp_path / "report" / "speed.png").is_file()
    # rewriting the directory with one run drops the plots only a comparison has
    make_report([runs["asge"]], "report")
    assert not (tmp_path / "report" / "speed.png").exists()
    assert not (tmp_path / "report" / "val_headline.png").exists()


# -- report.md ------------------------------------------------------------------------------------------------
def table_rows(md: str, title: str) -> list[list[str]]:
    """The rows (header first) of the Markdown table under ``## title``."""
    section = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return [rows[0]] + rows[2:]


def test_markdown_tables_hold_the_summary_numbers(report, runs):
    md = report["report.md"].read_text()
    a, b = summary(runs["asge"]), summary(runs["bp"])

    n = sum(map(sum, a["test_confusion"]["fusion"]))       # the test images

    def with_interval(acc: float) -> str:             # the accuracy and its 95% Wilson interval (test_stats)
        low, high = score_test_interval(round(acc * n / 100), n)
        return f"{acc:.2f} ({100 * low:.2f}–{100 * high:.2f})"

    acc = table_rows(md, "Test accuracy by strategy (%)")
    assert acc[0][:5] == ["run", "method", "fusion", "last", "best"] and acc[0][-1] == "test images"
    assert acc[1][:5] == ["ASGE", "asge"] + [with_interval(a["test_accuracy"][k]) for k in ("fusion", "last", "best")]
    assert acc[1][-2].startswith(str(a["best_block"])) and acc[1][-1] == f"{n:,}"
    assert acc[2][:5] == ["BP", "bp", "–", with_interval(b["test_accuracy"]["last"]), "–"]

    info = {row[0]: dict(zip(table_rows(md, "Runs")[0], row)) for row in table_rows(md, "Runs")[1:]}
    assert info["ASGE"]["epochs"] == "2" and info["BP"]["epochs"] == "2"
    assert info["ASGE"]["block parameters"] == f"{a['parameters']['blocks']:,}"
    assert info["ASGE"]["head parameters"] == f"{a['parameters']['fusion'] + a['parameters']['last']:,}"
    assert info["BP"]["head parameters"] == f"{b['parameters']['last']:,}"
    assert info["BP"]["train time (s)"] == f"{b['train_seconds']:.1f}"
    assert info["ASGE"]["images/s"] == f"{a['images_per_second']:.0f}"

    blocks = table_rows(md, "Per-block test accuracy (%)")
    assert blocks[0] == ["run"] + [f"block {i + 1}" for i in range(len(a["block_test_accuracy"]))]
    expected = [with_interval(x) for x in a["block_test_accuracy"]]
    expected[a["best_block"] - 1] += r" \*"
    assert blocks[1] == ["ASGE"] + expected
    assert len(blocks) == 2, "bp runs have no per-block row"


def test_markdown_embeds_the_plots_by_relative_path(report):
    md = report["report.md"].read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(images) == sorted(n for n in report if n.endswith(".png"))
    assert all((report["report.md"].parent / i).is_file() for i in images)


# -- report.html ----------------------------------------------------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictHTML(HTMLParser):
    """Checks that every element is closed in order and collects the <img> sources and all link targets."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[dict] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        for key in ("href", "src"):
            if key in a and tag != "img":
                self.links.append(a[key])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_well_formed_and_self_contained(report, runs):
    page = report["report.html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    parser = StrictHTML()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert parser.links == [], "the page must load nothing"
    assert len(parser.images) == 7
    for img in parser.images:
        assert img["alt"]
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        check_png(base64.b64decode(img["src"][len(prefix):], validate=True))
    text = " ".join(parser.text)
    a = summary(runs["asge"])
    for k in ("fusion", "last", "best"):
        assert f"{a['test_accuracy'][k]:.2f}" in text
    assert f"{summary(runs['bp'])['test_accuracy']['last']:.2f}" in text


def test_html_escapes_labels(runs, tmp_path):
    written = make_report([runs["asge"]], tmp_path, labels=["<b>x&y</b>"])
    page = written["html"].read_text()
    assert "<b>x&y</b>" not in page and "&lt;b&gt;x&amp;y&lt;/b&gt;" in page
    parser = StrictHTML()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    md = written["markdown"].read_text()
    assert r"\<b\>x&y\</b\>" in md


def test_html_renders_in_headless_chromium(report):
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the Python package playwright (pip install playwright)")
    if not CHROMIUM.is_file():
        missing.append(f"a Chromium binary at {CHROMIUM} (Debian package chromium)")
    if missing:
        pytest.skip("browser test needs " + " and ".join(missing))
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url[:60]}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report["report.html"].resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            tables = page.evaluate("document.querySelectorAll('table').length")
            title = page.title()
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert len(images) == 7 and all(ok and w >= 400 and h >= 250 for ok, w, h in images), images
    assert tables == 5          # accuracy, runs, modules, per block, per class
    assert title == "asge report: ASGE, BP"


# -- bad input ------------------------------------------------------------------------------------------------
def test_not_a_run_exits_2_with_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an asge run directory (no config.yaml)" in err


def test_unfinished_run_exits_2(tmp_path, capsys):
    run = tmp_path / "running"
    RunDir(run).create(TrainConfig(epochs=2, out=str(run)))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has not finished (no summary.json yet)" in err
    assert not (run / "report").exists()


def test_missing_path_exits_2(runs, tmp_path, capsys):
    assert main(["report", str(runs["asge"]), str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "r").exists(), "nothing is written when an input is bad"


def test_wrong_number_of_labels_exits_2(runs, tmp_path, capsys):
    assert main(["report", str(runs["asge"]), "--labels", "a,b", "--out", str(tmp_path)]) == 2
    assert "--labels needs 1" in capsys.readouterr().err


def test_damaged_summary_is_a_run_dir_error(runs, tmp_path):
    run = tmp_path / "damaged"
    shutil.copytree(runs["asge"], run)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(RunDirError, match="damaged"):
        read_results(run)


# -- what a lab meeting needs (issue 16 item 18) --------------------------------------------------------------
def test_comparison_line_machine_and_hyperparameters(report, runs):
    a, b = summary(runs["asge"]), summary(runs["bp"])
    md = report["report.md"].read_text()
    gap = b["test_accuracy"]["last"] - a["test_accuracy"]["fusion"]
    lead, behind = ("BP", "ASGE") if gap >= 0 else ("ASGE", "BP")
    assert f"{lead} +{abs(gap):.1f} points over {behind}" in md
    ratio = a["images_per_second"] / b["images_per_second"]
    fast = f"ASGE {ratio:.1f}x" if ratio >= 1 else f"BP {1 / ratio:.1f}x"
    assert f"{fast} faster per training image" in md
    assert f"Speeds measured on: {a['device_name']} (all runs)" in md and a["device_name"] == b["device_name"]
    info = {row[0]: dict(zip(table_rows(md, "Runs")[0], row)) for row in table_rows(md, "Runs")[1:]}
    assert info["ASGE"]["recipe"] == "paper" and info["ASGE"]["subset"] == "300" and info["BP"]["batch"] == "128"
    assert info["ASGE"]["lr (blocks / heads)"] == "0.002 / 0.01" and info["BP"]["epochs"] == "2"
    page = report["report.html"].read_text()
    for text in (md, page):
        assert "ASGE (asge)" not in text and "BP (bp)" not in text       # no label repeated as its method


def test_per_class_table_from_the_recorded_confusion_matrix(report, runs):
    md = report["report.md"].read_text()
    rows = table_rows(md, "Per-class test accuracy (%)")
    assert rows[0] == ["class", "test images", "ASGE (fusion)", "BP (last)"]
    a, b = summary(runs["asge"]), summary(runs["bp"])
    ca, cb = a["test_confusion"]["fusion"], b["test_confusion"]["last"]
    assert [r[0] for r in rows[1:]] == a["data"]["classes"]
    for i, row in enumerate(rows[1:]):
        assert row[1] == str(sum(ca[i]))
        assert row[2] == f"{100 * ca[i][i] / sum(ca[i]):.2f}" and row[3] == f"{100 * cb[i][i] / sum(cb[i]):.2f}"
    # the recorded matrix agrees with the test accuracy (and with asge eval --per-class)
    assert 100 * sum(ca[i][i] for i in range(len(ca))) / sum(map(sum, ca)) == pytest.approx(a["test_accuracy"]["fusion"])


def test_runs_without_a_recorded_confusion_matrix_get_it_from_the_best_checkpoint(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["asge"], old)
    s = summary(old)
    recorded = s.pop("test_confusion")
    (old / "summary.json").write_text(json.dumps(s))
    md = make_report([old], tmp_path / "r", labels=["ASGE"])["markdown"].read_text()
    rows = table_rows(md, "Per-class test accuracy (%)")
    m = recorded["fusion"]
    assert [r[2] for r in rows[1:]] == [f"{100 * m[i][i] / sum(m[i]):.2f}" for i in range(len(m))]


def test_a_summary_that_does_not_say_how_many_images_were_tested_shows_no_interval(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["asge"], old)
    s = summary(old)
    s.pop("test_confusion")
    (old / "summary.json").write_text(json.dumps(s))
    (old / "checkpoints" / "best.pt").unlink()        # no checkpoint to count them from either
    md = make_report([old], tmp_path / "r", labels=["ASGE"])["markdown"].read_text()
    acc = table_rows(md, "Test accuracy by strategy (%)")
    assert acc[1][2:5] == [f"{s['test_accuracy'][k]:.2f}" for k in ("fusion", "last", "best")]
    assert acc[1][-1] == "–"
    blocks = table_rows(md, "Per-block test accuracy (%)")
    assert all("(" not in cell for cell in blocks[1])


# -- the comparison lines (issue 21 item 3) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def three(runs, single_thread) -> dict[str, Path]:
    """The runs fixture's two plus a second ASGE run (max pooling), by label."""
    path = runs["asge"].parent / "digits-asge-max"
    fit(TrainConfig(epochs=2, out=str(path), progress="none", subset=300, pool="max", device="cpu"),
        log=lambda s: None)
    return {"ASGE": runs["asge"], "BP": runs["bp"], "MAX": path}


def comparison(out: Path) -> tuple[list[str], list[str]]:
    """The comparison lines of report.md (bold paragraphs before the machine note) and of report.html."""
    md = (out / "report.md").read_text().split("Speeds measured on", 1)[0]
    page = (out / "report.html").read_text()
    return re.findall(r"^\*\*(.*)\*\*$", md, re.M), re.findall(r'<p class="lead">(.*)</p>', page)


def pair_line(runs: dict[str, Path], a: str, ref: str) -> str:
    """The expected sentence for run ``a`` against ``ref``, from the two summaries."""
    sa, sr = summary(runs[a]), summary(runs[ref])
    acc_a, acc_r = sa["test_accuracy"][sa["headline"]], sr["test_accuracy"][sr["headline"]]
    (lead, sl, al), (behind, sb, ab) = (((ref, sr, acc_r), (a, sa, acc_a)) if acc_r >= acc_a
                                        else ((a, sa, acc_a), (ref, sr, acc_r)))
    ia, ir = sa["images_per_second"], sr["images_per_second"]
    fast, slow, ratio = (a, ref, ia / ir) if ia >= ir else (ref, a, ir / ia)
    return (f"{lead} +{abs(acc_r - acc_a):.1f} points over {behind} ({sl['headline']} {al:.2f}% vs "
            f"{sb['headline']} {ab:.2f}% test accuracy); {fast} {ratio:.1f}x faster per training image than "
            f"{slow}.")


@pytest.mark.parametrize("reference", [None, "ASGE"])
def test_comparison_is_every_pair_and_does_not_depend_on_the_order_of_the_runs(three, tmp_path, reference):
    found = []
    for order in (["ASGE", "BP", "MAX"], ["MAX", "BP", "ASGE"]):
        out = tmp_path / "-".join(order)
        args = ["report", *(str(three[k]) for k in order), "--labels", ",".join(order), "--out", str(out)]
        assert main(args + (["--reference", reference] if reference else [])) == 0
        md, page = comparison(out)
        assert [html.unescape(p) for p in page] == [m.replace("\\", "") for m in md]
        found.append(md)
    assert found[0] == found[1]
    pairs = [("ASGE", "BP"), ("MAX", "BP")] if reference is None else [("BP", "ASGE"), ("MAX", "ASGE")]
    assert [m.replace("\\", "") for m in found[0]] == [pair_line(three, a, ref) for a, ref in pairs]


def test_reference_no_run_has_is_refused_in_one_line(three, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(three["ASGE"]), str(three["BP"]), "--labels", "ASGE,BP", "--reference", "Bp",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--reference 'Bp': no run has that label; the runs' labels are ASGE, BP" in err
    assert not out.exists(), "nothing is written"


def test_comparison_names_different_batches_and_bp_modules_have_no_head_share():
    from asge.tools.report_html import comparison_lines, machine_note, modules_table
    from asge.tools.results import RunResults
    module = {"units": [0, 3], "out_shape": [16, 8, 8], "parameters": 10, "macs": 100, "head_macs_ratio": 0.25}
    common = {"device_name": "CPU X", "modules": [module]}
    asge_run = RunResults(Path("a"), "a", {"batch_size": 32, "method": "asge"},
                          {**common, "method": "asge", "headline": "fusion", "test_accuracy": {"fusion": 50.0},
                           "images_per_second": 300.0})
    bp_run = RunResults(Path("b"), "b", {"batch_size": 128, "method": "bp"},
                        {**common, "method": "bp", "headline": "last", "test_accuracy": {"last": 60.0},
                         "images_per_second": 100.0})
    assert comparison_lines([asge_run, bp_run]) == [
        "b +10.0 points over a (last 60.00% vs fusion 50.00% test accuracy); a 3.0x faster per training image "
        "than b (at batch 32 against 128)."]
    assert "asge bench times two methods side by side" in machine_note([asge_run, bp_run])
    rows = modules_table([asge_run, bp_run]).rows
    assert [row[-1] for row in rows] == ["25.00%", "–"]
