"""Process settings for the ``asge`` command that must be in place before torch is loaded (no torch import here).

OpenMP (libgomp, which PyTorch's CPU kernels and MKL use) reads ``OMP_WAIT_POLICY`` once, when torch loads
it. Its default lets a thread that finished its share of a parallel operation spin for a while before it
sleeps. When the cores are shared with other processes, the spinning thread takes the core from the thread
that still has work, and every one of the hundreds of parallel operations in a training step waits for a time
slice. So when this process is the ``asge`` command (the console script, ``python -m asge``, and so torchrun
ranks and the pipeline's spawned stages, which inherit the environment), ``asge``'s package import sets
``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) unless it is already set: an explicit value, e.g. ``ACTIVE`` on a
dedicated machine, is kept. It is a trade-off: on a lightly loaded machine sleeping costs a wake-up per
parallel region, for ASGE and backprop alike. Importing asge as a library changes nothing. What each setting
measured, loaded and lightly loaded: docs/performance.md, "Process settings of the asge command".
"""
from __future__ import annotations

import os
import sys


def launched_as_cli() -> bool:
    """Whether this process was started as the ``asge`` console script or ``python -m asge``."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1] == "asge"
    return os.path.basename(sys.argv[0] if sys.argv else "") == "asge"


def apply_cli_defaults() -> bool:
    """Set the ``asge`` command's OpenMP default (see the module docstring) if torch is not loaded yet and this
    process is the command. Returns whether it applied."""
    if "torch" in sys.modules or not launched_as_cli():
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


__all__ = ["launched_as_cli", "apply_cli_defaults"]
