"""The progress display of a run: a tqdm bar on a terminal, plain lines otherwise (or nothing)."""
from __future__ import annotations

import sys
import time

from ..config import TrainConfig


class Progress:
    """A tqdm bar on a terminal, plain lines otherwise (or nothing).

    ``interval`` (:func:`~asge.config.parse_log_interval`): ("steps", N) a line every N steps, ("seconds",
    S) a line every S seconds, ("auto", 0) a line every quarter of the ``total`` steps, and with ``mode``
    auto (output to a file or pipe) only once :data:`AUTO_SECONDS` have passed since the last line too (a
    short epoch prints none: its epoch line says it all). A bar is redrawn every twentieth of ``total`` (or
    every N steps)."""

    AUTO_SECONDS = 30.0

    def __init__(self, mode: str, total: int, desc: str, interval: tuple = ("auto", 0.0), file=None):
        self.patient = mode == "auto"           # chosen for the user: lines only every AUTO_SECONDS or more
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.desc, self.file = mode, total, desc, file
        self.kind, value = interval
        if self.kind == "steps":
            self.every = max(1, int(value))
        else:
            self.every = max(1, total // (20 if mode == "bar" else 4))
        self.seconds = value if self.kind == "seconds" else self.AUTO_SECONDS
        self.last_step, self.last_time = -1, time.monotonic()
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def wants(self, step: int) -> bool:
        """Whether step ``step`` (0-based) should be shown."""
        if self.mode == "none":
            return False
        if self.mode == "bar":
            return (step + 1) % self.every == 0 or step + 1 == self.total
        if self.kind == "steps":
            return (step + 1) % self.every == 0
        if self.kind == "seconds":
            return time.monotonic() - self.last_time >= self.seconds
        if not self.patient:                    # --progress lines: every quarter epoch, as asked
            return (step + 1) % self.every == 0 or step + 1 == self.total
        return step - self.last_step >= self.every and time.monotonic() - self.last_time >= self.seconds

    def update(self, step: int, stats) -> None:
        """Show step ``step``: ``stats`` is a training step's {loss, acc} or a text."""
        text = stats if isinstance(stats, str) else f"loss {stats['loss']:.4f} acc {stats['acc']:.2f}%"
        self.last_step, self.last_time = step, time.monotonic()
        if self.bar is not None:
            self.bar.n = step + 1
            self.bar.set_postfix_str(text)
        else:
            print(f"  {self.desc} step {step + 1}/{self.total}  {text}", flush=True, file=self.file or sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_for(cfg: TrainConfig, total: int, desc: str) -> Progress:
    """The run's progress display (``cfg.progress``, ``cfg.log_interval``) for ``total`` steps."""
    from ..config import parse_log_interval
    return Progress(cfg.progress, total, desc, parse_log_interval(cfg.log_interval))
