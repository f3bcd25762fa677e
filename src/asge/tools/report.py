"""``asge report``: plots, report.md and a self-contained report.html from one or more finished runs.

    asge report RUN_DIR [RUN_DIR ...] [--out DIR] [--labels a,b] [--reference LABEL] [--force]

Each RUN_DIR must be a finished run (config.yaml and summary.json; metrics.jsonl gives the curves).
The output directory (default: ``RUN_DIR/report`` for one run, ``./report`` for several) receives

    val_blocks.png     per-block validation accuracy over epochs, a panel per ASGE run
    test_by_block.png  final per-block test accuracy by depth; backprop runs as horizontal reference lines
    strategies.png     test accuracy of every strategy (fusion, last, best), grouped per run
    val_headline.png   each run's headline validation curve (fusion for ASGE, last for bp) on one plot
                       (several runs, or runs without per-block curves)
    speed.png          training time and throughput per run (several runs)
    report.md          tables (accuracy per strategy, l*; the runs: model, modules, local rule, parameters,
                       time, images/s; each module's units, shape, parameters, MACs and head share) and
                       the plots by relative path
    report.html        the same tables with the plots inlined as data URIs: one file to send or open

The comparison at the top of report.md and report.html is one line per pair of runs: every run that is
not backprop against every backprop run, or, with ``--reference LABEL``, every other run against that one
(:func:`asge.tools.report_html.comparison_lines`); it does not depend on the order the runs are given in.

``make_report(run_dirs, out_dir, labels, reference)`` does the same from Python. A plot that has nothing to show
(no ASGE run for the per-block plots) is not written. Plots are drawn with matplotlib's Agg canvas on
figures of their own, so the caller's pyplot backend and state are left alone.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ..errors import AsgeError
from .report_html import PLOT_TITLES, build_tables, render_html, render_markdown
from .report_plots import (plot_confusion, plot_losses, plot_speed, plot_strategies, plot_test_by_block,
                           plot_val_blocks, plot_val_headline)
from .results import RunResults, read_results
from ..runs.directory import refuse_overwrite


def add_confusion(run: RunResults) -> None:
    """A run whose summary.json predates the recorded test confusion matrix: compute it from its best
    checkpoint on the test split (``asge eval --per-class``'s code), for up to 100 classes. A run whose data
    or checkpoint cannot be read is left without one (the report says so)."""
    classes = (run.summary.get("data") or {}).get("classes") or []
    if "test_confusion" in run.summary or not 0 < len(classes) <= 100:
        return
    from ..use.evaluate import evaluate_run
    try:
        results = evaluate_run(str(run.path), strategy=run.headline, device="cpu", per_class=True)
    except Exception:                     # no data here, or no checkpoint: the report goes without it
        return
    run.summary = dict(run.summary, test_confusion={run.headline: results["confusion"][run.headline]})


def parse_labels(text: Optional[str], count: int) -> Optional[list[str]]:
    """``"a,b"`` -> ["a", "b"]; the number must match the number of runs."""
    if text is None:
        return None
    labels = [s.strip() for s in text.split(",")]
    if len(labels) != count or not all(labels):
        raise ValueError(f"--labels needs {count} non-empty comma-separated label(s), one per run, got {text!r}")
    return labels


def unique_labels(labels: list[str]) -> list[str]:
    """Labels made distinct by appending #2, #3 ... to repeats (legends must tell runs apart)."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def check_distinct_runs(run_dirs: Sequence[str | Path]) -> None:
    """A ValueError, one line, when one run directory is given twice (under any spelling of its path)."""
    seen: dict[Path, str] = {}
    for p in run_dirs:
        key = Path(p).resolve()
        if key in seen:
            same = f" (as {seen[key]} and {p})" if str(seen[key]) != str(p) else ""
            raise ValueError(f"the run {p} is given twice{same}: give each run once")
        seen[key] = str(p)


def report_files(out: Path) -> list[Path]:
    """The files of a report in ``out`` that exist now (what writing a report there would replace)."""
    names = ["report.md", "report.html", *(f"{key}.png" for key in PLOT_TITLES)]
    return [out / n for n in names if (out / n).exists()]


def run_labels(run_dirs: Sequence[str | Path], labels: Optional[Sequence[str]] = None) -> list[str]:
    """The runs' labels as the report shows them: ``labels`` or the directory names, repeats numbered."""
    return unique_labels(list(labels) if labels is not None else [Path(p).resolve().name for p in run_dirs])


def check_reference(reference: Optional[str], labels: Sequence[str]) -> None:
    """A ValueError, one line, when ``reference`` is given and no run has that label."""
    if reference is not None and reference not in labels:
        raise ValueError(f"--reference {reference!r}: no run has that label; the runs' labels are "
                         f"{', '.join(labels)} (set them with --labels)")


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    """``RUN/report`` for one run, ``./report`` for several."""
    return Path(run_dirs[0]) / "report" if len(run_dirs) == 1 else Path("report")


# -- the report -----------------------------------------------------------------------------------------------
def make_report(run_dirs: Sequence[str | Path], out_dir: Optional[str | Path] = None,
                labels: Optional[Sequence[str]] = None, reference: Optional[str] = None) -> dict[str, Path]:
    """Write the plots, report.md and report.html for ``run_dirs`` into ``out_dir``; ``reference``: the label
    of the run every other run is compared with (default: each backprop run).

    Returns the written files by name: the plot keys (``val_blocks``, ``test_by_block``, ``strategies``,
    ``val_headline``, ``speed``; only those that have something to show) plus ``markdown`` and ``html``.
    Raises RunDirError for a path that is not a finished run (nothing is written then), ValueError for a
    wrong number of labels or a ``reference`` no run has, and AsgeError when ``out_dir`` cannot be written.
    From Python, rewriting a report directory replaces its files and removes a plot of the earlier report
    that the new one lacks; ``asge report`` does so only with ``--force`` (:func:`run`).
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("make_report needs at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} label(s) for {len(run_dirs)} run(s): give one label per run")
    check_distinct_runs(run_dirs)
    names = run_labels(run_dirs, labels)
    check_reference(reference, names)
    runs = [read_results(p, label) for p, label in zip(run_dirs, names)]
    for r in runs:
        add_confusion(r)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    if out.exists() and not out.is_dir():
        raise AsgeError(f"the report directory {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _write_report(runs, out, reference)
    except OSError as e:
        raise AsgeError(f"cannot write the report to {out}: {e.strerror or e}") from None


def _write_report(runs: list[RunResults], out: Path, reference: Optional[str] = None) -> dict[str, Path]:
    """Draw the plots and write report.md and report.html into the existing directory ``out``."""
    plots: dict[str, Path] = {}
    several = len(runs) > 1
    for key, draw, wanted in (
            ("val_blocks", plot_val_blocks, True),
            ("test_by_block", plot_test_by_block, True),
            ("strategies", plot_strategies, True),
            ("val_headline", plot_val_headline, several or not any(r.is_local for r in runs)),
            ("losses", plot_losses, True),
            ("confusion", plot_confusion, True),
            ("speed", plot_speed, several)):
        if wanted:
            written = draw(runs, out / f"{key}.png")
            if written is not None:
                plots[key] = written
    for key in PLOT_TITLES.keys() - plots.keys():      # an earlier report's plot that this one does not have
        (out / f"{key}.png").unlink(missing_ok=True)
    tables = build_tables(runs)
    md = out / "report.md"
    md.write_text(render_markdown(runs, tables, plots, reference), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(runs, tables, plots, reference), encoding="utf-8")
    return {**plots, "markdown": md, "html": page}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``asge report`` flags."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN", help="finished run directories, each once")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (default: RUN/report for one run, ./report for several)")
    parser.add_argument("--labels", help="comma-separated names for the runs in plots and tables "
                                         "(default: the directory names)")
    parser.add_argument("--reference", metavar="LABEL",
                        help="compare every other run with the run of this label (default: every run that is "
                             "not backprop with each backprop run)")
    parser.add_argument("--force", action="store_true",
                        help="replace the report already in the output directory (without it, an existing "
                             "report is never overwritten: choose another --out)")


def command(args: argparse.Namespace) -> int:
    """``asge report``: write the report and print the files it wrote."""
    labels = parse_labels(args.labels, len(args.run_dirs))
    check_distinct_runs(args.run_dirs)
    check_reference(args.reference, run_labels(args.run_dirs, labels))
    out = Path(args.out) if args.out else default_out_dir(args.run_dirs)
    refuse_overwrite(out, "a report", report_files(out) if out.is_dir() else [], args.force)
    written = make_report(args.run_dirs, out, labels, args.reference)
    for path in written.values():
        print(path)
    return 0
