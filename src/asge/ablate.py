"""``asge ablate``: train one base setting with several pools and context modules, and tabulate the results.

Every setting is an ordinary run directory ``OUT/<pool>-<context>/`` written by :func:`asge.train.fit`
(so ``asge report`` and ``asge eval`` work on each), trained with the same seed, data and budget; only the
pool and the context module differ. ``OUT/ablation.md`` and ``OUT/ablation.csv`` hold one row per setting:
test accuracy per strategy, the best block l*, parameters, mean epoch time and images/s. They are rewritten
after every setting, so a partial ablation already has its table.

Grids (``--grid``), around the reference setting (``--pool``/``--context`` of the base, default rms/none):

* ``oat`` (default), one factor at a time: every pool with the reference context, then every context
  module with the reference pool;
* ``pool``: every pool with the reference context; ``context``: every context with the reference pool;
* ``full``: the cross product pools x contexts.

The reference setting is always part of the grid (epoch-time overheads are measured against it).

Resuming: a setting whose ``summary.json`` exists is read back, not retrained (its saved configuration
must match); a setting interrupted mid-run continues from its last checkpoint. A setting that fails (for
instance SGE groups that do not divide the channels) is recorded with its error and the rest go on; rerun
the same command to retry it.

Context options: ``KEY=VALUE`` applies to every context module of the grid, ``NAME:KEY=VALUE`` to module
``NAME`` only (and wins over the unprefixed form), e.g. ``--context-option sge:groups=8
--context-option ge:extent=4``. The same keys work in a YAML ``context_options`` mapping.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from .config import TrainConfig
from .errors import AsgeError, Preempted
from .layers import CONTEXTS, POOLS
from .lock import RunLock
from .run import RunDir

DEFAULT_POOLS = ("rms", "avg", "max", "soft")
DEFAULT_CONTEXTS = ("none", "sge", "gsop", "gsop-spatial", "ge-minus", "ge", "ge-plus")
GRIDS = ("oat", "pool", "context", "full")

#: Columns of ablation.csv, in order. Accuracies are percentages; times are seconds.
CSV_COLUMNS = ("setting", "pool", "context", "status", "fusion", "last", "best", "best_block",
               "block_test_accuracy", "parameters_blocks", "parameters_context", "epochs", "epoch_seconds",
               "epoch_time_ratio", "images_per_second", "run_dir", "error")


def setting_name(pool: str, context: str) -> str:
    """``rms``, ``gsop-spatial`` -> ``rms-gsop-spatial`` (pool names hold no dash); an import path's ``:``
    becomes ``.`` (``rms``, ``my_gates:Gate`` -> ``rms-my_gates.Gate``: a directory name on every system)."""
    return f"{pool}-{context}".replace(":", ".")


def parse_list(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def grid_settings(pools: Sequence[str], contexts: Sequence[str], grid: str = "oat",
                  reference: tuple[str, str] = ("rms", "none")) -> list[tuple[str, str]]:
    """The (pool, context) settings of a grid, in training order, without repeats; ``reference`` first
    unless the grid already holds it."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    ref_pool, ref_ctx = reference
    pool_sweep = [(p, ref_ctx) for p in pools]
    ctx_sweep = [(ref_pool, c) for c in contexts]
    settings = {"oat": pool_sweep + ctx_sweep, "pool": pool_sweep, "context": ctx_sweep,
                "full": [(p, c) for p in pools for c in contexts]}[grid]
    out = list(dict.fromkeys(settings))
    if reference not in out:
        out.insert(0, reference)
    return out


def split_context_options(options: Optional[dict]) -> tuple[dict, dict[str, dict]]:
    """``{"groups": 8, "ge:extent": 4}`` -> (options for every module, {module: its own options})."""
    common, per = {}, {}
    for key, value in (options or {}).items():
        if ":" in str(key):               # rsplit: the module name may itself be an import path
            name, k = str(key).rsplit(":", 1)
            CONTEXTS.check(name.strip())
            per.setdefault(name.strip(), {})[k.strip()] = value
        else:
            common[key] = value
    return common, per


def options_for(context: str, common: dict, per: dict[str, dict]) -> dict:
    """The kwargs that ``context`` gets: the common ones, overridden by its own; none for ``none``."""
    if context == "none":
        return {}
    return {**common, **per.get(context, {})}


def _mean_epoch_seconds(run: RunDir) -> Optional[float]:
    seconds = [r["seconds"] for r in run.read_metrics() if "seconds" in r]
    return sum(seconds) / len(seconds) if seconds else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _row(pool: str, context: str, run_dir: Path) -> dict:
    return {"setting": setting_name(pool, context), "pool": pool, "context": context, "status": "",
            "run_dir": str(run_dir), "error": ""}


def _fill_from_run(row: dict, run: RunDir, summary: dict) -> None:
    acc = summary.get("test_accuracy", {})
    row.update(fusion=acc.get("fusion"), last=acc.get("last"), best=acc.get("best"),
               best_block=summary.get("best_block"), block_test_accuracy=summary.get("block_test_accuracy") or [],
               parameters_blocks=summary.get("parameters", {}).get("blocks"), epochs=summary.get("epochs"),
               epoch_seconds=_mean_epoch_seconds(run), images_per_second=summary.get("images_per_second"))


def _check_same_config(run: RunDir, cfg: TrainConfig) -> None:
    """A finished setting is reused only if it was trained with the configuration asked for now."""
    diff = cfg.resolved().differences(run.read_config())
    if diff:
        raise AsgeError(f"{run.path} holds a finished run of another configuration ({diff}); "
                        "remove it or choose another --out")


def _derive(rows: list[dict], reference: str) -> None:
    """Context parameters (blocks minus those of the same pool without context) and epoch-time ratios."""
    by_name = {r["setting"]: r for r in rows}
    ref = by_name.get(reference, {})
    for r in rows:
        base = by_name.get(setting_name(r["pool"], "none"), {})
        if r.get("parameters_blocks") is not None and base.get("parameters_blocks") is not None:
            r["parameters_context"] = r["parameters_blocks"] - base["parameters_blocks"]
        if r.get("epoch_seconds") and ref.get("epoch_seconds"):
            r["epoch_time_ratio"] = r["epoch_seconds"] / ref["epoch_seconds"]


def run_ablation(base_cfg: TrainConfig, pools: Sequence[str] = DEFAULT_POOLS,
                 contexts: Sequence[str] = DEFAULT_CONTEXTS, out_dir: str | Path = "runs/ablation", *,
                 grid: str = "oat", context_options: Optional[dict[str, dict]] = None,
                 log: Callable[[str], None] = print, command: Optional[str] = None) -> list[dict]:
    """Train every (pool, context) setting of ``grid`` from ``base_cfg`` into ``out_dir/<pool>-<context>/``.

    ``base_cfg.pool``/``base_cfg.context`` are the reference setting. ``base_cfg.context_options`` may mix
    options for every module (``groups``) and for one module (``sge:groups``); ``context_options``
    (``{"sge": {"groups": 8}}``) adds per-module options on top. Finished settings are read back, failing
    ones recorded with their error. Writes ``ablation.csv`` and ``ablation.md`` in ``out_dir`` (after
    each setting) and returns the rows (dicts keyed by :data:`CSV_COLUMNS`).
    """
    for p in pools:
        POOLS.check(p)
    for c in contexts:
        CONTEXTS.check(c)
    base_cfg.validate()
    if getattr(base_cfg, "pipeline", 1) > 1:
        raise AsgeError("asge ablate trains each setting in this process; --pipeline is not supported here")
    common, per = split_context_options(base_cfg.context_options)
    for name, opts in (context_options or {}).items():
        per.setdefault(CONTEXTS.check(name), {}).update(opts)
    reference = (base_cfg.pool, base_cfg.context)
    settings = grid_settings(pools, contexts, grid, reference)
    out = Path(out_dir)
    with RunLock(out, log=log):           # one ablation per directory; each setting's run locks its own
        return _train_settings(base_cfg, settings, out, common, per, reference, grid, log, command)


def _train_settings(base_cfg: TrainConfig, settings: list[tuple[str, str]], out: Path, common: dict,
                    per: dict[str, dict], reference: tuple[str, str], grid: str, log: Callable[[str], None],
                    command: Optional[str]) -> list[dict]:
    """``run_ablation``'s loop, with ``out`` locked."""
    from .train import fit
    meta = {"base": base_cfg.resolved(), "grid": grid, "reference": setting_name(*reference),
            "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"}
    rows: list[dict] = []
    for i, (pool, context) in enumerate(settings, 1):
        run_dir = out / setting_name(pool, context)
        row = _row(pool, context, run_dir)
        cfg = dataclasses.replace(base_cfg, pool=pool, context=context, out=str(run_dir),
                                  context_options=options_for(context, common, per))
        run = RunDir(run_dir)
        head = f"[{i}/{len(settings)}] {row['setting']}"
        try:
            if run.summary_file.is_file():
                _check_same_config(run, cfg)
                log(f"{head}: finished earlier, reading {run.summary_file}")
                row["status"] = "reused"
            else:
                log(f"{head}: training into {run_dir}")
                fit(cfg, resume=True, log=lambda m, h=head: log(f"{h}  {m}"))
                row["status"] = "trained"
            _fill_from_run(row, run, run.read_summary())
        except Preempted as e:  # SIGTERM / SIGINT: the setting's checkpoint is written; stop the ablation
            raise Preempted(f"{head}: {e.what}", e.signum, "run the same asge ablate command again to continue "
                            "(finished settings are kept, this one resumes)") from None
        except Exception as e:  # one failing setting must not stop the others: record it and go on
            row.update(status="failed", error=_first_line(e))
            log(f"{head}: failed: {row['error']}")
        rows.append(row)
        _derive(rows, meta["reference"])
        write_tables(rows, out, meta)
    return rows


# -- tables ------------------------------------------------------------------------------------------------
def _fmt(value, kind: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    if kind == "pct":
        return f"{value:.2f}"
    if kind == "sec":
        return f"{value:.1f}"
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "rate":
        return f"{value:.0f}"
    if kind == "blocks":
        return " ".join(f"{a:.2f}" for a in value)
    return str(value)


def csv_text(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        cells = {}
        for k in CSV_COLUMNS:
            v = r.get(k)
            if k == "block_test_accuracy":
                v = _fmt(v, "blocks")
            elif isinstance(v, float):
                v = f"{v:.4f}" if k != "images_per_second" else f"{v:.1f}"
            cells[k] = "" if v is None else v
        w.writerow(cells)
    return buf.getvalue()


#: (header, key, format) of the Markdown table.
MD_COLUMNS = (("setting", "setting", "str"), ("pool", "pool", "str"), ("context", "context", "str"),
              ("fusion %", "fusion", "pct"), ("last %", "last", "pct"), ("best %", "best", "pct"),
              ("l*", "best_block", "str"), ("params (blocks)", "parameters_blocks", "int"),
              ("context params", "parameters_context", "int"), ("epoch s", "epoch_seconds", "sec"),
              ("vs ref", "epoch_time_ratio", "ratio"), ("img/s", "images_per_second", "rate"))


def markdown_table(rows: Iterable[dict]) -> str:
    rows = list(rows)
    lines = ["| " + " | ".join(h for h, _, _ in MD_COLUMNS) + " |",
             "|" + "|".join("---" if f == "str" else "--:" for _, _, f in MD_COLUMNS) + "|"]
    for r in rows:
        cells = [_fmt(r.get(k), f) for _, k, f in MD_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines.append("")
        lines.extend(f"- {r['setting']} failed: `{r['error']}`" for r in failed)
    return "\n".join(lines)


def markdown_text(rows: list[dict], meta: dict) -> str:
    cfg: TrainConfig = meta["base"]
    arch = f"channels {cfg.channels}" if cfg.channels else f"{cfg.model} x{cfg.width:g}"
    text = [
        "# Ablation: pools and context modules", "",
        f"Base: {cfg.method} on {cfg.dataset} ({arch}), subset {cfg.subset or 'all'}, {cfg.epochs} "
        f"epoch{'' if cfg.epochs == 1 else 's'}, "
        f"batch {cfg.batch_size}, lr {cfg.lr:g} (heads {cfg.head_lr:g}), seed {cfg.seed}, "
        f"context blocks {cfg.context_blocks or 'all'}. Grid `{meta['grid']}`, reference setting "
        f"`{meta['reference']}`.", "",
        f"Started {meta['started']}; {meta['machine']}.", "",
    ]
    if meta.get("command"):
        text += ["```", meta["command"], "```", ""]
    text += [markdown_table(rows), "",
             "Test accuracy (%) of the best-validation checkpoint per strategy; l* = best block (chosen on "
             "validation). Parameters of the blocks (heads excluded); context params = blocks minus those of "
             "the same pool without context. Epoch s = mean training time per epoch (metrics.jsonl), "
             "vs ref = relative to the reference setting.", ""]
    return "\n".join(text)


def write_tables(rows: list[dict], out: Path, meta: dict) -> None:
    from .run import atomic_write
    csv_data, md_data = csv_text(rows).encode(), markdown_text(rows, meta).encode()
    atomic_write(out / "ablation.csv", lambda f: f.write(csv_data))
    atomic_write(out / "ablation.md", lambda f: f.write(md_data))


# -- command line ------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_train_arguments
    add_train_arguments(parser)
    for action in parser._actions:        # the train flags, re-explained where the ablation reads them otherwise
        if action.dest == "out":
            action.help = ("ablation directory: one run directory per setting plus ablation.md/.csv "
                           "(default runs/ablation-<dataset>-<model>-<time>)")
        elif action.dest == "resume":
            action.help = "(implied: finished settings are reused and interrupted ones continued)"
        elif action.dest == "pool":
            action.help = "reference pool, held fixed while the contexts vary (default rms)"
        elif action.dest == "context":
            action.help = "reference context, held fixed while the pools vary (default none)"
        elif action.dest == "context_option":
            action.help = ("context module option (repeatable): KEY=VALUE for every module, NAME:KEY=VALUE "
                           "for one, e.g. sge:groups=8")
    g = parser.add_argument_group("ablation")
    g.add_argument("--pools", type=parse_list, default=list(DEFAULT_POOLS),
                   help=f"pools to compare (default {','.join(DEFAULT_POOLS)})")
    g.add_argument("--contexts", type=parse_list, default=list(DEFAULT_CONTEXTS),
                   help=f"context modules to compare (default {','.join(DEFAULT_CONTEXTS)})")
    g.add_argument("--grid", choices=GRIDS, default="oat",
                   help="oat (default): each pool with the reference context and each context with the "
                        "reference pool; pool or context: one of those sweeps; full: pools x contexts")


def run(args: argparse.Namespace) -> int:
    from .cli import config_from_args
    out = args.out
    args.out, args.resume = None, False    # --out is the ablation's directory, not a run's
    base = config_from_args(args)
    if out is None:
        out = str(Path("runs") / f"ablation-{base.dataset}-{base.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    command = "asge ablate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "ablate" else None
    rows = run_ablation(base, args.pools, args.contexts, out, grid=args.grid, command=command)
    print()
    print(markdown_table(rows))
    print(f"\nablation directory: {out} (ablation.md, ablation.csv, one run directory per setting)")
    return 0


__all__ = ["run_ablation", "grid_settings", "split_context_options", "options_for", "markdown_table",
           "csv_text", "setting_name", "add_arguments", "run", "DEFAULT_POOLS", "DEFAULT_CONTEXTS", "GRIDS",
           "CSV_COLUMNS"]
