"""A finished run as ``asge report`` reads it: :class:`RunResults` (label, config, summary, per-epoch records)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import RunDirError
from ..nn.heads import STRATEGIES
from ..runs.directory import RunDir


@dataclass
class RunResults:
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
    def local_rule(self) -> str:
        """The rule each module learns from (``--local-loss``; runs that predate it: asge)."""
        return str(self.summary.get("local_loss") or self.config.get("local_loss") or "asge")

    @property
    def is_local(self) -> bool:
        """True when the run has per-block accuracies (ASGE); False for the backprop baseline."""
        return bool(self.summary.get("block_test_accuracy"))

    @property
    def headline(self) -> str:
        """The strategy the run selects its checkpoint by: fusion for ASGE, last for bp."""
        return "fusion" if "fusion" in self.summary.get("test_accuracy", {}) else "last"

    @property
    def display(self) -> str:
        """The label, with the method in parentheses unless the label already names it (``BP``, not
        ``BP (bp)``)."""
        return self.label if self.method.lower() in self.label.lower() else f"{self.label} ({self.method})"

    @property
    def classes(self) -> list[str]:
        n = len(self.confusion or [])
        names = list((self.summary.get("data") or {}).get("classes") or [])
        return names if len(names) == n else [str(i) for i in range(n)]

    @property
    def confusion(self) -> Optional[list[list[int]]]:
        """The headline strategy's test confusion matrix (rows = true class), as recorded in summary.json
        (or computed by :func:`make_report` from the best checkpoint for runs that predate it)."""
        return (self.summary.get("test_confusion") or {}).get(self.headline)

    def loss_curves(self) -> tuple[list[int], list[float], list[int], list[float]]:
        """(epochs, validation cross-entropy of the headline head, epochs, training loss): for bp the
        network's cross-entropy, for ASGE the mean over blocks of their local losses (each a cross-entropy
        of the block's a_l)."""
        key = f"{self.headline}_loss"
        val = [(r["epoch"], r["val"][key]) for r in self.metrics if isinstance((r.get("val") or {}).get(key), float)]
        train = []
        for r in self.metrics:
            t = r.get("train") or {}
            if t.get("block_loss"):
                train.append((r["epoch"], sum(t["block_loss"]) / len(t["block_loss"])))
            elif isinstance(t.get("loss"), float):
                train.append((r["epoch"], t["loss"]))
        return [e for e, _ in val], [v for _, v in val], [e for e, _ in train], [v for _, v in train]

    @property
    def strategies(self) -> list[str]:
        names = list(self.summary.get("test_accuracy", {}))
        return [s for s in STRATEGIES if s in names] + [s for s in names if s not in STRATEGIES]

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


def read_results(path: str | Path, label: Optional[str] = None) -> RunResults:
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
                          f"{(str(e).splitlines() or [type(e).__name__])[0][:160]})") from None
    except OSError as e:
        raise RunDirError(f"cannot read the run {path}: {e.strerror or e}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("test_accuracy"), dict):
        raise RunDirError(f"{path}/summary.json is not an asge run summary (no test_accuracy)")
    if not isinstance(config, dict):
        raise RunDirError(f"{path}/config.yaml is not an asge run configuration")
    metrics = sorted((r for r in metrics if isinstance(r, dict) and isinstance(r.get("epoch"), int)),
                     key=lambda r: r["epoch"])
    return RunResults(path=path, label=label or path.resolve().name, config=config, summary=summary, metrics=metrics)
