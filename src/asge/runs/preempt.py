"""Preemption: SIGTERM or SIGINT asks a run to stop after its current step, with a checkpoint of that point.

A cluster scheduler sends SIGTERM before it kills a preempted job (SIGKILL follows after a grace period);
a user presses Ctrl-C (SIGINT). While :class:`StopSignals` is active, either signal only records a request;
the training loop reads it after every step, writes a checkpoint of that exact point and raises
:class:`~asge.errors.Preempted` (the CLI exits with 128 + the signal number). More signals change nothing:
torchrun forwards the signal it receives to every worker, so a worker may see the same one twice; SIGKILL
stops at once (the checkpoints are written atomically, so the previous one is then kept).
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: SIGTERM / SIGINT set ``signum`` instead of ending the process.

    Nested uses share one record (the outermost clears it): a torchrun worker holds one around its whole
    life, so that the SIGTERM torchrun sends when another worker fails cannot cut short its report, and a
    signal that arrives before ``fit`` starts is still seen by ``fit``. Signal handlers can only be installed
    from the main thread; elsewhere this does nothing (the signals keep their usual effect).
    """

    _signum: Optional[int] = None            # process-wide: shared by nested uses
    _announced = False
    _depth = 0

    def __init__(self, announce: bool = True):
        self.announce = announce
        self._previous: dict = {}

    @property
    def signum(self) -> Optional[int]:
        return StopSignals._signum

    @property
    def requested(self) -> bool:
        return StopSignals._signum is not None

    def announce_once(self, signum: int) -> None:
        """Say on stderr, once per run, that ``signum`` stops it after the current step."""
        if not StopSignals._announced:
            StopSignals._announced = True
            print(f"asge: {signal.Signals(signum).name} received: stopping after the current step, "
                  "with a checkpoint of that point", file=sys.stderr, flush=True)

    def _handle(self, signum, frame) -> None:
        if StopSignals._signum is None:
            StopSignals._signum = signum
            if self.announce:
                self.announce_once(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            if StopSignals._depth == 0:
                StopSignals._signum, StopSignals._announced = None, False
            StopSignals._depth += 1
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        if self._previous:
            StopSignals._depth -= 1
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)   # None: set outside Python
        self._previous = {}


def ignore_stop_signals() -> None:
    """For helper processes whose lifetime their parent manages (pipeline stages, data loader workers): a
    Ctrl-C or a scheduler's SIGTERM sent to the whole process group must not end them under the parent."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
