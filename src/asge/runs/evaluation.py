"""Evaluation of a network on a split: every block's local scores and both heads in one pass (accuracy,
loss, confusion counts), which strategy reads which output, and the fixed validation subset."""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import AsgeError
from ..nn.model import ASGENet
from .progress import Progress


#: Runs with more classes record no confusion matrix in summary.json (it would dwarf the rest).
CONFUSION_MAX_CLASSES = 100


@torch.no_grad()
def evaluate_split(net: ASGENet, split, batch_size: int, device: torch.device, autocast=contextlib.nullcontext,
             channels_last: bool = False, world=None, progress: Optional[Progress] = None,
             should_stop: Optional[Callable[[], int]] = None, confusion: bool = False) -> dict:
    """Accuracy (percent) and mean cross-entropy of every block's a_l and of the Fusion and Last heads.

    With a data-parallel ``world``, every rank evaluates its share of each batch and the sums are reduced:
    every rank gets the whole split's numbers (each rank must call this at the same point).
    ``progress`` shows the batches done; ``should_stop()`` (a signal number, 0: go on; a collective in
    data-parallel runs) is asked after every batch, and a nonzero answer raises :class:`EvaluationStopped`.
    ``confusion``: also ``confusion``, int64 (L + 2, N, N) counts (rows = true class, columns = predicted)
    of every output, blocks then Fusion and Last (:func:`output_rows` says which row a strategy reads)."""
    net.eval()
    L = len(net.blocks)
    correct = torch.zeros(L + 2, dtype=torch.long, device=device)
    loss = torch.zeros(L + 2, dtype=torch.float64, device=device)
    n = 0
    N = net.num_classes
    counts = torch.zeros((L + 2) * N * N, dtype=torch.long, device=device) if confusion else None
    for i, (x, y) in enumerate(split.batches(batch_size, shuffle=False, augment=False, seed=0, device=device)):
        if should_stop is not None:
            signum = should_stop()
            if signum:
                raise EvaluationStopped(signum)
        if world is not None:
            lo, hi = world.shard(y.shape[0])
            x, y = x[lo:hi], y[lo:hi]
            if hi == lo:
                continue
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            ys, feats = net.forward_features(x)
            logits = [b.local_logits(y_) for b, y_ in zip(net.blocks, ys)] + list(net.heads(feats))
        scores = torch.stack([s.float() for s in logits])                       # (L + 2, B, N)
        ce = F.cross_entropy(scores.flatten(0, 1), y.repeat(L + 2), reduction="none")
        loss += ce.view(L + 2, -1).sum(1).double()
        pred = scores.argmax(-1)                                               # (L + 2, B)
        correct += (pred == y).sum(1)
        if counts is not None:
            offset = torch.arange(L + 2, device=device).unsqueeze(1) * (N * N)
            counts += torch.bincount((offset + y * N + pred).flatten(), minlength=(L + 2) * N * N)
        n += y.shape[0]
        if progress is not None and progress.wants(i):
            progress.update(i, f"{min((i + 1) * batch_size, len(split))}/{len(split)} images")
    if world is not None:
        world.all_reduce_(correct)
        world.all_reduce_(loss)
        if counts is not None:
            world.all_reduce_(counts)
        n = int(world.all_reduce_(torch.tensor([float(n)], device=device)).item())
    acc = (100.0 * correct.double() / max(n, 1)).tolist()
    loss = (loss / max(n, 1)).tolist()
    out = {"block_acc": acc[:L], "block_loss": loss[:L], "fusion_acc": acc[L], "last_acc": acc[L + 1],
           "fusion_loss": loss[L], "last_loss": loss[L + 1]}
    if counts is not None:
        out["confusion"] = counts.view(L + 2, N, N).cpu()
    return out


def output_rows(num_blocks: int, best_block: int) -> dict:
    """Which row of ``evaluate``'s (L + 2, ...) outputs each strategy reads: Fusion L, Last L + 1, Best the
    block l* (1-based ``best_block``; -1 when it is not chosen)."""
    return {"fusion": num_blocks, "last": num_blocks + 1, "best": best_block - 1}


def headline_strategy(method: str) -> str:
    """The strategy whose validation accuracy picks the checkpoint that is tested (summary.json's headline)."""
    return "fusion" if method == "asge" else "last"


def strategy_scores(method: str, ev: dict) -> dict:
    """Each strategy's accuracy from an ``evaluate`` result (bp has only Last)."""
    if method == "bp":
        return {"last": ev["last_acc"]}
    return {"fusion": ev["fusion_acc"], "last": ev["last_acc"], "best": max(ev["block_acc"])}


class EvaluationStopped(Exception):
    """A stop signal arrived while ``evaluate`` ran (``signum``): its result is incomplete."""

    def __init__(self, signum: int):
        super().__init__(f"evaluation stopped by signal {signum}")
        self.signum = signum


def split_subset(split, n: Optional[int], seed: int = 42):
    """A fixed random subset of ``n`` images of ``split`` (the same for the same ``seed``; in the split's
    order), or ``split`` itself when ``n`` is None or not smaller."""
    from ..data.folders import FolderSplit
    from ..data.splits import TensorSplit
    if n is None or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if isinstance(split, TensorSplit):
        return TensorSplit(split.images[idx.to(split.images.device)], split.labels[idx.to(split.labels.device)],
                           augmentation=split.augmentation, scale=split.scale, device=split.images.device)
    if isinstance(split, FolderSplit):
        return FolderSplit([split.samples[i] for i in idx.tolist()], split.image_size, train=split.train,
                           num_workers=split.num_workers)
    raise AsgeError(f"val_subset: cannot take a subset of a {type(split).__name__}")
