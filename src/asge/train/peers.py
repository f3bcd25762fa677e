"""What the ranks of a torchrun group tell each other outside the collectives: who they are, who failed.

When a rank dies, the others learn it only as a broken collective ("Connection closed by peer", or a
timeout), which names no rank. So every rank writes where it runs (pid, host) into torchrun's key-value
store, and a rank that fails writes its one-line reason there before it leaves. A rank whose collective
breaks then reads the store: the first recorded failure, or a rank whose process no longer exists on this
host, names the rank that failed. The store lives in the torchrun agent (``TORCHELASTIC_USE_AGENT_STORE``),
so it outlives the workers.

One line for the whole group: the first rank to report a failure prints it, the others leave quietly
(:func:`first_to_report`).
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import socket
import time
from typing import Optional

import torch.distributed as dist

from ..runs.lock import process_exists

#: How long a broken rank looks for the reason in the store before it gives up naming one.
LOOK_SECONDS = 5.0

_store: Optional[object] = None


def store():
    """A client of torchrun's store under a prefix of this launch (None when it cannot be reached)."""
    global _store
    if _store is None:
        try:
            client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                   timeout=datetime.timedelta(seconds=10), wait_for_workers=False)
            prefix = (f"asge/{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}/"
                      f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/")
            _store = dist.PrefixStore(prefix, client)
        except Exception:  # no store (not under torchrun, or it is gone): failures are reported unnamed
            _store = False
    return _store or None


def _get(key: str) -> Optional[dict]:
    s = store()
    try:
        return json.loads(s.get(key)) if s is not None and s.check([key]) else None
    except Exception:
        return None


def announce(rank: int) -> None:
    """Record where ``rank`` runs, for the others to check whether its process still exists."""
    s = store()
    if s is not None:
        try:
            s.set(f"rank/{rank}", json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        except Exception:
            pass


def note_failure(rank: int, message: str) -> None:
    """Record why ``rank`` fails (the first failure recorded stays)."""
    s = store()
    if s is not None:
        try:
            s.compare_set("failure", "", json.dumps({"rank": rank, "message": message}))
        except Exception:
            pass


def who_failed(rank: int, size: int) -> Optional[str]:
    """The rank that failed, with its reason or the fact that its process is gone; None if no rank is known
    to have failed within :data:`LOOK_SECONDS` (a hang or a lost network rather than a failure)."""
    host = socket.gethostname()
    deadline = time.monotonic() + LOOK_SECONDS
    while True:
        failure = _get("failure")
        if failure is not None:
            return f"rank {failure['rank']} failed: {failure['message']}"
        for other in range(size):
            where = _get(f"rank/{other}") if other != rank else None
            if where is not None and where["host"] == host and not process_exists(int(where["pid"])):
                return f"rank {other} (process {where['pid']} on {host}) died"
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def close() -> None:
    """Drop this process's store client while torchrun's agent still serves it (a client destroyed at
    interpreter exit, after the agent has gone, can abort the process: "terminate called without an active
    exception")."""
    global _store
    _store = None
    gc.collect()


def first_to_report() -> bool:
    """True for the first rank that asks (it prints the group's one line); True as well without a store."""
    s = store()
    if s is None:
        return True
    try:
        return s.add("reported", 1) == 1
    except Exception:
        return True
