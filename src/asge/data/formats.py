"""The file formats of the in-memory datasets: IDX (MNIST, Fashion-MNIST) and CIFAR's python batches.

Both readers raise :class:`~asge.data.splits.DatasetError` naming the file on anything malformed. CIFAR's
batches are pickles by the dataset authors' design; they are read through an unpickler that rebuilds numpy
arrays, dicts, lists, strings and numbers only.
"""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from .splits import DatasetError


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({e})") from e
    return raw


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) of unsigned bytes into a uint8 array of its stored shape.

    Format: magic ``00 00 08 <ndim>``, ``ndim`` big-endian int32 sizes, then the data. Raises
    :class:`DatasetError` on a wrong magic, a dimension count other than ``ndim`` or a size mismatch.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex() or 'empty'}, "
                           f"expected 000008xx)")
    nd = data[3]
    if ndim is not None and nd != ndim:
        raise DatasetError(f"{path}: IDX file has {nd} dimensions, expected {ndim}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=nd, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise DatasetError(f"{path}: IDX size mismatch: header says {shape} ({expected} bytes), "
                           f"file has {len(data)} bytes (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric  # numpy >= 2
    allowed = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    import codecs
    allowed[("_codecs", "encode")] = codecs.encode  # how protocol-2 pickles spell bytes
    return allowed


try:
    _PICKLE_GLOBALS = _numpy_pickle_globals()
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _ma, numeric as _nm
    import codecs as _codecs
    _PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _ma._reconstruct,
                       ("numpy.core.numeric", "_frombuffer"): _nm._frombuffer,
                       ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                       ("_codecs", "encode"): _codecs.encode}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, dicts, lists, strings and numbers."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch file") from None


def _load_cifar_pickle(path: Path) -> dict:
    # The CIFAR "python version" files are, by the dataset authors' design, Python-2 pickles of a dict of
    # numpy arrays and lists (these are the standard dataset files, not checkpoints). They are read as
    # pickle.load(f, encoding="latin1") would, through an unpickler that accepts numpy arrays only.
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"{path}: not a CIFAR python batch file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_cifar_pickle(path)
    if "data" not in d or label_key not in d:
        raise DatasetError(f"{path}: CIFAR batch lacks key 'data' or {label_key!r} (has {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels
