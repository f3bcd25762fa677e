"""Test a finished run: rebuild its network from config.yaml, load best.pt, predict by each strategy (and
per class, named)."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from ..errors import RunDirError
from ..nn.heads import STRATEGIES
from .inference import check_run_strategy, open_best_checkpoint
from ..runs.directory import RunDir, load_model_state
from ..runs.evaluation import evaluate_split, output_rows
from ..runs.build import build_model, load_run_data, resolve_device


def confusion_matrices(net, split, strategies, batch_size: int, device, progress=None) -> dict:
    """{strategy: int64 (N, N) confusion matrix, rows = true class, columns = predicted} of ``net`` on
    ``split``, every strategy from one pass over the split (the training loop's test evaluation; Best reads
    block l*'s a_l). ``progress`` (:class:`~asge.runs.progress.Progress`) shows the batches done."""
    l_star = int(net.best_block)
    if "best" in strategies and l_star < 1:
        raise RuntimeError("the best block has not been chosen yet")
    counts = evaluate_split(net, split, batch_size, device, progress=progress, confusion=True)["confusion"]
    rows = output_rows(len(net.blocks), l_star)
    return {s: counts[rows[s]] for s in strategies}


def percent(correct, total) -> float:
    return 100.0 * int(correct) / max(int(total), 1)


def evaluate_run(run_dir: str, strategy: str = "all", device: str = "auto", data_root: Optional[str] = None,
                 batch_size: int = 256, per_class: bool = False, progress: str = "none",
                 log: Optional[Callable[[str], None]] = None) -> dict:
    """Test accuracy (percent) per strategy of a run's best checkpoint, and ``best_block``; with ``per_class``
    also ``classes`` (names), ``per_class`` ({strategy: accuracy of each class}) and ``confusion``
    ({strategy: N x N counts, rows = true class}). ``progress``: auto, bar, lines or none (on stderr).
    A run that has not finished is tested from its best-validation checkpoint with l* chosen on validation
    (:func:`asge.use.inference.open_best_checkpoint`); ``log`` hears that, before any work."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    if data_root:
        cfg = dataclasses.replace(cfg, data_root=data_root)
    strategies = (["last"] if cfg.method == "bp" else list(STRATEGIES)) if strategy == "all" \
        else [check_run_strategy(cfg.method, strategy)]
    dev = resolve_device(device)
    ckpt, note = open_best_checkpoint(run, cfg)
    if note and log is not None:
        log(note)
    if "best" in strategies and cfg.method == "asge" and int(ckpt["model"].get("best_block", 0)) < 1:
        if strategy != "all":
            raise RunDirError(f"{run.path}: strategy best needs the best block l*, which the run does not "
                              "record yet; use --strategy fusion or last")
        strategies = [s for s in strategies if s != "best"]
    data = load_run_data(cfg, dev, subset=None, download=False)
    net = build_model(cfg, data.info).to(dev)
    load_model_state(net, ckpt["model"], run.best_checkpoint)
    from ..runs.progress import Progress
    import sys
    bar = Progress(progress, data.test.num_batches(batch_size), "test", file=sys.stderr)
    try:
        confusion = confusion_matrices(net, data.test, strategies, batch_size, dev, progress=bar)
    finally:
        bar.close()
    counts = {s: (m.diagonal(), m.sum(1)) for s, m in confusion.items()}
    out = {s: percent(c.sum(), t.sum()) for s, (c, t) in counts.items()}
    if "best" in strategies:
        out["best_block"] = int(net.best_block)
    if per_class:
        out["classes"] = list(data.info.classes) or [str(i) for i in range(net.num_classes)]
        out["per_class"] = {s: [percent(ci, ti) for ci, ti in zip(c.tolist(), t.tolist())]
                            for s, (c, t) in counts.items()}
        out["confusion"] = {s: m.tolist() for s, m in confusion.items()}
    return out


def format_eval(results: dict, per_class: bool = False, show: int = 20) -> str:
    """What ``asge eval`` prints: accuracy per strategy, l*, the class names, and optionally a per-class table."""
    strategies = [s for s in STRATEGIES if s in results]
    lines = [f"{s}: {results[s]:.2f}%" for s in strategies]
    if "best_block" in results:
        lines.append(f"best_block: {results['best_block']}")
    names = results.get("classes", [])
    if names:
        lines.append(f"classes ({len(names)}): " + ", ".join(names[:show]) + (", ..." if len(names) > show else ""))
    if per_class and names:
        width = max(len(n) for n in names + ["class"])
        lines += ["", "test accuracy per class (%):", f"{'class':<{width}}  " + "  ".join(f"{s:>7}" for s in strategies)]
        lines += [f"{n:<{width}}  " + "  ".join(f"{results['per_class'][s][i]:7.2f}" for s in strategies)
                  for i, n in enumerate(names)]
    return "\n".join(lines)
