"""The plots of ``asge report`` (:mod:`asge.tools.report`): matplotlib's Agg canvas on figures of their own, so the
caller's pyplot backend and state are left alone. Each ``plot_*(runs, path)`` writes one PNG and returns its
path, or None when it has nothing to show."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from .results import RunResults

STRATEGY_COLORS = {"fusion": "#1f77b4", "last": "#ff7f0e", "best": "#2ca02c"}
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
              "#7f7f7f", "#bcbd22")
DPI = 110


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


def plot_val_blocks(runs: list[RunResults], path: Path) -> Optional[Path]:
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


def plot_test_by_block(runs: list[RunResults], path: Path) -> Optional[Path]:
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
            ax.plot(x, acc, color=color, marker="o", linewidth=2, label=f"{run.display} per block{star}")
            if isinstance(l_star, int) and 1 <= l_star <= len(acc):
                ax.plot([l_star], [acc[l_star - 1]], marker="*", markersize=17, color=color,
                        markeredgecolor="black", linestyle="none", zorder=3)
            fusion = run.summary["test_accuracy"].get("fusion")
            if isinstance(fusion, (int, float)):
                ax.axhline(fusion, color=color, linestyle=":", linewidth=1.8,
                           label=f"{run.display} fusion head: {fusion:.2f}%")
                values.append(fusion)
            values += acc
        else:
            last = run.summary["test_accuracy"].get("last")
            if last is None:
                continue
            ax.axhline(last, color=color, linestyle="--", linewidth=1.8,
                       label=f"{run.display} last head: {last:.2f}%")
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


def plot_strategies(runs: list[RunResults], path: Path) -> Path:
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
    ax.set_xticks(range(len(runs)), [r.label if r.display == r.label else f"{r.label}\n({r.method})" for r in runs])
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


def plot_val_headline(runs: list[RunResults], path: Path) -> Optional[Path]:
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
                linewidth=2, label=f"{run.display}, {run.headline}")
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


def plot_speed(runs: list[RunResults], path: Path) -> Path:
    """Two panels of horizontal bars: total training time and training throughput per run."""
    fig = _figure(9.0, 0.55 * len(runs) + 1.9)
    ax_time, ax_speed = fig.subplots(1, 2, sharey=True)
    labels = [r.display for r in runs]
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


def plot_losses(runs: list[RunResults], path: Path) -> Optional[Path]:
    """Two panels over epochs: each run's validation cross-entropy of its headline head, and its training loss
    (bp: the network's cross-entropy; ASGE: the mean of the blocks' local losses)."""
    curves = [(k, run, run.loss_curves()) for k, run in enumerate(runs)]
    if not any(c[0] or c[2] for _, _, c in curves):
        return None
    fig = _figure(10.0, 4.4)
    ax_val, ax_train = fig.subplots(1, 2)
    epochs: list[int] = []
    for k, run, (ve, vl, te, tl) in curves:
        color = RUN_COLORS[k % len(RUN_COLORS)]
        if ve:
            ax_val.plot(ve, vl, color=color, marker=_marker(len(ve)), markersize=4, linewidth=2,
                        label=f"{run.display}, {run.headline}")
        if te:
            what = "mean block local loss" if run.is_local else "cross-entropy"
            ax_train.plot(te, tl, color=color, marker=_marker(len(te)), markersize=4, linewidth=2,
                          label=f"{run.display}: {what}")
        epochs += ve + te
    for ax, title, ylabel in ((ax_val, "Validation loss (headline head)", "cross-entropy"),
                              (ax_train, "Training loss", "loss")):
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel)
        _epoch_axis(ax, epochs)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            _legend_below(ax)
    return _save(fig, path)


def plot_confusion(runs: list[RunResults], path: Path) -> Optional[Path]:
    """Each run's test confusion matrix of its headline strategy, in percent of each true class, a panel per
    run (cells written out for up to 12 classes)."""
    shown = [r for r in runs if r.confusion]
    if not shown:
        return None
    n = max(len(r.confusion) for r in shown)
    cols = min(len(shown), 3)
    rows = math.ceil(len(shown) / cols)
    side = 3.2 + 0.28 * min(n, 30)
    fig = _figure(side * cols + 0.8, side * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, run in zip(axes.flat, shown):
        m = run.confusion
        pct = [[100.0 * c / max(sum(row), 1) for c in row] for row in m]
        image = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        names = [c if len(c) <= 12 else c[:11] + "…" for c in run.classes]
        ticks = range(len(m)) if len(m) <= 30 else range(0, len(m), max(1, len(m) // 20))
        ax.set_xticks(list(ticks), [names[i] for i in ticks], rotation=60, ha="right", fontsize=7.5)
        ax.set_yticks(list(ticks), [names[i] for i in ticks], fontsize=7.5)
        if len(m) <= 12:
            for i, row in enumerate(pct):
                for j, v in enumerate(row):
                    if round(v) >= 1:
                        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                                color="white" if v > 60 else "#222")
        acc = run.summary["test_accuracy"][run.headline]
        ax.set_title(f"{run.display}: {run.headline}, {acc:.2f}%", fontsize=10)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="% of the true class")
    return _save(fig, path)
