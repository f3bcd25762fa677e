"""One process per run directory: an exclusive lock on ``RUN/.lock`` that names its holder.

    with RunLock("runs/r1"):      # a second process gets RunLockedError at once, naming this one
        ...

The lock is ``fcntl.flock`` on ``RUN/.lock``: the kernel holds it for the open file, so it goes away with
its process however that process ends (exit, exception, SIGKILL, crash). The file's content is the holder's
``{"pid", "host", "started"}``, written once the lock is held and emptied when it is released cleanly, so:

* a second process that finds the lock held says which process (pid, host) holds it;
* a process that finds the lock free but the file still naming a holder knows that holder ended without
  releasing it (killed, crashed) and says so as it takes the lock over.

A directory that the lock created and that holds nothing but the lock file when it is released is removed
again: validation or data errors before the run writes anything leave no half-made run directory.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import AsgeError, RunLockedError

LOCK_NAME = ".lock"


def describe_holder(holder: Optional[dict]) -> str:
    """``process 1234 on host-a (since 2026-11-26 18:00:01)``, or a generic phrase for an empty file."""
    if not holder:
        return "another process (starting up)"
    return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started', '?')})"


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # it exists, under another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_holder(fd: int) -> Optional[dict]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def check_not_locked(directory: str | os.PathLike) -> None:
    """RunLockedError (naming the holder) if a live process holds ``directory``'s lock; creates nothing."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunLockedError(f"{directory} is in use by {describe_holder(_read_holder(fd))}: one run per "
                                 "directory; wait for it to end, stop it, or choose another --out") from None
    finally:
        os.close(fd)


class RunLock:
    """Exclusive lock on ``directory`` (created if missing); ``log`` hears about taken-over stale locks."""

    def __init__(self, directory: str | os.PathLike, log: Callable[[str], None] = print):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.log = log
        self.fd: Optional[int] = None
        self.created_directory = False

    def acquire(self) -> "RunLock":
        from .directory import make_directory
        created = not self.directory.exists()
        make_directory(self.directory, "run directory", AsgeError)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise AsgeError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(f"{self.directory} is in use by {describe_holder(holder)}: one run per "
                                         "directory; wait for it to end, stop it, or choose another --out") from None
                raise AsgeError(f"cannot lock {self.path} ({e.strerror or e}); this filesystem may not "
                                "support file locks: choose an --out on a local disk") from None
            try:                     # the file may have been removed (released) between open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd)
        if stale:
            gone = stale.get("host") == socket.gethostname() and not process_exists(int(stale.get("pid", -1)))
            self.log(f"asge: taking over the lock of {self.directory}: {describe_holder(stale)} "
                     f"{'no longer exists' if gone else 'no longer holds it'} (it ended without releasing it)")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd, self.created_directory = fd, created
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)      # released cleanly: the next holder has nothing to take over
            if self.created_directory and [p.name for p in self.directory.iterdir()] == [LOCK_NAME]:
                self.path.unlink()
                self.directory.rmdir()
        except OSError:
            pass                     # the kernel drops the lock with the descriptor in any case
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
