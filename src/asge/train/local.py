"""The ASGE algorithm, top to bottom.

For every batch, for every block l:
    X_l is detached (no gradient ever crosses a block boundary),
    Y_l = block_l.features(X_l),  a_l = W_l g(Y_l) + b_l  (fixed random projection of patch goodness),
    X_{l+1} = block_l.transmit(Y_l) is handed on *before* block l's update (the seed's two branches),
    block l's own optimizer steps on CrossEntropy(a_l, y).
The Last and Fusion heads then learn from the detached GAP(Y_l) features with their own optimizer.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..block import ASGEBlock
from ..errors import NonFiniteLossError


def make_optimizer(params, lr: float, weight_decay: float, total_steps: int, min_lr: float):
    """AdamW with a per-step cosine schedule from ``lr`` to ``min_lr`` over ``total_steps``.

    The fused implementation (one kernel per parameter: 2.6-3x cheaper than the default per-tensor loop on
    CPU, docs/performance.md) wherever torch has it: CPU and CUDA float parameters. Its updates equal the
    loop's to rounding (it evaluates the same formula in one pass, in another order).
    """
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = bool(tensors) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=min(min_lr, lr))
    return opt, sched


def autocast_for(cfg, device: torch.device):
    """A zero-argument context factory: autocast to ``cfg.amp`` (bf16/fp16) on ``device``, or nothing."""
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    return (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext


def local_forward(block: ASGEBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of a block's step that needs a graph: (Y, a_l) = (features(x), local_logits(Y))."""
    y = block.features(x)
    return y, block.local_logits(y)


def compile_block(block: ASGEBlock) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``torch.compile`` of :func:`local_forward` for one block (forward and, through AOTAutograd, backward).

    The dropout of ``transmit`` stays eager, so it draws the same random numbers as the uncompiled step.
    """
    return torch.compile(functools.partial(local_forward, block), dynamic=False)


def dropout_seed(epoch_seed: int, step: int, block: int, stream: int = 0) -> int:
    """Seed of block ``block``'s dropout mask at ``step`` of the epoch seeded ``epoch_seed`` (splitmix64 mix).

    Every (epoch, step, block) has its own seed, so a pipeline stage that runs only some blocks draws the
    same masks as the sequential loop; ``stream`` separates data-parallel ranks.
    """
    z = 0
    for v in (epoch_seed, step, block, stream):
        z = (z + v + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return z & 0x7FFFFFFFFFFFFFFF


@contextlib.contextmanager
def seeded_rng(seed: Optional[int], device: torch.device):
    """Run the body with the global RNG of ``device`` (and the CPU's) seeded by ``seed``, then restore it.

    ``seed=None``: the body draws from the global RNG as it is.
    """
    if seed is None:
        yield
        return
    accel = device.type not in ("cpu", "meta")
    with torch.random.fork_rng(devices=[device] if accel else [], device_type=device.type if accel else "cuda"):
        torch.manual_seed(seed)
        yield


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d ``x`` in channels_last layout (no copy if it is already). The local step keeps every block's maps
    in this one layout: the entry norm (over channels) and the conv produce it anyway, and element-wise
    passes over mixed layouts are several times slower on CPU (docs/performance.md)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def block_step(block: ASGEBlock, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor, *,
               label_smoothing: float = 0.0, autocast=contextlib.nullcontext,
               scaler: Optional[torch.amp.GradScaler] = None,
               sync_grads: Optional[Callable[[nn.Module], None]] = None,
               dropout_seed: Optional[int] = None,
               handoff: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None,
               forward: Optional[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None):
    """One local update of one block; the unit that the sequential, pipelined and data-parallel modes share.

    x: (B, C_in, H, W), detached here. Returns (output for the next block, detached; the heads' features of Y
    (B, head_dim), detached; the local loss (0-dim); the number of correct local predictions (0-dim)). No host sync.

    ``dropout_seed``: seed of this step's dropout mask (None: the global RNG). ``handoff(out, feat)`` is
    called with the output and GAP(Y) before the update (a pipeline stage sends them on from there).
    ``forward``: replaces :func:`local_forward` (e.g. :func:`compile_block`'s result).
    """
    x = x.detach()                                   # no gradient for the input: none is ever computed
    y_square = None
    with autocast():
        if forward is not None:
            y, logits = forward(x)
        elif block.fusable:                          # same values, fewer passes over Y (block.py)
            y, logits, y_square = block.fused_local_forward(channels_last(x))
        else:
            y, logits = local_forward(block, x)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    with torch.no_grad(), autocast(), seeded_rng(dropout_seed, y.device):
        out = block.transmit(y, y_square)            # branch 1: flows on, computed before the update
    del y_square
    feat = block.head_features(y.detach())
    if handoff is not None:
        handoff(out, feat)
    optimizer.zero_grad(set_to_none=True)            # branch 2: the block learns from its own loss
    if scaler is None:
        loss.backward()
        if sync_grads is not None:
            sync_grads(block)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if sync_grads is not None:
            sync_grads(block)
        scaler.step(optimizer)
        scaler.update()
    return out, feat, loss.detach(), (logits.detach().argmax(1) == labels).sum()


def snapshot_stats(method, names: tuple[str, ...]) -> dict:
    """Copies of a trainer's running statistics ``names`` (device tensors and ints)."""
    return {k: getattr(method, k).clone() if torch.is_tensor(getattr(method, k)) else getattr(method, k)
            for k in names}


def restore_stats(method, state: dict) -> None:
    """Put back what :func:`snapshot_stats` took (tensors copied into the trainer's own, on its device)."""
    for k, v in state.items():
        if torch.is_tensor(getattr(method, k)):
            getattr(method, k).copy_(v)
        else:
            setattr(method, k, v)


class LocalLearning:
    """Per-block optimizers and schedules, the heads' optimizer, and device-side running statistics."""

    name = "asge"

    def __init__(self, net, cfg, total_steps: int, device: torch.device,
                 sync_grads: Optional[Callable[[nn.Module], None]] = None, stream: int = 0):
        self.net, self.cfg, self.sync_grads, self.stream = net, cfg, sync_grads, stream
        self.epoch_seed: Optional[int] = None        # set by start_epoch: seeds the dropout masks
        self.forwards = [compile_block(b) if getattr(cfg, "compile", False) else None for b in net.blocks]
        self.num_blocks = len(net.blocks)
        self.block_opts = [make_optimizer(b.parameters(), cfg.lr, cfg.weight_decay, total_steps, cfg.min_lr)
                           for b in net.blocks]
        self.head_opt = make_optimizer(net.heads.parameters(), cfg.head_lr or cfg.lr, cfg.weight_decay,
                                       total_steps, cfg.min_lr)
        self.autocast = autocast_for(cfg, device)
        self.scalers = ([torch.amp.GradScaler(device.type) for _ in net.blocks] if cfg.amp == "fp16"
                        else [None] * self.num_blocks)
        self.device = device
        self.reset_stats()

    # -- the step ---------------------------------------------------------------------------------------
    def start_epoch(self, seed: int) -> None:
        """Called by ``fit`` before each epoch with the epoch's seed: dropout masks are drawn from
        (seed, step, block), so any subset of the blocks (a pipeline stage) draws the same masks."""
        self.epoch_seed = seed

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        _, feats, losses, correct = self.run_blocks(x, labels, step, 0, self.num_blocks)
        head_correct = self.heads_step(feats, labels)
        self.record(losses, correct, labels.shape[0], step, head_correct=head_correct)

    def run_blocks(self, h: torch.Tensor, labels: torch.Tensor, step: int, lo: int, hi: int,
                   handoff: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None):
        """``block_step`` through blocks lo..hi-1 (0-based). ``handoff(out, feats)`` is called with the last
        block's output and the GAP(Y_l) of blocks lo..hi-1, before that block's update.
        Returns (output of block hi-1, [GAP(Y_l)], [loss_l], [correct_l])."""
        feats, losses, correct = [], [], []
        for l in range(lo, hi):
            opt, sched = self.block_opts[l]
            seed = None if self.epoch_seed is None else dropout_seed(self.epoch_seed, step, l, self.stream)
            h, feat, loss, right = block_step(self.net.blocks[l], opt, h, labels,
                                              label_smoothing=self.cfg.label_smoothing, autocast=self.autocast,
                                              scaler=self.scalers[l], sync_grads=self.sync_grads,
                                              dropout_seed=seed, forward=self.forwards[l],
                                              handoff=None if handoff is None or l < hi - 1 else
                                              (lambda out, feat, done=feats: handoff(out, done + [feat])))
            sched.step()
            feats.append(feat)
            losses.append(loss)
            correct.append(right)
        return h, feats, losses, correct

    def heads_step(self, feats: list[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
        """Fusion and Last heads on detached features (their parameters are disjoint: one summed loss)."""
        opt, sched = self.head_opt
        fusion, last = self.net.heads(feats)
        loss = F.cross_entropy(fusion, labels) + F.cross_entropy(last, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.sync_grads is not None:
            self.sync_grads(self.net.heads)
        opt.step()
        sched.step()
        self.head_loss_sum += loss.detach()
        return [(fusion.argmax(1) == labels).sum(), (last.argmax(1) == labels).sum()]

    # -- statistics (device tensors; one host sync per read) ------------------------------------------------
    def reset_stats(self) -> None:
        L = self.num_blocks
        self.loss_sum = torch.zeros(L, device=self.device)
        self.correct = torch.zeros(L + 2, dtype=torch.long, device=self.device)   # blocks, fusion, last
        self.head_loss_sum = torch.zeros((), device=self.device)
        self.first_bad_step = torch.full((L,), -1, dtype=torch.long, device=self.device)
        self.seen = 0
        self.steps = 0

    STATS = ("loss_sum", "correct", "head_loss_sum", "first_bad_step", "seen", "steps")

    def stats_state(self) -> dict:
        """The epoch's running statistics so far (a mid-epoch checkpoint holds them)."""
        return snapshot_stats(self, self.STATS)

    def load_stats_state(self, state: dict) -> None:
        restore_stats(self, state)

    def record(self, losses: list[torch.Tensor], correct: list[torch.Tensor], batch: int, step: int,
               lo: int = 0, head_correct: Optional[list[torch.Tensor]] = None) -> None:
        """Add one batch's losses and correct counts of blocks lo..lo+len(losses)-1 (and of the heads)."""
        hi = lo + len(losses)
        losses = torch.stack(losses)
        first_bad = self.first_bad_step[lo:hi]
        self.first_bad_step[lo:hi] = torch.where((first_bad < 0) & ~torch.isfinite(losses), step, first_bad)
        self.loss_sum[lo:hi] += losses * batch
        self.correct[lo:hi] += torch.stack(correct)
        if head_correct is not None:
            self.correct[-2:] += torch.stack(head_correct)
        self.seen += batch
        self.steps += 1

    def check_finite(self, epoch: int) -> None:
        bad = self.first_bad_step.tolist()
        for l, s in enumerate(bad):
            if s >= 0:
                raise NonFiniteLossError(block=l + 1, step=s, epoch=epoch)

    def running(self) -> dict:
        """Live numbers for the progress bar: last block's loss and the fusion accuracy so far."""
        n = max(self.seen, 1)
        return {"loss": float(self.loss_sum[-1]) / n, "acc": 100.0 * float(self.correct[-2]) / n}

    def epoch_stats(self) -> dict:
        n = max(self.seen, 1)
        acc = (100.0 * self.correct.double() / n).tolist()
        L = self.num_blocks
        return {"block_loss": (self.loss_sum / n).tolist(), "block_acc": acc[:L], "fusion_acc": acc[L],
                "last_acc": acc[L + 1], "head_loss": float(self.head_loss_sum) / max(self.steps, 1)}

    def lrs(self) -> dict:
        return {"blocks": self.block_opts[0][0].param_groups[0]["lr"], "heads": self.head_opt[0].param_groups[0]["lr"]}

    # -- checkpointing ------------------------------------------------------------------------------------
    def block_state(self, l: int) -> dict:
        """Optimizer, schedule and (fp16) grad-scaler state of block ``l`` (0-based)."""
        (opt, sched), scaler = self.block_opts[l], self.scalers[l]
        return {"opt": opt.state_dict(), "sched": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}}

    def load_block_state(self, l: int, state: dict) -> None:
        (opt, sched), scaler = self.block_opts[l], self.scalers[l]
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])

    def heads_state(self) -> dict:
        return {"opt": self.head_opt[0].state_dict(), "sched": self.head_opt[1].state_dict()}

    def load_heads_state(self, state: dict) -> None:
        self.head_opt[0].load_state_dict(state["opt"])
        self.head_opt[1].load_state_dict(state["sched"])

    def state_dict(self) -> dict:
        return {"blocks": [self.block_state(l) for l in range(self.num_blocks)], "heads": self.heads_state()}

    def load_state_dict(self, state: dict) -> None:
        for l, block_state in enumerate(state["blocks"]):
            self.load_block_state(l, block_state)
        self.load_heads_state(state["heads"])
