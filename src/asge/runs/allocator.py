"""CPU memory allocator settings for training: keep freed activation buffers for reuse.

glibc's malloc serves every allocation above a (dynamic, at most 32 MiB) threshold with a fresh ``mmap`` and
returns it with ``munmap`` when freed. A training step allocates and frees the same multi-megabyte
activation buffers every step, so without this each step re-faults every page of them in the kernel (system
time, and element-wise passes over fresh buffers several times slower than over reused ones; measured in
docs/performance.md, "Process settings of the asge command"). :func:`tune_malloc` tells glibc (``mallopt``)
to serve large requests from its heap and not to trim freed memory at its top, so the buffers are reused
without page faults. Both methods (ASGE and backprop) run in the same process with the same setting.

The ``asge`` command calls it at start-up; ``ASGE_MALLOC=default`` leaves malloc as it is. Python users can
call :func:`tune_malloc` themselves. It does nothing on a C library without ``mallopt`` (musl, macOS,
Windows) and nothing to CUDA memory (PyTorch caches that itself).
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1        # mallopt parameters (glibc's malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2 ** 31 - 1  # bytes of free memory at the heap's top kept before trimming (mallopt's int max)

_state: dict = {}


def tune_malloc(force: bool = False) -> bool:
    """Serve large allocations from malloc's heap and keep freed memory there (glibc). Returns whether the
    setting is in effect. Idempotent; ``ASGE_MALLOC=default`` in the environment turns it off (unless
    ``force``)."""
    if "on" in _state:
        return _state["on"]
    on = False
    if (force or os.environ.get("ASGE_MALLOC", "tuned") != "default") and sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL(None).mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            on = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        except (OSError, AttributeError):
            on = False
    _state["on"] = on
    return on


__all__ = ["tune_malloc"]
