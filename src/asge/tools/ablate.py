"""``asge ablate``: train one base setting with several pools and context modules, splits and local rules,
and tabulate the results.

Every setting is an ordinary run directory ``OUT/<pool>-<context>/`` written by :func:`asge.train.fit`
(so ``asge report`` and ``asge eval`` work on each), trained with the same seed, data and budget; only the
pool and the context module differ (and, with ``--splits`` / ``--losses``, the split and the local rule).
``OUT/ablation.md`` and ``OUT/ablation.csv`` hold one row per setting: test accuracy per strategy, the best
block l*, parameters, mean epoch time and images/s. They are rewritten after every setting, so a partial
ablation already has its table.

Grids (``--grid``), around the reference setting (``--pool``/``--context`` of the base, default rms/none):

* ``oat`` (default), one factor at a time: every pool with the reference context, then every context
  module with the reference pool;
* ``pool``: every pool with the reference context; ``context``: every context with the reference pool;
* ``full``: the cross product pools x contexts.

The reference setting is always part of the grid (epoch-time overheads are measured against it).

Splits and local rules (``--splits 2,4,8``, ``--losses asge,dgl``): every setting of the pool x context grid
is trained with every split (the modules the network is cut into, ``--split``) and every rule
(``--local-loss``), into ``OUT/<pool>-<context>-split<K>-<rule>/``; the first split and rule are the
reference's. For a network that is not a VGG preset (``--model resnet20``: no pools or context modules of
its own) the directories are ``OUT/split<K>-<rule>/``. With either axis, ``--pools`` and ``--contexts``
default to the reference pool and context alone (give them to cross the grids).

Resuming: a setting whose ``summary.json`` exists is read back, not retrained (its saved configuration
must match); a setting interrupted mid-run continues from its last checkpoint. A setting that fails (for
instance SGE groups that do not divide the channels) is recorded with its error and the rest go on; rerun
the same command to retry it.

Another ablation in a directory that holds one is refused before anything is trained, when rewriting the
tables there would lose results: a row whose setting (or setting and seed) the new grid lacks, a change to
or from ``--seeds``, or a finished setting trained with another configuration (it would be recorded as
failed). ``force=True`` (``--force``) rewrites the tables anyway; no run directory is ever removed.

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
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

import torch

from ..config import TrainConfig, key_choices
from ..errors import AsgeError, Preempted
from ..layers import CONTEXTS, POOLS
from ..nn.presets import PRESETS
from ..runs.lock import RunLock
from ..runs.directory import RunDir

DEFAULT_POOLS = tuple(POOLS)              # every built-in pool (asge/layers registers them) ...
DEFAULT_CONTEXTS = tuple(CONTEXTS)        # ... and context module
GRIDS = ("oat", "pool", "context", "full")

#: Columns of ablation.csv, in order. Accuracies are percentages; times are seconds.
CSV_COLUMNS = ("setting", "pool", "context", "split", "local_loss", "status", "fusion", "last", "best",
               "best_block", "block_test_accuracy", "parameters_blocks", "parameters_context", "epochs",
               "epoch_seconds", "epoch_time_ratio", "images_per_second", "run_dir", "error", "seeds", "fusion_sd",
               "last_sd", "best_sd")
#: Accuracy columns averaged over seeds (``--seeds``), each with its sample standard deviation ``<key>_sd``.
SEED_STATS = ("fusion", "last", "best")


class Setting(NamedTuple):
    """One setting of the grid: its pool and context module, and its split and local rule where the grid
    varies them (None: the base's)."""
    pool: str
    context: str
    split: Optional[str] = None
    loss: Optional[str] = None


def setting_name(pool: str, context: str, split: Optional[str] = None, loss: Optional[str] = None, *,
                 blocks: bool = True) -> str:
    """``rms``, ``gsop-spatial`` -> ``rms-gsop-spatial`` (pool names hold no dash); an import path's ``:``
    becomes ``.`` (``rms``, ``my_gates:Gate`` -> ``rms-my_gates.Gate``: a directory name on every system).
    A ``split`` and a ``loss`` add ``-split4-dgl`` (cut points ``3,7`` read ``split3_7``); ``blocks=False``
    leaves the pool and context out (a network without VGG blocks: ``split4-dgl``)."""
    parts = [f"{pool}-{context}"] if blocks or (split is None and loss is None) else []
    if split is not None:
        parts.append("split" + split.replace(",", "_").replace(";", "_"))
    if loss is not None:
        parts.append(loss)
    return "-".join(parts).replace(":", ".")


def parse_splits(text: str) -> list[str]:
    """``"2,4,8"`` -> ["2", "4", "8"] (K values); settings of cut points are separated by ``;``:
    ``"3,7;2,5,8"`` -> ["3,7", "2,5,8"]. Each is a valid ``--split``."""
    from ..nn.local_network import parse_split
    items = [t.strip().replace(" ", "") for t in text.split(";" if ";" in text else ",") if t.strip()]
    try:
        for item in items:
            parse_split(item)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not items or len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"expected distinct splits, comma-separated numbers of modules (e.g. 2,4,8) "
                                         f"or cut points separated by semicolons (e.g. 3,7;2,5,8), got {text!r}")
    return items


def parse_list(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]: distinct integers >= 0."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated seeds >= 0, e.g. 0,1,2, got {text!r}")
    return seeds


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


def check_option_keys(common: dict, per: dict[str, dict], contexts: Sequence[str]) -> None:
    """Before anything is trained, one line for an option key that cannot apply: a ``NAME:KEY`` that module
    ``NAME`` does not take, or a ``KEY`` that no context module of the grid takes. (A value a module refuses,
    or a common key that only some modules take, fails those settings only, recorded with the error.)"""
    from ..layers.context import check_context_options, context_option_keys
    for name, opts in per.items():
        check_context_options(name, opts)
    takers = {c: context_option_keys(c) for c in dict.fromkeys(contexts) if c != "none"}
    for key in common:
        if takers and not any(keys is None or key in keys for keys in takers.values()):
            taken = "; ".join(f"{c}: {', '.join(keys) or 'none'}" for c, keys in takers.items())
            raise ValueError(f"no context module of the grid takes the option {key!r} (they take {taken})")


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


def _row(cfg: TrainConfig, name: str, run_dir: Path) -> dict:
    """A setting's row before it trains: its name, and the pool, context, split and rule of ``cfg``."""
    return {"setting": name, "pool": cfg.pool, "context": cfg.context, "split": cfg.split,
            "local_loss": cfg.local_loss, "status": "", "run_dir": str(run_dir), "error": ""}


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
    """Context parameters (blocks minus those of the same pool, split and rule without context) and epoch-time
    ratios."""
    by_name = {r["setting"]: r for r in rows}
    by_key = {(r["pool"], r["context"], r.get("split"), r.get("local_loss")): r for r in rows}
    ref = by_name.get(reference, {})
    for r in rows:
        base = by_key.get((r["pool"], "none", r.get("split"), r.get("local_loss")), {})
        if r.get("parameters_blocks") is not None and base.get("parameters_blocks") is not None:
            r["parameters_context"] = r["parameters_blocks"] - base["parameters_blocks"]
        if r.get("epoch_seconds") and ref.get("epoch_seconds"):
            r["epoch_time_ratio"] = r["epoch_seconds"] / ref["epoch_seconds"]


def aggregate_seeds(rows: list[dict], run_dir: Path) -> dict:
    """One row for a setting trained with several seeds: mean and sample sd (``<key>_sd``) of every accuracy
    over the seeds that finished, mean block accuracies, epoch time and images/s, l* of each seed
    (``"4,4,5"``), ``seeds`` = the seeds that finished; status ``failed`` (with the first error) when
    any seed failed."""
    import statistics
    ok = [r for r in rows if r["status"] != "failed"]
    out = dict(rows[0], run_dir=str(run_dir), seeds=",".join(str(r["seed"]) for r in ok), error="")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        out.update(status="failed", error=f"seed {failed[0]['seed']}: {failed[0]['error']}")
    else:
        out["status"] = "reused" if all(r["status"] == "reused" for r in rows) else "trained"
    mean = lambda vs: sum(vs) / len(vs) if vs else None  # noqa: E731
    for k in SEED_STATS + ("epoch_seconds", "images_per_second"):
        values = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
        out[k] = mean(values)
        if k in SEED_STATS:
            out[f"{k}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    out["best_block"] = ",".join(str(r.get("best_block")) for r in ok if r.get("best_block") is not None) or None
    blocks = [r.get("block_test_accuracy") or [] for r in ok]
    out["block_test_accuracy"] = [mean([b[i] for b in blocks]) for i in range(min(map(len, blocks)))] if blocks else []
    for k in ("parameters_blocks", "epochs"):
        out[k] = next((r[k] for r in ok if r.get(k) is not None), None)
    return out


def run_ablation(base_cfg: TrainConfig, pools: Sequence[str] = DEFAULT_POOLS,
                 contexts: Sequence[str] = DEFAULT_CONTEXTS, out_dir: str | Path = "runs/ablation", *,
                 grid: str = "oat", context_options: Optional[dict[str, dict]] = None,
                 log: Callable[[str], None] = print, command: Optional[str] = None,
                 seeds: Optional[Sequence[int]] = None, force: bool = False,
                 splits: Optional[Sequence[str]] = None, losses: Optional[Sequence[str]] = None) -> list[dict]:
    """Train every (pool, context) setting of ``grid`` from ``base_cfg`` into ``out_dir/<pool>-<context>/``.

    ``base_cfg.pool``/``base_cfg.context`` are the reference setting. ``base_cfg.context_options`` may mix
    options for every module (``groups``) and for one module (``sge:groups``); ``context_options``
    (``{"sge": {"groups": 8}}``) adds per-module options on top. Finished settings are read back, failing
    ones recorded with their error. Writes ``ablation.csv`` and ``ablation.md`` in ``out_dir`` (after
    each setting) and returns the rows (dicts keyed by :data:`CSV_COLUMNS`).

    ``seeds`` (``--seeds 0,1,2``): train every setting once per seed, into ``out_dir/<setting>/seed-<S>/``;
    each row then holds the mean and sample sd over the seeds (:func:`aggregate_seeds`), and
    ``ablation-seeds.csv`` one row per setting and seed.

    ``force``: rewrite the tables of an ablation already in ``out_dir`` even where that loses results (see
    the module docstring); without it, AsgeError (one line) and nothing is trained or written.

    ``splits`` (``--split`` values) and ``losses`` (``--local-loss`` values): every (pool, context) setting is
    trained with each split and each rule, into ``out_dir/<pool>-<context>-split<K>-<rule>/`` (a network
    without VGG blocks: ``out_dir/split<K>-<rule>/``); the first of each is the reference's.
    """
    for p in pools:
        POOLS.check(p)
    for c in contexts:
        CONTEXTS.check(c)
    base_cfg.validate(template=True)      # its context options: per module, by check_option_keys below
    splits = [str(k) for k in splits] if splits else None      # a split is a --split's text (K, or cut points)
    rules = key_choices()["local_loss"]
    for loss in losses or []:
        if loss not in rules:
            raise ValueError(f"unknown local_loss {loss!r} in --losses; valid: {', '.join(rules)}")
    if getattr(base_cfg, "pipeline", 1) > 1:
        raise AsgeError("asge ablate trains each setting in this process; --pipeline is not supported here")
    common, per = split_context_options(base_cfg.context_options)
    for name, opts in (context_options or {}).items():
        per.setdefault(CONTEXTS.check(name), {}).update(opts)
    reference = (base_cfg.pool, base_cfg.context)
    pairs = grid_settings(pools, contexts, grid, reference)
    check_option_keys(common, per, [c for _, c in pairs])
    settings = [Setting(p, c, k, r) for p, c in pairs for k in (splits or [None]) for r in (losses or [None])]
    blocks = base_cfg.channels is not None or base_cfg.resolved().model in PRESETS
    names = {s: setting_name(*s, blocks=blocks) for s in settings}
    for s in settings:                    # e.g. a pool for a network without VGG blocks: one line, before any run
        setting_config(base_cfg, s, base_cfg.seed, Path(out_dir) / names[s], common, per).validate(template=True)
    out = Path(out_dir)
    with RunLock(out, log=log):           # one ablation per directory; each setting's run locks its own
        lost = [] if force else tables_would_lose(base_cfg, names, out, common, per,
                                                  list(seeds) if seeds else None)
        if lost:
            raise AsgeError(f"{out} already holds another ablation ({'; '.join(lost)}); pass --force to replace "
                            "its tables (no run directory is removed), or choose another --out")
        first = Setting(*reference, splits[0] if splits else None, losses[0] if losses else None)
        return _train_settings(base_cfg, names, out, common, per, first, grid, log, command,
                               list(seeds) if seeds else None)


def setting_config(base_cfg: TrainConfig, setting: Setting, seed: int, run_dir: Path, common: dict,
                   per: dict[str, dict]) -> TrainConfig:
    """The configuration one setting trains with (one seed), into ``run_dir``."""
    cfg = dataclasses.replace(base_cfg, pool=setting.pool, context=setting.context, out=str(run_dir), seed=seed,
                              context_options=options_for(setting.context, common, per))
    if setting.split is not None:
        cfg.split = setting.split
    if setting.loss is not None:
        cfg.local_loss = setting.loss
    return cfg


def tables_would_lose(base_cfg: TrainConfig, settings: dict[Setting, str], out: Path, common: dict,
                      per: dict[str, dict], seeds: Optional[list[int]]) -> list[str]:
    """What rewriting the tables in ``out`` for this ablation would lose, one phrase each (none: ``out`` holds
    no ablation, or the same one, to be continued): rows of ablation.csv / ablation-seeds.csv whose setting
    (and seed) this grid lacks, a change to or from ``--seeds``, finished settings of another configuration."""
    tables = {name: out / name for name in ("ablation.csv", "ablation-seeds.csv")}
    if not any(path.is_file() for path in tables.values()):
        return []
    lost = []
    names = list(settings.values())
    had_seeds = tables["ablation-seeds.csv"].is_file()
    if had_seeds != (seeds is not None):
        lost.append(f"it was run {'with' if had_seeds else 'without'} --seeds")
    for key, path in tables.items():
        try:
            rows = list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []
        except (OSError, UnicodeDecodeError, csv.Error):
            lost.append(f"{key} cannot be read")
            continue
        if key == "ablation.csv":
            missing = sorted({r.get("setting") for r in rows} - set(names) - {None})
        else:
            wanted = {(n, str(s)) for n in names for s in seeds or []}
            missing = sorted({f"{r.get('setting')} seed {r.get('seed')}" for r in rows
                              if (r.get("setting"), r.get("seed")) not in wanted})
        if missing:
            lost.append(f"{key} has {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}, which this grid "
                        "lacks")
    for setting, name in settings.items():
        for seed in seeds or [base_cfg.seed]:
            run_dir = out / name / (f"seed-{seed}" if seeds is not None else "")
            run = RunDir(run_dir)
            if not run.summary_file.is_file():
                continue
            try:
                diff = setting_config(base_cfg, setting, seed, run_dir, common, per).resolved().differences(
                    run.read_config())
            except Exception:             # an unreadable config: the setting records its own error
                continue
            if diff:
                lost.append(f"{run_dir.relative_to(out)} was trained with another configuration ({diff})")
    return lost


def _train_settings(base_cfg: TrainConfig, settings: dict[Setting, str], out: Path, common: dict,
                    per: dict[str, dict], reference: Setting, grid: str, log: Callable[[str], None],
                    command: Optional[str], seeds: Optional[list[int]] = None) -> list[dict]:
    """``run_ablation``'s loop, with ``out`` locked; ``settings``: each setting's name."""
    meta = {"base": base_cfg.resolved(), "grid": grid, "reference": settings[reference],
            "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
            "seeds": seeds}
    rows: list[dict] = []
    seed_rows: list[dict] = []
    for i, (setting, name) in enumerate(settings.items(), 1):
        setting_rows = []
        for seed in seeds or [base_cfg.seed]:
            setting_rows.append(_train_setting(base_cfg, setting, name, seed, seeds is not None, out, common, per,
                                               f"[{i}/{len(settings)}] {name}", log))
        seed_rows += setting_rows
        rows.append(aggregate_seeds(setting_rows, out / name) if seeds else setting_rows[0])
        _derive(rows, meta["reference"])
        write_tables(rows, out, meta, seed_rows if seeds else None)
    return rows


def _train_setting(base_cfg: TrainConfig, setting: Setting, name: str, seed: int, nested: bool, out: Path,
                   common: dict, per: dict[str, dict], head: str, log: Callable[[str], None]) -> dict:
    """Train (or read back) one setting with one seed; its row (status ``failed`` with the error when it
    fails)."""
    from ..train import fit
    run_dir = out / name / (f"seed-{seed}" if nested else "")
    cfg = setting_config(base_cfg, setting, seed, run_dir, common, per)
    row = _row(cfg, name, run_dir)
    row["seed"] = seed
    run = RunDir(run_dir)
    if nested:
        head += f" seed {seed}"
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
    return row


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


def csv_text(rows: Iterable[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        cells = {}
        for k in columns:
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


def markdown_columns(rows: list[dict]) -> list[tuple[str, str, str]]:
    """The columns of :data:`MD_COLUMNS` the rows need: split and rule columns where a row has a split or
    another rule than asge; no pool, context and context-parameter columns where those show one setting
    beside the splits or rules (a network without VGG blocks); a seeds column with several seeds."""
    split = any(r.get("split") for r in rows)
    rule = split or any(r.get("local_loss") not in (None, "", "asge") for r in rows)
    blocks = len({(r.get("pool"), r.get("context")) for r in rows}) > 1 or not (split or rule)
    columns = []
    for column in MD_COLUMNS:
        if column[1] in ("pool", "context", "parameters_context") and not blocks:
            continue
        if column[1] == "fusion":
            columns += [("split", "split", "str")] * split + [("rule", "local_loss", "str")] * rule
        columns.append(column)
    return columns + ([("seeds", "seeds", "str")] if any(r.get("seeds") for r in rows) else [])


def markdown_table(rows: Iterable[dict]) -> str:
    """The ablation table; with several seeds each accuracy reads ``mean ± sd`` and a seeds column says
    which seeds finished."""
    rows = list(rows)
    columns = markdown_columns(rows)
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" if f == "str" else "--:" for _, _, f in columns) + "|"]
    for r in rows:
        cells = []
        for _, k, f in columns:
            cell = _fmt(r.get(k), f)
            if k in SEED_STATS and cell and isinstance(r.get(f"{k}_sd"), (int, float)):
                cell += f" ± {r[f'{k}_sd']:.2f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines.append("")
        lines.extend(f"- {r['setting']} failed: `{r['error']}`" for r in failed)
    return "\n".join(lines)


def markdown_text(rows: list[dict], meta: dict) -> str:
    cfg: TrainConfig = meta["base"]
    arch = f"channels {cfg.channels}" if cfg.channels else f"{cfg.model} x{cfg.width:g}"
    arch += (f", split {cfg.split}" if cfg.split is not None else "") + \
        (f", {cfg.local_loss} rule" if cfg.local_loss != "asge" else "")
    axes = [name for key, name in (("pool", "pools"), ("context", "context modules"), ("split", "splits"),
                                   ("local_loss", "local rules")) if len({r.get(key) for r in rows}) > 1]
    title = ", ".join(axes[:-1]) + (" and " if len(axes) > 1 else "") + axes[-1] if axes else "one setting"
    text = [
        f"# Ablation: {title}", "",
        f"Base: {cfg.method} on {cfg.dataset} ({arch}), subset {cfg.subset or 'all'}, {cfg.epochs} "
        f"epoch{'' if cfg.epochs == 1 else 's'}, "
        f"batch {cfg.batch_size}, lr {cfg.lr:g} (heads {cfg.head_lr:g}), "
        + (f"seeds {', '.join(map(str, meta['seeds']))} (mean ± sample sd over the seeds)" if meta.get("seeds")
           else f"seed {cfg.seed}") +
        (f", context blocks {cfg.context_blocks or 'all'}. " if cfg.channels or cfg.model in PRESETS else ". ") +
        f"Grid `{meta['grid']}`, reference setting "
        f"`{meta['reference']}`.", "",
        f"Started {meta['started']}; {meta['machine']}.", "",
    ]
    if meta.get("command"):
        text += ["```", meta["command"], "```", ""]
    text += [markdown_table(rows), "",
             "Test accuracy (%) of the best-validation checkpoint per strategy; l* = best block (chosen on "
             "validation). Parameters of the blocks (heads excluded); context params = blocks minus those of "
             "the same pool (split and rule) without context. Split: the modules the network is cut into "
             "(--split), each trained by its rule (--local-loss) alone. Epoch s = mean training time per epoch "
             "(metrics.jsonl), vs ref = relative to the reference setting.", ""]
    return "\n".join(text)


#: Columns of ablation-seeds.csv (``--seeds``): one row per setting and seed.
SEED_CSV_COLUMNS = ("setting", "pool", "context", "split", "local_loss", "seed", "status", "fusion", "last",
                    "best", "best_block", "block_test_accuracy", "parameters_blocks", "epochs", "epoch_seconds",
                    "images_per_second", "run_dir", "error")


def write_tables(rows: list[dict], out: Path, meta: dict, seed_rows: Optional[list[dict]] = None) -> None:
    from ..runs.directory import atomic_write
    csv_data, md_data = csv_text(rows).encode(), markdown_text(rows, meta).encode()
    atomic_write(out / "ablation.csv", lambda f: f.write(csv_data))
    atomic_write(out / "ablation.md", lambda f: f.write(md_data))
    if seed_rows is not None:
        seeds_data = csv_text(seed_rows, SEED_CSV_COLUMNS).encode()
        atomic_write(out / "ablation-seeds.csv", lambda f: f.write(seeds_data))


# -- command line ------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import add_train_arguments
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
    alone = "; with --splits or --losses, or for a network that is not a VGG preset: the reference alone"
    g.add_argument("--pools", type=parse_list,
                   help=f"pools to compare (default {','.join(DEFAULT_POOLS)}{alone})")
    g.add_argument("--contexts", type=parse_list,
                   help=f"context modules to compare (default {','.join(DEFAULT_CONTEXTS)}{alone})")
    g.add_argument("--splits", type=parse_splits, metavar="K,K,...",
                   help="splits to compare, each a --split (the modules the network is cut into): numbers of "
                        "modules, e.g. 2,4,8, or cut points with the settings separated by semicolons, e.g. "
                        "3,7;2,5,8 (default: the --split alone)")
    g.add_argument("--losses", type=parse_list, metavar="RULE,RULE,...",
                   help=f"local rules to compare, each a --local-loss ({', '.join(key_choices()['local_loss'])}), "
                        "e.g. asge,dgl (default: the --local-loss alone)")
    g.add_argument("--seeds", type=parse_seeds, metavar="S,S,...",
                   help="train every setting once per seed (e.g. 0,1,2) and report mean ± sd over them "
                        "(default: the --seed alone)")
    g.add_argument("--grid", choices=GRIDS, default="oat",
                   help="oat (default): each pool with the reference context and each context with the "
                        "reference pool; pool or context: one of those sweeps; full: pools x contexts")
    g.add_argument("--force", action="store_true",
                   help="rewrite the tables of another ablation already in --out (without it, an ablation whose "
                        "tables would lose results there is refused; the same command again continues one)")


def command(args: argparse.Namespace) -> int:
    from ..options import config_from_args
    out = args.out
    args.out, args.resume = None, False    # --out is the ablation's directory, not a run's
    base = config_from_args(args, template=True)   # its context options: per module (run_ablation checks them)
    if out is None:
        model = str(base.model).replace(":", ".")
        out = str(Path("runs") / f"ablation-{base.dataset}-{model}-{time.strftime('%Y%m%d-%H%M%S')}")
    command = "asge ablate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "ablate" else None
    every = (base.channels is not None or base.resolved().model in PRESETS) and not (args.splits or args.losses)
    pools = args.pools or (list(DEFAULT_POOLS) if every else [base.pool])
    contexts = args.contexts or (list(DEFAULT_CONTEXTS) if every else [base.context])
    rows = run_ablation(base, pools, contexts, out, grid=args.grid, command=command,
                        seeds=getattr(args, "seeds", None), force=args.force, splits=args.splits,
                        losses=args.losses)
    print()
    print(markdown_table(rows))
    what = "one run directory per setting" if not getattr(args, "seeds", None) else \
        "ablation-seeds.csv, a run directory per setting and seed: SETTING/seed-S"
    print(f"\nablation directory: {out} (ablation.md, ablation.csv, {what})")
    return 0


__all__ = ["run_ablation", "grid_settings", "split_context_options", "options_for", "markdown_table",
           "csv_text", "setting_name", "parse_splits", "Setting", "add_arguments", "command", "DEFAULT_POOLS",
           "DEFAULT_CONTEXTS", "GRIDS", "CSV_COLUMNS"]
