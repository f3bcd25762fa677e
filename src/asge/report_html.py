"""The tables of ``asge report`` (:mod:`asge.report`) and their rendering: report.md and a self-contained
report.html (plots inlined as data URIs)."""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from . import __version__
from .report_plots import STRATEGY_ORDER

if TYPE_CHECKING:
    from .report import Run


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
