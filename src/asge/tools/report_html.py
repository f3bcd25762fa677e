"""The tables of ``asge report`` (:mod:`asge.tools.report`) and their rendering: report.md and a self-contained
report.html (plots inlined as data URIs)."""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..version import __version__
from ..nn.heads import STRATEGIES
from ..runs.stats import accuracy_interval, interval_text, count_test_images

from .results import RunResults


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


def _acc(value, n: Optional[int]) -> str:
    """A test accuracy (%) and, when ``n`` test images are known, its 95% Wilson interval:
    ``"97.78 (96.42–98.64)"``."""
    interval = interval_text(accuracy_interval(value, n))
    return _pct(value) + (f" ({interval})" if interval and _pct(value) != "–" else "")


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def class_list(summary: dict, show: int = 10) -> str:
    """``"10: T-shirt/top, Trouser, ..."`` from a summary's recorded data (the first ``show`` names)."""
    names = (summary.get("data") or {}).get("classes") or []
    if not names:
        return "–"
    return f"{len(names)}: " + ", ".join(names[:show]) + (", …" if len(names) > show else "")


def build_tables(runs: list[RunResults]) -> list[Table]:
    """The report's tables: test accuracy per strategy, runs, their modules (runs that record them), per-block
    test accuracy (ASGE runs), per-class test accuracy."""
    strategies = [s for s in STRATEGIES if any(s in r.summary["test_accuracy"] for r in runs)]
    strategies += sorted({s for r in runs for s in r.summary["test_accuracy"]} - set(strategies))
    acc_rows = []
    for r in runs:
        s = r.summary
        l_star = s.get("best_block")
        frac = s.get("best_compute_fraction")
        exit_text = (f"{l_star} ({100 * frac:.0f}% compute)" if l_star and isinstance(frac, (int, float))
                     else str(l_star) if l_star else "–")
        n = count_test_images(s)
        acc_rows.append([r.label, r.method] + [_acc(s["test_accuracy"].get(k), n) for k in strategies]
                        + [_pct(s.get("val_accuracy", {}).get(r.headline)), exit_text, _count(n)])
    accuracy = Table("Test accuracy by strategy (%)",
                     ["run", "method"] + strategies + ["best val (headline)", "best block l*", "test images"],
                     acc_rows,
                     "Each run is tested with its checkpoint of the best validation epoch, chosen by the headline "
                     "strategy: fusion for ASGE, last for bp. In parentheses: the 95% Wilson score interval of "
                     "the test accuracy over the run's test images (none where its summary does not record how "
                     "many). Best predicts with block l*, the block with the best validation accuracy, and stops "
                     "there (early exit); its compute: the multiply-accumulates per image of blocks 1..l* (context "
                     "modules included) and block l*'s projection, as a share of Fusion's.")
    run_rows = []
    for r in runs:
        s, params, c = r.summary, r.summary.get("parameters") or {}, r.config
        heads = sum(v for k, v in params.items() if k != "blocks" and isinstance(v, int))
        channels = s.get("channels")
        lr, head_lr = c.get("lr"), c.get("head_lr")
        lr_text = (f"{lr:g}" + (f" / {head_lr:g}" if isinstance(head_lr, (int, float)) and head_lr != lr else "")
                   if isinstance(lr, (int, float)) else "–")
        run_rows.append([
            r.label, r.method, str(s.get("recipe") or c.get("recipe") or "–"), str(s.get("dataset", "–")),
            f"{s.get('model', '–')} ({', '.join(str(c) for c in channels)})" if channels else str(s.get("model", "–")),
            modules_text(r), "backprop" if r.method == "bp" else r.local_rule,
            _count(s.get("subset")) if s.get("subset") else "all", str(s.get("epochs", "–")),
            str(c.get("batch_size", "–")), lr_text, str(s.get("best_epoch", "–")),
            _count(params.get("blocks")), _count(heads),
            f"{s['train_seconds']:.1f}" if isinstance(s.get("train_seconds"), (int, float)) else "–",
            f"{s['images_per_second']:.0f}" if isinstance(s.get("images_per_second"), (int, float)) else "–"])
    runs_table = Table("Runs", ["run", "method", "recipe", "dataset", "model (channels)", "modules", "local rule",
                                "subset", "epochs", "batch", "lr (blocks / heads)", "best epoch", "block parameters",
                                "head parameters", "train time (s)", "images/s"],
                       run_rows, "Channels: each module's output channels. Modules: how many the network is cut "
                       "into, each trained by the local rule alone (the VGG presets: one per block), and where "
                       "the cuts were given. Subset: the training images used (of the training split). lr: the "
                       "peak of the cosine schedule, blocks / heads where they differ. Head parameters: the "
                       "fusion and last heads together (bp: the last head). Train time and images/s: training "
                       "only (no validation or test), on the machine named above.",
                       [False] * 5 + [True, False] + [True] * 9)
    tables = [accuracy, runs_table]
    modules = modules_table(runs)
    if modules is not None:
        tables.append(modules)
    local = [r for r in runs if r.is_local]
    if local:
        depth = max(len(r.summary["block_test_accuracy"]) for r in local)
        rows = []
        for r in local:
            acc = r.summary["block_test_accuracy"]
            n = count_test_images(r.summary)
            cells = [_acc(a, n) + (" *" if r.summary.get("best_block") == i + 1 else "") for i, a in enumerate(acc)]
            rows.append([r.label] + cells + [""] * (depth - len(acc)))
        tables.append(Table("Per-block test accuracy (%)", ["run"] + [f"block {i}" for i in range(1, depth + 1)],
                            rows, "The asterisk marks l*, the block with the best validation accuracy (the Best "
                            "strategy). In parentheses: the 95% Wilson score interval over the test images.",
                            [False] + [True] * depth))
    per_class = per_class_table(runs)
    if per_class is not None:
        tables.append(per_class)
    return tables


def modules_text(r: RunResults) -> str:
    """How many modules the run's network is cut into (``4``; ``3 (cut at 3,7)`` where the cuts were given;
    a run without the summary's ``modules``: one per block), ``–`` when not recorded."""
    count = len(r.summary.get("modules") or r.summary.get("channels") or [])
    split = r.summary.get("split", r.config.get("split"))
    if not count:
        return "–"
    return f"{count}" + (f" (cut at {split})" if split is not None and not str(split).strip().isdigit() else "")


def modules_table(runs: list[RunResults]) -> Optional[Table]:
    """Each module of the runs whose summary records them (``modules``): the units it holds, its output shape,
    parameters and multiply-accumulates, its local head's share of them; None when no run records them."""
    rows = []
    for r in runs:
        for k, m in enumerate(r.summary.get("modules") or [], 1):
            units = m.get("units") or []
            ratio = m.get("head_macs_ratio") if r.method != "bp" else None       # backprop has no local heads
            rows.append([r.label, str(k),
                         ("–" if len(units) != 2 else str(units[0]) if units[0] == units[1]
                          else f"{units[0]}–{units[1]}"),
                         " × ".join(str(d) for d in m.get("out_shape") or []) or "–", _count(m.get("parameters")),
                         _count(m.get("macs")),
                         f"{100 * ratio:.2f}%" if isinstance(ratio, (int, float)) and math.isfinite(ratio) else "–"])
    if not rows:
        return None
    return Table("Modules", ["run", "module", "units", "output shape (C × H × W)", "parameters", "MACs per image",
                             "head share"], rows,
                 "Each module learns from its own local rule (bp runs: the same modules, trained end to end). "
                 "Units: the network's units it holds, counted from 0 (a ResNet's stem and residual blocks, a "
                 "VGG's blocks). Parameters and MACs (multiply-accumulates per image of its forward pass) are "
                 "the module's without its local head; head share: the head's MACs per image (its class scores, "
                 "what the Best exit adds) as a share of the module's (bp: none).",
                 [False, True, False, False, True, True, True])


def per_class_table(runs: list[RunResults]) -> Optional[Table]:
    """Test accuracy of each class (%), by each run's headline strategy, from its confusion matrix; None
    when no run has one. Runs on other classes than the first's are left out (named in the note)."""
    shown = [r for r in runs if r.confusion]
    if not shown:
        return None
    names = shown[0].classes
    same = [r for r in shown if r.classes == names]
    rows = []
    for i, name in enumerate(names):
        total = sum(same[0].confusion[i])
        rows.append([name, _count(total)] + [_pct(100.0 * r.confusion[i][i] / max(sum(r.confusion[i]), 1))
                                             for r in same])
    note = ("Rows: true classes; each run by its headline strategy (fusion for ASGE, last for bp), from the "
            "test confusion matrix of its tested checkpoint (the confusion plot below).")
    other = [r.label for r in shown if r not in same]
    if other:
        note += f" Left out (other classes): {', '.join(other)}."
    return Table("Per-class test accuracy (%)", ["class", "test images"] + [f"{r.label} ({r.headline})" for r in same],
                 rows, note, [False] + [True] * (1 + len(same)))


def comparison_lines(runs: list[RunResults], reference: Optional[str] = None) -> list[str]:
    """Sentences a reader can quote: accuracy gap and speed ratio, from the runs' own numbers, one per pair.

    With ``reference`` (a run's label): every other run against that run. Otherwise every run that is not
    backprop against every backprop run; with no pair of that kind (all ASGE, or all bp), the most accurate
    run against the next. One run: what it reached. The lines are ordered by the runs' labels, so the order
    in which the runs are given changes nothing.
    """
    def acc(r):
        return r.summary["test_accuracy"].get(r.headline)

    def speed(a, b) -> str:
        ia, ib = a.summary.get("images_per_second"), b.summary.get("images_per_second")
        if not (isinstance(ia, (int, float)) and isinstance(ib, (int, float)) and ia > 0 and ib > 0):
            return ""
        fast, slow, ratio = (a, b, ia / ib) if ia >= ib else (b, a, ib / ia)
        text = f"; {fast.label} {ratio:.1f}x faster per training image than {slow.label}"
        if machine_of(a) != machine_of(b):
            text += " (measured on different machines: not comparable)"
        batches = [r.config.get("batch_size") for r in (fast, slow)]
        if batches[0] != batches[1] and None not in batches:
            text += f" (at batch {batches[0]} against {batches[1]})"
        return text

    def pair(a, b) -> str:
        """``a`` against the reference ``b``; ``b`` leads a tie."""
        gap = acc(b) - acc(a)
        lead, behind = (b, a) if gap >= 0 else (a, b)
        return (f"{lead.label} +{abs(gap):.1f} points over {behind.label} ({lead.headline} {acc(lead):.2f}% vs "
                f"{behind.headline} {acc(behind):.2f}% test accuracy){speed(a, b)}.")

    def key(r):
        return r.label, str(r.path)

    if reference is not None:
        ref = next(r for r in runs if r.label == reference)
        return [pair(a, ref) for a in sorted((r for r in runs if r is not ref), key=key)]
    bp = sorted((r for r in runs if r.method == "bp"), key=key)
    others = sorted((r for r in runs if r.method != "bp"), key=key)
    if bp and others:
        return [pair(a, b) for a in others for b in bp]
    if len(runs) > 1:
        ranked = sorted(runs, key=lambda r: (-acc(r), *key(r)))
        a, b = ranked[0], ranked[1]
        return [f"{a.label} leads: {a.headline} {acc(a):.2f}%, +{acc(a) - acc(b):.1f} points over {b.label} "
                f"({b.headline} {acc(b):.2f}%){speed(a, b)}."]
    r = runs[0]
    s = r.summary
    epochs = s.get("epochs")
    text = (f"{r.display}: {acc(r):.2f}% test accuracy ({r.headline}) after {epochs} epoch"
            f"{'' if epochs == 1 else 's'}")
    if s.get("best_block"):
        text += f"; block l* = {s['best_block']} alone: {s['test_accuracy'].get('best', float('nan')):.2f}%"
    return [text + "."]


def machine_of(r: RunResults) -> str:
    """The processor a run's speeds were measured on (older runs recorded only cpu / cuda)."""
    if r.summary.get("device_name"):
        return str(r.summary["device_name"])
    return f"{r.summary.get('device') or 'a device'} (its model not recorded: the run predates device_name)"


def machine_note(runs: list[RunResults]) -> str:
    """``Speeds measured on: <machine> (all runs)`` or one machine per run."""
    machines = {r.label: machine_of(r) for r in runs}
    timing = (" Speeds are each run's own training time, which other work on the machine at the time changes; "
              "asge bench times two methods side by side." if len(runs) > 1 else "")
    if len(set(machines.values())) == 1:
        return (f"Speeds measured on: {next(iter(machines.values()))} ({'all runs' if len(runs) > 1 else 'this run'})."
                + timing)
    return "Speeds measured on: " + "; ".join(f"{k}: {v}" for k, v in machines.items()) + \
        " (different machines: compare speeds with care)." + timing


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
    return (f'<h2>{e(t.title)}</h2>\n<div class="table"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}'
            f"</tbody>\n</table></div>\n" + note)


PLOT_TITLES = {
    "val_blocks": "Validation accuracy per block over epochs",
    "test_by_block": "Test accuracy by depth",
    "strategies": "Test accuracy by strategy",
    "val_headline": "Headline validation accuracy over epochs",
    "losses": "Loss curves",
    "confusion": "Test confusion matrix (headline strategy)",
    "speed": "Training time and throughput",
}

HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.88em; }
div.table { overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.45em; }
td.n { white-space: nowrap; }
th { background: #f2f2f2; text-align: left; }
th.n, td.n { text-align: right; font-variant-numeric: tabular-nums; }
p.note, p.meta { color: #555; font-size: 0.88em; }
p.lead { font-size: 1.08em; font-weight: 600; background: #f4f8fc; border-left: 4px solid #1f77b4;
         padding: 0.5em 0.8em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def render_markdown(runs: list[RunResults], tables: list[Table], plots: dict[str, Path],
                    reference: Optional[str] = None) -> str:
    """report.md; ``reference``: the label of the run the others are compared with (:func:`comparison_lines`)."""
    lines = [f"# asge report: {', '.join(_md_cell(r.label) for r in runs)}", ""]
    for line in comparison_lines(runs, reference):
        lines += [f"**{_md_cell(line)}**", ""]
    lines += [_md_cell(machine_note(runs)), "", f"Generated by asge {__version__} from:", ""]
    lines += [f"- **{_md_cell(r.label)}**: `{r.path}`; classes {_md_cell(class_list(r.summary))}" for r in runs]
    for t in tables:
        lines += ["", table_markdown(t)]
    if plots:
        lines += ["", "## Plots"]
        for key, path in plots.items():
            lines += ["", f"### {PLOT_TITLES.get(key, key)}", "", f"![{PLOT_TITLES.get(key, key)}]({path.name})"]
            if key == "speed":
                lines += ["", _md_cell(machine_note(runs))]
    return "\n".join(lines) + "\n"


def render_html(runs: list[RunResults], tables: list[Table], plots: dict[str, Path], reference: Optional[str] = None) -> str:
    """report.html: :func:`render_markdown`'s content, the plots inlined."""
    e = html.escape
    title = f"asge report: {', '.join(r.label for r in runs)}"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(title)}</title>", f"<style>{HTML_STYLE}</style>", "</head>", "<body>",
             f"<h1>{e(title)}</h1>"]
    parts += [f'<p class="lead">{e(line)}</p>' for line in comparison_lines(runs, reference)]
    parts += [f'<p class="meta">{e(machine_note(runs))}</p>',
             f'<p class="meta">Generated by asge {e(__version__)} from:</p>', "<ul>"]
    parts += [f"<li><strong>{e(r.label)}</strong>: <code>{e(str(r.path))}</code>; classes "
              f"{e(class_list(r.summary))}</li>" for r in runs]
    parts.append("</ul>")
    parts += [table_html(t) for t in tables]
    if plots:
        parts.append("<h2>Plots</h2>")
        for key, path in plots.items():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            caption = PLOT_TITLES.get(key, key) + (f" ({machine_note(runs)[:-1]})" if key == "speed" else "")
            parts.append(f'<figure id="{e(key)}"><img src="data:image/png;base64,{data}" alt="{e(caption)}">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
