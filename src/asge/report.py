"""``asge report``: plots, report.md and a self-contained report.html from one or more finished runs.

    asge report RUN_DIR [RUN_DIR ...] [--out DIR] [--labels a,b]

Each RUN_DIR must be a finished run (config.yaml and summary.json; metrics.jsonl gives the curves).
The output directory (default: ``RUN_DIR/report`` for one run, ``./report`` for several) receives

    val_blocks.png     per-block validation accuracy over epochs, a panel per ASGE run
    test_by_block.png  final per-block test accuracy by depth; backprop runs as horizontal reference lines
    strategies.png     test accuracy of every strategy (fusion, last, best), grouped per run
    val_headline.png   each run's headline validation curve (fusion for ASGE, last for bp) on one plot
                       (several runs, or runs without per-block curves)
    speed.png          training time and throughput per run (several runs)
    report.md          tables (accuracy per strategy, l*, parameters, time, images/s) and the plots by
                       relative path
    report.html        the same tables with the plots inlined as data URIs: one file to send or open

``make_report(run_dirs, out_dir, labels)`` does the same from Python. A plot that has nothing to show
(no ASGE run for the per-block plots) is not written. Plots are drawn with matplotlib's Agg canvas on
figures of their own, so the caller's pyplot backend and state are left alone.
"""
from __future__ import annotations

import argparse
import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .errors import AsgeError, RunDirError
from .run import RunDir

STRATEGY_ORDER = ("fusion", "last", "best")
STRATEGY_COLORS = {"fusion": "#1f77b4", "last": "#ff7f0e", "best": "#2ca02c"}
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
              "#7f7f7f", "#bcbd22")
DPI = 110


# -- loading runs ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A finished run as the report sees it: its label, config, summary and per-epoch records."""
    path: Path
    label: str
    config: dict
    summary: dict
    metrics: list[dict] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.summary.get("method", self.config.get("method", "asge")))

    @property
    def is_local(self) -> bool:
        """True when the run has per-block accuracies (ASGE); False for the backprop baseline."""
        return bool(self.summary.get("block_test_accuracy"))

    @property
    def headline(self) -> str:
        """The strategy the run selects its checkpoint by: fusion for ASGE, last for bp."""
        return "fusion" if "fusion" in self.summary.get("test_accuracy", {}) else "last"

    @property
    def strategies(self) -> list[str]:
        names = list(self.summary.get("test_accuracy", {}))
        return [s for s in STRATEGY_ORDER if s in names] + [s for s in names if s not in STRATEGY_ORDER]

    def val_curve(self, strategy: str) -> tuple[list[int], list[float]]:
        """(epochs, validation accuracy of ``strategy``) from metrics.jsonl."""
        pts = [(r["epoch"], r["val_strategy"][strategy]) for r in self.metrics
               if strategy in r.get("val_strategy", {})]
        return [e for e, _ in pts], [a for _, a in pts]

    def block_val_curves(self) -> tuple[list[int], list[list[float]]]:
        """(epochs, one list of validation accuracies per block) from metrics.jsonl (ASGE only)."""
        records = [r for r in self.metrics if "block_loss" in r.get("train", {}) and r.get("val", {}).get("block_acc")]
        if not records:
            return [], []
        L = min(len(r["val"]["block_acc"]) for r in records)
        return [r["epoch"] for r in records], [[r["val"]["block_acc"][i] for r in records] for i in range(L)]


def load_run(path: str | Path, label: Optional[str] = None) -> Run:
    """Read a finished run directory; RunDirError (one line) when it is missing, not a run, or unfinished."""
    import yaml
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path} does not exist")
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory (expected an asge run directory)")
    run = RunDir(path)
    try:
        summary = run.read_summary()
        config = yaml.safe_load(run.config_file.read_text()) or {}
        metrics = run.read_metrics()
    except RunDirError:
        raise
    except (ValueError, yaml.YAMLError) as e:     # json.JSONDecodeError is a ValueError
        raise RunDirError(f"{path} holds a damaged run file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160]})") from None
    except OSError as e:
        raise RunDirError(f"cannot read the run {path}: {e.strerror or e}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("test_accuracy"), dict):
        raise RunDirError(f"{path}/summary.json is not an asge run summary (no test_accuracy)")
    if not isinstance(config, dict):
        raise RunDirError(f"{path}/config.yaml is not an asge run configuration")
    metrics = sorted((r for r in metrics if isinstance(r, dict) and isinstance(r.get("epoch"), int)),
                     key=lambda r: r["epoch"])
    return Run(path=path, label=label or path.resolve().name, config=config, summary=summary, metrics=metrics)


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


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    """``RUN/report`` for one run, ``./report`` for several."""
    return Path(run_dirs[0]) / "report" if len(run_dirs) == 1 else Path("report")


# -- plots ----------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path


def _epoch_axis(ax, epochs: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and min(epochs) == max(epochs):
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)


def _acc_limits(ax, values: Sequence[float]) -> None:
    """y from a round number below the data to just above 100 at most."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        ax.set_ylim(0, 100)
        return
    low = max(0.0, math.floor((min(finite) - 3.0) / 10.0) * 10.0)
    high = min(101.0, max(finite) + 4.0)
    ax.set_ylim(low, max(high, low + 10.0))


def _legend_below(ax) -> None:
    """The legend under the axes, outside the data, in two columns when it is long."""
    n = len(ax.get_legend_handles_labels()[0])
    ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2 if n > 2 else 1,
              frameon=False)


def _marker(n_points: int) -> Optional[str]:
    return "o" if n_points <= 30 else None


def plot_val_blocks(runs: list[Run], path: Path) -> Optional[Path]:
    """Per-block validation accuracy over epochs, one panel per ASGE run, blocks coloured by depth."""
    from matplotlib import colormaps
    local = [r for r in runs if r.is_local and r.block_val_curves()[0]]
    if not local:
        return None
    cols = min(len(local), 3)
    rows = math.ceil(len(local) / cols)
    fig = _figure(6.2 * cols + 0.4, 4.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    values = [a for r in local for c in r.block_val_curves()[1] for a in c]
    for ax, run in zip(axes.flat, local):
        epochs, curves = run.block_val_curves()
        L = len(curves)
        cmap = colormaps["viridis"]
        for i, curve in enumerate(curves):
            color = cmap(0.9 * i / max(L - 1, 1))
            star = " (l*)" if run.summary.get("best_block") == i + 1 else ""
            ax.plot(epochs, curve, color=color, marker=_marker(len(epochs)), markersize=3.5, linewidth=1.8,
                    label=f"block {i + 1}{star}")
        fe, fusion = run.val_curve("fusion")
        if fusion:
            ax.plot(fe, fusion, color="black", linestyle="--", linewidth=1.6, label="fusion head")
            values += fusion
        ax.set_title(f"{run.label}: validation accuracy per block", fontsize=11)
        if ax in axes[:, 0]:
            ax.set_ylabel("validation accuracy (%)")
        _epoch_axis(ax, epochs)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=2 if L + 1 > 12 else 1,
                  title="depth", title_fontsize=8, frameon=False)
    for ax in list(axes.flat)[len(local):]:
        ax.set_visible(False)
    _acc_limits(axes.flat[0], values)
    return _save(fig, path)


def plot_test_by_block(runs: list[Run], path: Path) -> Optional[Path]:
    """Final per-block test accuracy against depth; bp runs' last-strategy accuracy as horizontal lines."""
    local = [r for r in runs if r.is_local]
    if not local:
        return None
    fig = _figure(7.2, 4.6)
    ax = fig.subplots()
    values: list[float] = []
    depth = max(len(r.summary["block_test_accuracy"]) for r in local)
    for k, run in enumerate(runs):
        color = RUN_COLORS[k % len(RUN_COLORS)]
        if run.is_local:
            acc = run.summary["block_test_accuracy"]
            x = list(range(1, len(acc) + 1))
            l_star = run.summary.get("best_block")
            star = f", star: l* = {l_star}" if isinstance(l_star, int) else ""
            ax.plot(x, acc, color=color, marker="o", linewidth=2, label=f"{run.label} ({run.method}) per block{star}")
            if isinstance(l_star, int) and 1 <= l_star <= len(acc):
                ax.plot([l_star], [acc[l_star - 1]], marker="*", markersize=17, color=color,
                        markeredgecolor="black", linestyle="none", zorder=3)
            fusion = run.summary["test_accuracy"].get("fusion")
            if isinstance(fusion, (int, float)):
                ax.axhline(fusion, color=color, linestyle=":", linewidth=1.8,
                           label=f"{run.label} ({run.method}) fusion head: {fusion:.2f}%")
                values.append(fusion)
            values += acc
        else:
            last = run.summary["test_accuracy"].get("last")
            if last is None:
                continue
            ax.axhline(last, color=color, linestyle="--", linewidth=1.8,
                       label=f"{run.label} ({run.method}) last head: {last:.2f}%")
            values.append(last)
    ax.set_title("Test accuracy by depth (l*: the block chosen on validation)", fontsize=11)
    ax.set_xlabel("block (depth)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(range(1, depth + 1))
    ax.set_xlim(0.6, depth + 0.4)
    _acc_limits(ax, values)
    ax.grid(True, alpha=0.3)
    _legend_below(ax)
    return _save(fig, path)


def plot_strategies(runs: list[Run], path: Path) -> Path:
    """Grouped bars: each run's test accuracy per strategy, with the values written on the bars."""
    fig = _figure(max(5.5, 1.9 * len(runs) + 2.5), 4.6)
    ax = fig.subplots()
    width = 0.26
    shown: set[str] = set()
    for k, run in enumerate(runs):
        names = run.strategies
        for j, name in enumerate(names):
            acc = run.summary["test_accuracy"][name]
            x = k + (j - (len(names) - 1) / 2) * width
            label = name if name not in shown else None
            shown.add(name)
            ax.bar(x, acc, width * 0.92, color=STRATEGY_COLORS.get(name, "#7f7f7f"), label=label)
            text = f"{acc:.1f}"
            if name == "best" and run.summary.get("best_block"):
                text += f"\nl*={run.summary['best_block']}"
            ax.annotate(text, (x, acc), textcoords="offset points", xytext=(0, 2), ha="center", va="bottom",
                        fontsize=8)
    ax.set_xticks(range(len(runs)), [f"{r.label}\n({r.method})" for r in runs])
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("run")
    ax.set_title("Test accuracy by prediction strategy", fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="strategy", fontsize=8.5, loc="upper center", ncol=len(shown), framealpha=0.9,
              bbox_to_anchor=(0.5, -0.22) if len(runs) > 1 else (0.5, -0.2))
    return _save(fig, path)


def plot_val_headline(runs: list[Run], path: Path) -> Optional[Path]:
    """Each run's headline validation curve (fusion for ASGE, last for bp) over epochs, on one plot."""
    fig = _figure(7.2, 4.6)
    ax = fig.subplots()
    values: list[float] = []
    all_epochs: list[int] = []
    for k, run in enumerate(runs):
        epochs, acc = run.val_curve(run.headline)
        if not epochs:
            continue
        ax.plot(epochs, acc, color=RUN_COLORS[k % len(RUN_COLORS)], marker=_marker(len(epochs)), markersize=4,
                linewidth=2, label=f"{run.label} ({run.method}, {run.headline})")
        values += acc
        all_epochs += epochs
    if not values:
        return None
    ax.set_title("Validation accuracy of each run's headline strategy", fontsize=11)
    ax.set_ylabel("validation accuracy (%)")
    _epoch_axis(ax, all_epochs)
    _acc_limits(ax, values)
    ax.grid(True, alpha=0.3)
    _legend_below(ax)
    return _save(fig, path)


def plot_speed(runs: list[Run], path: Path) -> Path:
    """Two panels of horizontal bars: total training time and training throughput per run."""
    fig = _figure(9.0, 0.55 * len(runs) + 1.9)
    ax_time, ax_speed = fig.subplots(1, 2, sharey=True)
    labels = [f"{r.label} ({r.method})" for r in runs]
    y = list(range(len(runs)))
    colors = [RUN_COLORS[k % len(RUN_COLORS)] for k in range(len(runs))]
    for ax, key, xlabel, title, fmt in (
            (ax_time, "train_seconds", "training time (s)", "Training time", "{:.1f} s"),
            (ax_speed, "images_per_second", "throughput (images/s)", "Training throughput", "{:.0f}/s")):
        vals = [float(r.summary.get(key) or 0.0) for r in runs]
        ax.barh(y, vals, color=colors, height=0.6)
        for yi, v in zip(y, vals):
            ax.annotate(fmt.format(v), (v, yi), textcoords="offset points", xytext=(3, 0), va="center",
                        fontsize=8.5)
        ax.set_xlim(0, max(vals + [1e-9]) * 1.25)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, axis="x", alpha=0.3)
    ax_time.set_yticks(y, labels)
    ax_time.invert_yaxis()
    return _save(fig, path)


# -- tables ---------------------------------------------------------------------------------------------------
@dataclass
class Table:
    """A titled table of text cells, rendered to Markdown and HTML alike."""
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    numeric: Optional[list[bool]] = None     # per column: right-aligned numbers (default: all but the first two)

    def is_numeric(self, column: int) -> bool:
        return self.numeric[column] if self.numeric is not None else column >= 2


def _pct(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def class_list(summary: dict, show: int = 10) -> str:
    """``"10: T-shirt/top, Trouser, ..."`` from a summary's recorded data (the first ``show`` names)."""
    names = (summary.get("data") or {}).get("classes") or []
    if not names:
        return "–"
    return f"{len(names)}: " + ", ".join(names[:show]) + (", …" if len(names) > show else "")


def build_tables(runs: list[Run]) -> list[Table]:
    """The report's tables: runs, test accuracy per strategy, per-block test accuracy (ASGE runs)."""
    strategies = [s for s in STRATEGY_ORDER if any(s in r.summary["test_accuracy"] for r in runs)]
    strategies += sorted({s for r in runs for s in r.summary["test_accuracy"]} - set(strategies))
    acc_rows = []
    for r in runs:
        s = r.summary
        l_star = s.get("best_block")
        frac = s.get("best_compute_fraction")
        exit_text = (f"{l_star} ({100 * frac:.0f}% compute)" if l_star and isinstance(frac, (int, float))
                     else str(l_star) if l_star else "–")
        acc_rows.append([r.label, r.method] + [_pct(s["test_accuracy"].get(k)) for k in strategies]
                        + [_pct(s.get("val_accuracy", {}).get(r.headline)), exit_text])
    accuracy = Table("Test accuracy by strategy (%)",
                     ["run", "method"] + strategies + ["best val (headline)", "best block l*"], acc_rows,
                     "Each run is tested with its checkpoint of the best validation epoch, chosen by the headline "
                     "strategy: fusion for ASGE, last for bp. Best predicts with block l*, the block with the "
                     "best validation accuracy, and stops there (early exit).")
    run_rows = []
    for r in runs:
        s, params = r.summary, r.summary.get("parameters") or {}
        heads = sum(v for k, v in params.items() if k != "blocks" and isinstance(v, int))
        channels = s.get("channels")
        run_rows.append([
            r.label, r.method, str(s.get("dataset", "–")),
            f"{s.get('model', '–')} ({', '.join(str(c) for c in channels)})" if channels else str(s.get("model", "–")),
            str(s.get("epochs", "–")), str(s.get("best_epoch", "–")), _count(params.get("blocks")), _count(heads),
            f"{s['train_seconds']:.1f}" if isinstance(s.get("train_seconds"), (int, float)) else "–",
            f"{s['images_per_second']:.0f}" if isinstance(s.get("images_per_second"), (int, float)) else "–",
            str(s.get("device", "–")), class_list(s)])
    runs_table = Table("Runs", ["run", "method", "dataset", "model (channels)", "epochs", "best epoch",
                                "block parameters", "head parameters", "train time (s)", "images/s", "device",
                                "classes"],
                       run_rows, "Head parameters: the fusion and last heads together (bp: the last head). "
                       "Classes: their number and names, as recorded by the run.",
                       [False, False, False, False] + [True] * 6 + [False, False])
    tables = [accuracy, runs_table]
    local = [r for r in runs if r.is_local]
    if local:
        depth = max(len(r.summary["block_test_accuracy"]) for r in local)
        rows = []
        for r in local:
            acc = r.summary["block_test_accuracy"]
            cells = [_pct(a) + (" *" if r.summary.get("best_block") == i + 1 else "") for i, a in enumerate(acc)]
            rows.append([r.label] + cells + [""] * (depth - len(acc)))
        tables.append(Table("Per-block test accuracy (%)", ["run"] + [f"block {i}" for i in range(1, depth + 1)],
                            rows, "The asterisk marks l*, the block with the best validation accuracy (the Best "
                            "strategy).", [False] + [True] * depth))
    return tables


def _md_cell(text: str) -> str:
    """``text`` as literal Markdown (table cell or list item): markup characters escaped, one line."""
    out = []
    for ch in text.replace("\n", " "):
        out.append("\\" + ch if ch in "\\`*_[]<>|#!" else ch)
    return "".join(out)


def table_markdown(t: Table) -> str:
    lines = [f"## {t.title}", "", "| " + " | ".join(_md_cell(h) for h in t.headers) + " |",
             "|" + "|".join(" ---: " if t.is_numeric(i) else " --- " for i in range(len(t.headers))) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", _md_cell(t.note)]
    return "\n".join(lines)


def table_html(t: Table) -> str:
    e = html.escape
    head = "".join(f'<th class="{"n" if t.is_numeric(i) else "t"}">{e(h)}</th>' for i, h in enumerate(t.headers))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if t.is_numeric(i) else "t"}">{e(c)}</td>'
                                    for i, c in enumerate(row))
                   + "</tr>\n" for row in t.rows)
    note = f'<p class="note">{e(t.note)}</p>\n' if t.note else ""
    return (f"<h2>{e(t.title)}</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
            + note)


PLOT_TITLES = {
    "val_blocks": "Validation accuracy per block over epochs",
    "test_by_block": "Test accuracy by depth",
    "strategies": "Test accuracy by strategy",
    "val_headline": "Headline validation accuracy over epochs",
    "speed": "Training time and throughput",
}

HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f2f2f2; text-align: left; }
th.n, td.n { text-align: right; font-variant-numeric: tabular-nums; }
p.note, p.meta { color: #555; font-size: 0.88em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def render_markdown(runs: list[Run], tables: list[Table], plots: dict[str, Path]) -> str:
    lines = [f"# asge report: {', '.join(_md_cell(r.label) for r in runs)}", "",
             f"Generated by asge {__version__} from:", ""]
    lines += [f"- **{_md_cell(r.label)}**: `{r.path}`" for r in runs]
    for t in tables:
        lines += ["", table_markdown(t)]
    if plots:
        lines += ["", "## Plots"]
        for key, path in plots.items():
            lines += ["", f"### {PLOT_TITLES.get(key, key)}", "", f"![{PLOT_TITLES.get(key, key)}]({path.name})"]
    return "\n".join(lines) + "\n"


def render_html(runs: list[Run], tables: list[Table], plots: dict[str, Path]) -> str:
    e = html.escape
    title = f"asge report: {', '.join(r.label for r in runs)}"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(title)}</title>", f"<style>{HTML_STYLE}</style>", "</head>", "<body>",
             f"<h1>{e(title)}</h1>", f'<p class="meta">Generated by asge {e(__version__)} from:</p>', "<ul>"]
    parts += [f"<li><strong>{e(r.label)}</strong>: <code>{e(str(r.path))}</code></li>" for r in runs]
    parts.append("</ul>")
    parts += [table_html(t) for t in tables]
    if plots:
        parts.append("<h2>Plots</h2>")
        for key, path in plots.items():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            caption = PLOT_TITLES.get(key, key)
            parts.append(f'<figure id="{e(key)}"><img src="data:image/png;base64,{data}" alt="{e(caption)}">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# -- the report -----------------------------------------------------------------------------------------------
def make_report(run_dirs: Sequence[str | Path], out_dir: Optional[str | Path] = None,
                labels: Optional[Sequence[str]] = None) -> dict[str, Path]:
    """Write the plots, report.md and report.html for ``run_dirs`` into ``out_dir``.

    Returns the written files by name: the plot keys (``val_blocks``, ``test_by_block``, ``strategies``,
    ``val_headline``, ``speed``; only those that have something to show) plus ``markdown`` and ``html``.
    Raises RunDirError for a path that is not a finished run (nothing is written then), ValueError for a
    wrong number of labels and AsgeError when ``out_dir`` cannot be written. Rewriting a report
    directory replaces its files and removes a plot of the earlier report that the new one lacks.
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("make_report needs at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} label(s) for {len(run_dirs)} run(s): give one label per run")
    check_distinct_runs(run_dirs)
    names = list(labels) if labels is not None else [Path(p).resolve().name for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(run_dirs, unique_labels(names))]
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    if out.exists() and not out.is_dir():
        raise AsgeError(f"the report directory {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _write_report(runs, out)
    except OSError as e:
        raise AsgeError(f"cannot write the report to {out}: {e.strerror or e}") from None


def _write_report(runs: list[Run], out: Path) -> dict[str, Path]:
    """Draw the plots and write report.md and report.html into the existing directory ``out``."""
    plots: dict[str, Path] = {}
    several = len(runs) > 1
    for key, draw, wanted in (
            ("val_blocks", plot_val_blocks, True),
            ("test_by_block", plot_test_by_block, True),
            ("strategies", plot_strategies, True),
            ("val_headline", plot_val_headline, several or not any(r.is_local for r in runs)),
            ("speed", plot_speed, several)):
        if wanted:
            written = draw(runs, out / f"{key}.png")
            if written is not None:
                plots[key] = written
    for key in PLOT_TITLES.keys() - plots.keys():      # an earlier report's plot that this one does not have
        (out / f"{key}.png").unlink(missing_ok=True)
    tables = build_tables(runs)
    md = out / "report.md"
    md.write_text(render_markdown(runs, tables, plots), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(runs, tables, plots), encoding="utf-8")
    return {**plots, "markdown": md, "html": page}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``asge report`` flags."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN", help="finished run directories, each once")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (default: RUN/report for one run, ./report for several)")
    parser.add_argument("--labels", help="comma-separated names for the runs in plots and tables "
                                         "(default: the directory names)")
    parser.add_argument("--force", action="store_true",
                        help="replace the report already in the output directory (without it, an existing "
                             "report is never overwritten: choose another --out)")


def run(args: argparse.Namespace) -> int:
    """``asge report``: write the report and print the files it wrote."""
    labels = parse_labels(args.labels, len(args.run_dirs))
    check_distinct_runs(args.run_dirs)
    out = Path(args.out) if args.out else default_out_dir(args.run_dirs)
    existing = report_files(out) if out.is_dir() else []
    if existing and not args.force:
        raise AsgeError(f"{out} already holds a report ({', '.join(p.name for p in existing[:3])}"
                        f"{', ...' if len(existing) > 3 else ''}); pass --force to replace it, or choose another --out")
    written = make_report(args.run_dirs, out, labels)
    for path in written.values():
        print(path)
    return 0
