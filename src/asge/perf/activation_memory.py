"""Activation memory without CUDA: the bytes of the tensors autograd saves for backward, at their peak.

Every tensor that autograd saves passes through ``torch.autograd.graph.saved_tensors_hooks`` and is counted
(by storage, once) for as long as autograd holds it. For ASGE only one block's graph is alive at a time, so
its peak is one block's saved bytes; for BP it is the whole network's. (``asge bench`` reports this, and the
CUDA peak allocated memory on GPUs.)
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Iterable

import torch


class _Packed:
    """What autograd holds instead of a saved tensor while the meter is on (freed with the graph)."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Live bytes of the tensors autograd saves for backward; ``peak`` is the maximum over the region.

    Each storage counts once however many ops save it (a view counts its whole storage: that is what stays
    alive). Storages of ``exclude`` (parameters, buffers) are not activations and are not counted. A saved
    tensor stops counting when autograd releases it (after its node's backward, or when the graph dies).
    ``marks`` records the live bytes at points named by :meth:`mark` (e.g. after each block's step).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.live: dict[int, list[int]] = {}     # storage pointer -> [bytes, holders]
        self.current = 0
        self.peak = 0
        self.marks: list[tuple[str, int]] = []
        self._window_peak = 0

    def _pack(self, t: torch.Tensor):
        st = t.untyped_storage()
        ptr, nbytes = st.data_ptr(), st.nbytes()
        if ptr in self.exclude or nbytes == 0 or t.device.type == "meta":
            return t
        entry = self.live.get(ptr)
        if entry is None:
            self.live[ptr] = [nbytes, 1]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            self._window_peak = max(self._window_peak, self.current)
        else:
            entry[1] += 1
        box = _Packed(t)
        weakref.finalize(box, self._release, ptr)
        return box

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    @staticmethod
    def _unpack(box):
        return box.tensor if isinstance(box, _Packed) else box

    def mark(self, name: str) -> None:
        """Record the peak since the previous mark under ``name``."""
        self.marks.append((name, self._window_peak))
        self._window_peak = self.current

    @contextlib.contextmanager
    def __call__(self):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self


def model_tensors(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.data for p in net.parameters()] + list(net.buffers())


def measure_saved_bytes(method, x: torch.Tensor, y: torch.Tensor, step: int = 0) -> tuple[int, list[int]]:
    """Peak saved-for-backward bytes of one step of ``method`` (a ``TrainingMethod``'s ``marked_step``), and
    the peak of each part it marks (ASGE: each block, then the heads; BP: none, an empty list)."""
    meter = SavedTensorMeter(model_tensors(method.net))
    with meter():
        method.marked_step(x, y, step, meter.mark)
    return meter.peak, [b for _, b in meter.marks]
