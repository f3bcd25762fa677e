"""Where a run came from: the asge version and git commit, the command line, the data files read, the machine.

The command line is the one that started the run (``command``); ``commands`` lists every command that ran
it, in order: that one, then each ``--resume`` (or extension, ``--resume --epochs N``), each
``{"command", "at_epoch": the epochs completed when it started, "at_step" (mid-epoch), "time"}``
(kept by the training loop, carried from one process to the next by ``last.pt``).

``provenance(cfg, data, device)`` is what ``summary.json`` records under ``provenance`` (and TensorBoard's
hparams): everything needed to say, months later, which code on which data on which machine produced a
number. Every part is best-effort and cheap: a missing ``git`` or an unreadable file leaves its entry out,
never stops a run.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

#: Data files are hashed (sha256) when they hold at most this many bytes together (Fashion-MNIST: 30 MB).
HASH_LIMIT_BYTES = 512 * 2 ** 20


def git_info(source: Optional[Path] = None) -> Optional[dict]:
    """``{"commit": sha, "dirty": bool}`` of the checkout asge's own source files are in (``git rev-parse`` in
    the package's directory); None when asge is not run from a git checkout (an installed wheel) or git is
    missing. ``dirty``: tracked files differ from the commit."""
    source = Path(source or Path(__file__).resolve().parent)

    def git(*args: str) -> Optional[str]:
        try:
            r = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit or git("ls-files", "--error-unmatch", "__init__.py") is None:   # asge's files are tracked
        return None
    status = git("status", "--porcelain", "--untracked-files=no", ".")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def device_name(device: torch.device | str) -> str:
    """The processor a run's speeds were measured on: the GPU's name, or the CPU's model and core count."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.processor() or platform.machine()})"
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "CPU"
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _file_entries(files: list[Path]) -> list[dict]:
    """``[{"name", "bytes", "sha256"?}]`` of ``files``; hashed when they are small enough together."""
    sizes = {}
    for f in files:
        try:
            sizes[f] = f.stat().st_size
        except OSError:
            continue
    hash_them = sum(sizes.values()) <= HASH_LIMIT_BYTES
    out = []
    for f, size in sizes.items():
        entry = {"name": f.name, "bytes": size}
        if hash_them:
            try:
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                entry["sha256"] = h.hexdigest()
            except OSError:
                pass
        out.append(entry)
    return out


def data_source(cfg, data=None) -> dict:
    """The data a run read: ``{"dir": the directory, "files": [{name, bytes, sha256}]}`` (image folders:
    ``{"dir", "images", "listing_sha256"}`` instead of files: per split its image count and the sha256 of its
    sorted ``relative path<TAB>bytes`` lines). Uses ``data.info.root`` (the directory the loader read), else
    finds the files the loaders would find, in their order."""
    name = cfg.dataset.lower().replace("_", "-")
    recorded = getattr(data, "source", None) or getattr(getattr(data, "info", None), "root", None)
    if name == "digits":
        try:
            import sklearn.datasets
            path = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
        except ImportError:
            return {"dir": None, "note": "scikit-learn's bundled digits"}
        return {"dir": str(path.parent), "note": "scikit-learn's bundled digits",
                "files": _file_entries([path]) if path.is_file() else []}
    if name in ("mnist", "fashion-mnist"):
        from ..data import in_memory
        if recorded:
            candidates = [Path(recorded)]
        else:
            base = Path(cfg.data_root) if cfg.data_root is not None else Path(in_memory.DEFAULT_ROOT)
            folder = "MNIST" if name == "mnist" else "FashionMNIST"
            candidates = [base / folder / "raw", base]
            if name == "fashion-mnist":
                candidates.append(Path(in_memory.DEBIAN_FASHION_MNIST))
        for d in candidates:
            found = [in_memory._find_idx(d, stem) for stem, _ in in_memory._IDX_FILES.values()]
            if all(found):
                return {"dir": str(d.resolve()), "files": _file_entries(found)}
        return {"dir": str(recorded) if recorded else None}
    if name in ("cifar10", "cifar100"):
        from ..data import in_memory
        folder, files = (("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
                         if name == "cifar10" else ("cifar-100-python", ["train", "test"]))
        base = Path(cfg.data_root) if cfg.data_root is not None else Path(in_memory.DEFAULT_ROOT)
        for d in ([Path(recorded)] if recorded else [base / folder, base]):
            if all((d / f).is_file() for f in files):
                return {"dir": str(d.resolve()), "files": _file_entries([d / f for f in files])}
        return {"dir": str(recorded) if recorded else None}
    root = Path(recorded or cfg.data_root) if (recorded or cfg.data_root) else None
    out: dict = {"dir": str(root.resolve()) if root is not None else None}
    if data is not None:
        out["images"] = {k: len(getattr(data, k)) for k in ("train", "val", "test")}
        if getattr(data, "listings", None):    # sha256 of each split's sorted (relative path, bytes) list
            out["listing_sha256"] = dict(data.listings)
    return out


def provenance(cfg, data=None, device: torch.device | str = "cpu", commands: Optional[list] = None) -> dict:
    """What summary.json records of where a run came from (see the module docstring). ``commands``: the run's
    command history, the command that started it first (None: this process's command alone)."""
    from ..version import __version__
    out = {"asge_version": __version__}
    git = git_info()
    if git is not None:
        out["git"] = git
    history = commands
    out.update(command=history[0]["command"] if history else list(sys.argv), cwd=os.getcwd(),
               python=platform.python_version(), torch=torch.__version__, device_name=device_name(device),
               platform=platform.platform())
    if history:
        out["commands"] = history
    try:
        out["data"] = data_source(cfg, data)
    except Exception as e:     # best-effort: a provenance failure must not cost the run its summary
        out["data"] = {"error": f"{type(e).__name__}: {e}"}
    return out
