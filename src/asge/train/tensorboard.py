"""TensorBoard event files for a run: every epoch's metrics record and the final test accuracies.

``fit()`` creates a :class:`TensorBoardLogger` when ``cfg.tensorboard`` is set (``asge train --tensorboard``)
and writes into ``RUN/tensorboard/``; view it with ``tensorboard --logdir RUN/tensorboard`` (or a parent
directory to compare runs). The scalar tags, with ``l`` the 1-based block index and the epoch as step:

    block/<l>/train_acc, block/<l>/train_loss     block l's own a_l on the training batches (ASGE only)
    block/<l>/val_acc,   block/<l>/val_loss       the same on the validation split (ASGE only)
    strategy/<s>/val_acc                          every prediction strategy of the run (fusion, last, best)
    strategy/<s>/train_acc                        fusion and last heads on the training batches
    heads/<s>/val_loss                            cross-entropy of the fusion and last heads on validation
    heads/train_loss                              ASGE: fusion + last head loss; bp: the network's loss
    lr/<group>                                    learning rate at the end of the epoch (blocks, heads)
    speed/epoch_seconds, speed/images_per_second  training time of the epoch and its throughput

and, once the run is tested (step = the best-validation epoch, whose model is tested):

    test/<s>_acc                                  test accuracy of every strategy
    test/block/<l>_acc, test/best_block           per-block test accuracy and l* (ASGE only)

plus a text entry ``summary`` with the summary as a table, and an HPARAMS entry: every config key, the
asge version, git commit and dirty flag, the command line, the data directory read and the device name
(``hparams_of``), against the test accuracies. Accuracies are percentages.

Backprop runs (``--method bp``) train only the network and its Last head, so their records have
``train: {loss, last_acc}`` and only ``last`` among the strategies; the per-block a_l and the fusion
head of a bp network are never trained (their numbers in ``val`` are fixed random projections), so they
are not logged for bp runs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional

from ..errors import AsgeError

TENSORBOARD_DIR = "tensorboard"


def is_local_record(record: dict) -> bool:
    """True for a record of a locally trained (ASGE) run: its train stats are per block."""
    return "block_loss" in record.get("train", {})


def _finite(items: Iterable[tuple[str, object]]) -> dict[str, float]:
    """The numeric, finite values of ``items`` as floats (None and NaN are dropped)."""
    out = {}
    for tag, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)
    return out


def epoch_scalars(record: dict) -> dict[str, float]:
    """The scalars of one metrics record (a line of metrics.jsonl), keyed by TensorBoard tag."""
    train, val = record.get("train", {}), record.get("val", {})
    items: list[tuple[str, object]] = []
    local = is_local_record(record)
    if local:
        for kind, stats in (("train", train), ("val", val)):
            for i, acc in enumerate(stats.get("block_acc", [])):
                items.append((f"block/{i + 1}/{kind}_acc", acc))
            for i, loss in enumerate(stats.get("block_loss", [])):
                items.append((f"block/{i + 1}/{kind}_loss", loss))
        items += [("strategy/fusion/train_acc", train.get("fusion_acc")),
                  ("strategy/last/train_acc", train.get("last_acc")),
                  ("heads/train_loss", train.get("head_loss")),
                  ("heads/fusion/val_loss", val.get("fusion_loss")),
                  ("heads/last/val_loss", val.get("last_loss"))]
    else:
        items += [("strategy/last/train_acc", train.get("last_acc")),
                  ("heads/train_loss", train.get("loss")),
                  ("heads/last/val_loss", val.get("last_loss"))]
    items += [(f"strategy/{name}/val_acc", acc) for name, acc in record.get("val_strategy", {}).items()]
    items += [(f"lr/{group}", lr) for group, lr in record.get("lr", {}).items()]
    items += [("speed/epoch_seconds", record.get("seconds")),
              ("speed/images_per_second", record.get("images_per_second"))]
    return _finite(items)


def summary_scalars(summary: dict) -> dict[str, float]:
    """The test scalars of a run's summary (summary.json), keyed by TensorBoard tag."""
    items: list[tuple[str, object]] = [(f"test/{name}_acc", acc)
                                       for name, acc in summary.get("test_accuracy", {}).items()]
    items += [(f"test/block/{i + 1}_acc", acc) for i, acc in enumerate(summary.get("block_test_accuracy") or [])]
    items.append(("test/best_block", summary.get("best_block")))
    return _finite(items)


def hparams_of(config: dict, summary: dict) -> dict:
    """The run's hyperparameters and provenance as TensorBoard hparams (plain values; lists as text)."""
    out = {}
    for key, value in (config or {}).items():
        if value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    prov = summary.get("provenance") or {}
    git = prov.get("git") or {}
    extra = {"asge_version": prov.get("asge_version"), "git_commit": git.get("commit"),
             "git_dirty": git.get("dirty"), "command": " ".join(prov.get("command") or []) or None,
             "data_dir": (prov.get("data") or {}).get("dir"), "device_name": summary.get("device_name")}
    out.update({f"provenance/{k}": v for k, v in extra.items() if v is not None})
    return out


def summary_markdown(summary: dict) -> str:
    """The summary as a two-column Markdown table (TensorBoard's text tab renders it)."""
    rows = ["| key | value |", "| --- | --- |"]
    for key, value in summary.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        rows.append(f"| {key} | {text.replace('|', '/')} |")
    return "\n".join(rows)


class TensorBoardLogger:
    """Writes a run's metrics as TensorBoard scalars into ``<run_dir>/tensorboard/``.

    A resumed run continues the same directory: the first step it will write is taken from the run's
    metrics.jsonl, and TensorBoard is told to drop anything an interrupted process wrote from there on.
    """

    def __init__(self, run_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise AsgeError(f"--tensorboard needs the tensorboard package ({e}); pip install tensorboard") from None
        self.run_dir = Path(run_dir)
        self.log_dir = self.run_dir / TENSORBOARD_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        purge = self._next_epoch()
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)

    def _next_epoch(self) -> Optional[int]:
        """The epoch a resumed run writes next (None for a fresh run)."""
        from ..runs.directory import RunDir
        try:
            records = RunDir(self.run_dir).read_metrics()
        except (OSError, ValueError):
            return None
        epochs = [r.get("epoch") for r in records if isinstance(r.get("epoch"), int)]
        return max(epochs) + 1 if epochs else None

    def log_epoch(self, epoch: int, record: dict) -> None:
        """Every scalar of one epoch's metrics record, at step ``epoch``."""
        for tag, value in epoch_scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=epoch)
        self.writer.flush()

    def log_summary(self, summary: dict, config: Optional[dict] = None) -> None:
        """The test accuracies (at the best-validation epoch, whose model was tested) and the summary text."""
        step = int(summary.get("best_epoch") or summary.get("epochs") or 0)
        for tag, value in summary_scalars(summary).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.add_text("summary", summary_markdown(summary), global_step=step)
        if config is not None:
            self.log_hparams(hparams_of(config, summary), summary_scalars(summary))
        self.writer.flush()

    def log_hparams(self, hparams: dict, metrics: dict) -> None:
        """The HPARAMS tab's entry for this run, in this run's own event file (``add_hparams`` would open a
        sub-directory for it); its metrics are the ``test/...`` scalars already written."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary
        exp, start, end = hparams_summary(hparams, metrics)
        writer = self.writer._get_file_writer()
        for event in (exp, start, end):
            writer.add_summary(event)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
