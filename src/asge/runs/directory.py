"""The run directory: config.yaml, metrics.jsonl, atomic checkpoints, summary.json.

    RUN/config.yaml          the resolved TrainConfig
    RUN/metrics.jsonl        one JSON object per epoch
    RUN/checkpoints/last.pt  everything needed to resume (model, optimizers, schedulers, RNG)
    RUN/checkpoints/best.pt  the model at the best validation accuracy
    RUN/summary.json         written when the run ends: test accuracies, parameters, timing
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from ..config import TrainConfig
from ..errors import CheckpointError, RunDirError

CHECKPOINT_FORMAT = "asge-checkpoint-1"


def file_in_the_way(path: Path) -> Optional[Path]:
    """The first of ``path`` and its parents that exists but is not a directory (None: the path can be a
    directory)."""
    path = Path(path)
    for p in reversed([path, *path.parents]):
        if p.exists() and not p.is_dir():
            return p
    return None


def refuse_overwrite(where: Path, what: str, existing: list[Path], force: bool) -> None:
    """The rule of every command that writes results a user keeps (``asge report``, ``export``, ``bench``,
    ``ablate``): files that exist are replaced only with ``--force``. Without it, an AsgeError, one line,
    naming what ``where`` already holds (``what``, e.g. "a report", and the first ``existing`` files), before
    anything is written."""
    from ..errors import AsgeError
    if existing and not force:
        names = ", ".join(p.name for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise AsgeError(f"{where} already holds {what} ({names}); pass --force to replace it, or choose "
                        "another --out")


def make_directory(path, what: str = "output directory", error=RunDirError) -> Path:
    """Create directory ``path`` and its parents, or raise ``error``, one line, naming what is in the way."""
    path = Path(path)
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise error(f"cannot use {path} as the {what}: {blocker} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create the {what} {path}: {e.strerror or e}") from None
    return path


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else set and reset."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write, error=RunDirError) -> None:
    """Write via a temporary file in the same directory, fsync, rename over ``path``, fsync the directory: a
    kill (or a power cut) during the write leaves the previous file intact. A failing write (disk full,
    read-only directory) raises ``error`` with one line saying so, and leaves the previous file as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~current_umask())   # mkstemp creates 0600; honour the umask as open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not isinstance(e, OSError):
            raise
        kept = "the previous one is kept intact" if path.exists() else "no previous one existed"
        raise error(f"could not write {path} ({e.strerror or e}); {kept}") from None
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """fsync a directory, so that a rename in it survives a power cut (where the filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                                  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def save_checkpoint(path: Path, payload: dict) -> None:
    atomic_write(Path(path), lambda f: torch.save({"format": CHECKPOINT_FORMAT, **payload}, f), CheckpointError)


def load_checkpoint(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load with ``weights_only=True`` (never unpickles code). Damaged or foreign files raise CheckpointError.

    ``mmap``: map the tensors' bytes instead of reading them (for a caller that reads only the small parts,
    such as the configuration: the weights are then never read from disk)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated zip, random bytes, pickles with code: all refused the same way
        raise CheckpointError(f"checkpoint {path} is damaged or not an asge checkpoint "
                              f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an asge checkpoint (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict, source: Path) -> None:
    """``load_state_dict`` that names the mismatch instead of dumping a traceback."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        detail = "; ".join(s for s in (
            f"missing {missing[:4]}" if missing else "", f"unexpected {unexpected[:4]}" if unexpected else "",
            f"shape differs for {shapes[:4]}" if shapes else "") if s)
        raise CheckpointError(f"checkpoint {source} comes from another configuration: {detail}")
    model.load_state_dict(state)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_file = property(lambda self: self.path / "config.yaml")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    summary_file = property(lambda self: self.path / "summary.json")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_checkpoint = property(lambda self: self.path / "checkpoints" / "best.pt")

    def create(self, cfg: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_write(self.config_file, lambda f: f.write(text.encode()))

    def read_config(self) -> TrainConfig:
        if not self.config_file.is_file():
            raise RunDirError(f"{self.path} is not an asge run directory (no config.yaml)")
        try:
            saved = yaml.safe_load(self.config_file.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RunDirError(f"{self.config_file} is damaged ({' '.join(str(e).split())[:200]})") from None
        if not isinstance(saved, dict):
            raise RunDirError(f"{self.config_file} is damaged (not a mapping of option: value)")
        return TrainConfig.from_dict(saved)

    def append_metrics(self, record: dict) -> None:
        try:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise RunDirError(f"could not append to {self.metrics_file} ({e.strerror or e}); the records "
                              "of the epochs before are kept") from None

    def read_metrics(self) -> list[dict]:
        """Every complete record; a last line cut short (a write that failed) is left out."""
        if not self.metrics_file.is_file():
            return []
        records = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop records after ``last_epoch`` (written after the checkpoint a resumed run restarts from)."""
        keep = [r for r in self.read_metrics() if r["epoch"] <= last_epoch]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        atomic_write(self.metrics_file, lambda f: f.write(text.encode()))

    def write_summary(self, summary: dict) -> None:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(self.summary_file, lambda f: f.write(text.encode()))

    def read_summary(self) -> dict:
        """``summary.json`` of a finished run; anything else (not a run, unfinished, damaged) is one line."""
        if not self.config_file.is_file():
            raise RunDirError(f"{self.path} is not an asge run directory (no config.yaml)")
        if not self.summary_file.is_file():
            raise RunDirError(f"{self.path} is a run that has not finished (no summary.json yet)")
        return self.read_summary_if_any()

    def read_summary_if_any(self) -> dict:
        """``summary.json`` ({} before the run finishes); a damaged one is a :class:`RunDirError`, one line."""
        if not self.summary_file.is_file():
            return {}
        try:
            summary = json.loads(self.summary_file.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise RunDirError(f"{self.summary_file} is damaged ({' '.join(str(e).split())[:200]})") from None
        if not isinstance(summary, dict):
            raise RunDirError(f"{self.summary_file} is damaged (not a JSON object)")
        return summary

    def checkpoint_exists(self) -> bool:
        return self.last_checkpoint.is_file()

    @staticmethod
    def rng_state() -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def set_rng_state(state: Optional[dict]) -> None:
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
