"""The ASGE algorithm, top to bottom.

For every batch, for every block l:
    X_l is detached (no gradient ever crosses a block boundary),
    Y_l = block_l.features(X_l),  a_l = W_l g(Y_l) + b_l  (fixed random projection of patch goodness;
        with --projection learned, W_l and b_l are block l's parameters too),
    X_{l+1} = block_l.transmit(Y_l) is handed on *before* block l's update (the seed's two branches),
    block l's gradient comes from CrossEntropy(a_l, y) alone.
Then one fused AdamW step updates every block at once: block l+1's input was computed before block l's
update and the blocks' parameters are disjoint, so this equals updating each block right after its backward.
The Last and Fusion heads learn from the detached GAP(Y_l) features with their own optimizer.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.block import ASGEBlock
from ..errors import NonFiniteLossError
from .method import DeviceStepMethod, OptSchedule
from .optim import BlockOptimizer, make_optimizer


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


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d ``x`` in channels_last layout (no copy if it is already). The local step keeps every block's maps
    in this one layout: the entry norm (over channels) and the conv produce it anyway, and element-wise
    passes over mixed layouts are several times slower on CPU (docs/performance.md)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def block_step(block: ASGEBlock, optimizer: Optional[torch.optim.Optimizer], x: torch.Tensor,
               labels: torch.Tensor, *, label_smoothing: float = 0.0, autocast=contextlib.nullcontext,
               scaler: Optional[torch.amp.GradScaler] = None,
               sync_grads: Optional[Callable[[nn.Module], None]] = None,
               generator: Optional[torch.Generator] = None, dropout_seed: Optional[int] = None,
               handoff: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None,
               forward: Optional[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None):
    """One local step of one block; the unit that the sequential, pipelined and data-parallel modes share.

    x: (B, C_in, H, W), detached here. Returns (output for the next block, detached; the heads' features of Y
    (B, head_dim), detached; the local loss (0-dim); the number of correct local predictions (0-dim)). No host sync.

    ``optimizer``: zeroes the block's gradients, then steps after the backward (with ``scaler`` under fp16).
    None: the block's gradient is left in its ``.grad`` (which the caller zeroed) for the caller's update
    (:meth:`LocalLearning.update_blocks`: one step for all blocks).
    ``generator`` draws the dropout mask; ``dropout_seed``: draw it from a new generator seeded so instead;
    neither: from the global RNG. ``handoff(out, feat)`` is called with the output and GAP(Y) before the
    update (a pipeline stage sends them on from there).
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
    loss = block.local_loss(y, logits, labels, label_smoothing)
    if generator is None and dropout_seed is not None:
        generator = torch.Generator(device=y.device).manual_seed(dropout_seed)
    with torch.no_grad(), autocast():
        out = block.transmit(y, y_square, generator)  # branch 1: flows on, computed before the update
    del y_square
    feat = block.head_features(y.detach())
    if handoff is not None:
        handoff(out, feat)
    if optimizer is not None:                        # branch 2: the block learns from its own loss
        optimizer.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    if sync_grads is not None:
        sync_grads(block)
    if optimizer is not None and scaler is None:
        optimizer.step()
    elif optimizer is not None:
        scaler.step(optimizer)
        scaler.update()
    return out, feat, loss.detach(), (logits.detach().argmax(1) == labels).sum()


class LocalLearning(DeviceStepMethod):
    """The blocks' optimizer (one fused AdamW for all of them; under fp16 one per block, each with its grad
    scaler), the heads' optimizer, one dropout generator per block, and device-side running statistics.

    A training step (:meth:`train_step`) has three parts: :meth:`begin_step` on the host (seeds the dropout
    generators, writes the step number into a device tensor), :meth:`device_step` (every block's forward,
    local loss, backward and update, the heads, the statistics: device work only, the same operators on the
    same shapes at every full-size step, so that ``graphs.py`` can capture it as one CUDA graph), and
    :meth:`end_step` on the host (counts the images, steps the schedules, which write the device lr tensors).
    """

    name = "asge"

    def __init__(self, net, cfg, total_steps: int, device: torch.device,
                 sync_grads: Optional[Callable[[nn.Module], None]] = None, stream: int = 0):
        self.net, self.cfg, self.sync_grads, self.stream = net, cfg, sync_grads, stream
        self.epoch_seed: Optional[int] = None        # set by start_epoch: seeds the dropout masks
        self.forwards = [compile_block(b) if getattr(cfg, "compile", False) else None for b in net.blocks]
        self.num_blocks = len(net.blocks)
        L = self.num_blocks
        self.scalers = ([torch.amp.GradScaler(device.type) for _ in net.blocks] if cfg.amp == "fp16"
                        else [None] * L)
        optimizer = functools.partial(BlockOptimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      total_steps=total_steps, min_lr=cfg.min_lr)
        if cfg.amp == "fp16":                        # a grad scaler per block: an optimizer per block
            self.block_optims = [optimizer([b]) for b in net.blocks]
            self.owner = [(l, 0) for l in range(L)]  # block l -> (its optimizer, its index there)
        else:
            self.block_optims = [optimizer(net.blocks)]
            self.owner = [(0, l) for l in range(L)]
        self.head_opt = OptSchedule(*make_optimizer(net.heads.parameters(), cfg.head_lr or cfg.lr,
                                                    cfg.weight_decay, total_steps, cfg.min_lr))
        self.generators = [torch.Generator(device=device) for _ in net.blocks]
        self.step_now = torch.zeros((), dtype=torch.long, device=device)   # the step, for the statistics
        self.autocast = autocast_for(cfg, device)
        self.device = device
        self.make_stats()

    @property
    def block_opts(self) -> list[OptSchedule]:
        """(optimizer, schedule) that updates each block (the same pair for every block but under fp16)."""
        return [OptSchedule(self.block_optims[i].opt, self.block_optims[i].sched) for i, _ in self.owner]

    def opt_schedules(self) -> list[OptSchedule]:
        """The blocks' (optimizer, schedule) (one, or one per block under fp16), then the heads'."""
        return [OptSchedule(bo.opt, bo.sched) for bo in self.block_optims] + [self.head_opt]

    def dropout_generators(self) -> list[torch.Generator]:
        """One per block: block l's dropout masks (seeded by :meth:`begin_step`)."""
        return self.generators

    # -- the step ---------------------------------------------------------------------------------------
    def start_epoch(self, seed: int) -> None:
        """Called by ``fit`` before each epoch with the epoch's seed: dropout masks are drawn from
        (seed, step, block), so any subset of the blocks (a pipeline stage) draws the same masks."""
        self.epoch_seed = seed

    def begin_step(self, step: int, lo: int = 0, hi: Optional[int] = None) -> None:
        """Host side, before the step: seed blocks lo..hi-1's dropout generators from (epoch seed, step,
        block) (the global RNG is never touched), and write ``step`` into the device tensor the statistics read."""
        if self.epoch_seed is not None:
            for l in range(lo, self.num_blocks if hi is None else hi):
                self.generators[l].manual_seed(dropout_seed(self.epoch_seed, step, l, self.stream))
        self.step_now.fill_(step)

    def device_step(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Every block's local step and update, the heads' step, the statistics: device work only."""
        _, feats, losses, correct = self.update_blocks(x, labels, 0, self.num_blocks)
        head_correct = self.heads_step(feats, labels)
        self.record(losses, correct, labels.shape[0], self.step_now, head_correct=head_correct)

    def end_step(self, batch: int, heads: bool = True) -> None:
        """Host side, after the step: count the batch and step the schedules (blocks', and the heads' if
        ``heads``), which write the learning rates into the optimizers' device tensors."""
        self.seen += batch
        self.steps += 1
        for bo in self.block_optims:
            bo.sched.step()
        if heads:
            self.head_opt.sched.step()

    def marked_step(self, x: torch.Tensor, labels: torch.Tensor, step: int, mark: Callable[[str], None]) -> None:
        """The device work of one step a block at a time, ``mark("block<l>")`` after block l (1-based), then the
        heads' step and ``mark("heads")``, then the statistics; no :meth:`end_step` (the schedules are not
        stepped, the images not counted)."""
        h, feats, losses, correct = x, [], [], []
        for l in range(self.num_blocks):
            h, f, lo, c = self.run_blocks(h, labels, step, l, l + 1)
            feats += f
            losses += lo
            correct += c
            mark(f"block{l + 1}")
        head_correct = self.heads_step(feats, labels)
        mark("heads")
        self.record(losses, correct, labels.shape[0], step, head_correct=head_correct)

    def run_blocks(self, h: torch.Tensor, labels: torch.Tensor, step: int, lo: int, hi: int,
                   handoff: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None):
        """Blocks lo..hi-1 (0-based) at ``step`` of the epoch: :meth:`begin_step` for them, then
        :meth:`update_blocks`. (The schedules are stepped by :meth:`end_step`.)"""
        self.begin_step(step, lo, hi)
        return self.update_blocks(h, labels, lo, hi, handoff)

    def update_blocks(self, h: torch.Tensor, labels: torch.Tensor, lo: int, hi: int,
                      handoff: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None):
        """``block_step`` through blocks lo..hi-1 (0-based), then one update of all of them. ``handoff(out,
        feats)`` is called with the last block's output and the GAP(Y_l) of blocks lo..hi-1, before any update.
        Returns (output of block hi-1, [GAP(Y_l)], [loss_l], [correct_l])."""
        seeded = self.epoch_seed is not None
        for i in sorted({self.owner[l][0] for l in range(lo, hi)}):
            self.block_optims[i].zero_grad()
        feats, losses, correct = [], [], []
        for l in range(lo, hi):
            h, feat, loss, right = block_step(self.net.blocks[l], None, h, labels,
                                              label_smoothing=self.cfg.label_smoothing, autocast=self.autocast,
                                              scaler=self.scalers[l], sync_grads=self.sync_grads,
                                              generator=self.generators[l] if seeded else None,
                                              forward=self.forwards[l],
                                              handoff=None if handoff is None or l < hi - 1 else
                                              (lambda out, feat, done=feats: handoff(out, done + [feat])))
            feats.append(feat)
            losses.append(loss)
            correct.append(right)
        if self.scalers[lo] is None:                 # one fused AdamW step: blocks without a gradient are skipped
            self.block_optims[0].opt.step()
        else:
            for l in range(lo, hi):
                self.scalers[l].step(self.block_optims[l].opt)
                self.scalers[l].update()
        return h, feats, losses, correct

    def heads_step(self, feats: list[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
        """Fusion and Last heads on detached features (their parameters are disjoint: one summed loss)."""
        opt = self.head_opt.opt
        fusion, last = self.net.heads(feats)
        loss = F.cross_entropy(fusion, labels) + F.cross_entropy(last, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.sync_grads is not None:
            self.sync_grads(self.net.heads)
        opt.step()
        self.head_loss_sum += loss.detach()
        return [(fusion.argmax(1) == labels).sum(), (last.argmax(1) == labels).sum()]

    # -- statistics (device tensors; one host sync per read) ------------------------------------------------
    def make_stats(self) -> None:
        """Create the statistics tensors, once: :meth:`reset_stats` zeroes them in place, so they keep the
        addresses a captured step writes to."""
        L = self.num_blocks
        self.loss_sum = torch.zeros(L, device=self.device)
        self.correct = torch.zeros(L + 2, dtype=torch.long, device=self.device)   # blocks, fusion, last
        self.head_loss_sum = torch.zeros((), device=self.device)
        self.first_bad_step = torch.full((L,), -1, dtype=torch.long, device=self.device)
        self.seen = 0
        self.steps = 0

    def reset_stats(self) -> None:
        for t in (self.loss_sum, self.correct, self.head_loss_sum):
            t.zero_()
        self.first_bad_step.fill_(-1)
        self.seen = 0
        self.steps = 0

    STATS = ("loss_sum", "correct", "head_loss_sum", "first_bad_step", "seen", "steps")

    def record(self, losses: list[torch.Tensor], correct: list[torch.Tensor], batch: int, step,
               lo: int = 0, head_correct: Optional[list[torch.Tensor]] = None) -> None:
        """Add one batch's losses and correct counts of blocks lo..lo+len(losses)-1 (and of the heads), on the
        device (the images and steps are counted by :meth:`end_step`). ``step``: an int or a 0-dim tensor."""
        hi = lo + len(losses)
        losses = torch.stack(losses)
        first_bad = self.first_bad_step[lo:hi]
        self.first_bad_step[lo:hi] = torch.where((first_bad < 0) & ~torch.isfinite(losses), step, first_bad)
        self.loss_sum[lo:hi] += losses * batch
        self.correct[lo:hi] += torch.stack(correct)
        if head_correct is not None:
            self.correct[-2:] += torch.stack(head_correct)

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
        return {"blocks": self.block_optims[0].opt.param_groups[0]["lr"],
                "heads": self.head_opt.opt.param_groups[0]["lr"]}

    # -- checkpointing ------------------------------------------------------------------------------------
    def block_state(self, l: int) -> dict:
        """Optimizer, schedule and (fp16) grad-scaler state of block ``l`` (0-based), in the layout of a
        one-block AdamW (:class:`~asge.train.optim.BlockOptimizer`)."""
        i, j = self.owner[l]
        state = self.block_optims[i].block_state(j)
        scaler = self.scalers[l]
        return dict(state, scaler=scaler.state_dict() if scaler is not None else {})

    def load_block_state(self, l: int, state: dict) -> None:
        i, j = self.owner[l]
        self.block_optims[i].load_block_state(j, state)
        scaler = self.scalers[l]
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])

    def heads_state(self) -> dict:
        return {"opt": self.head_opt.opt.state_dict(), "sched": self.head_opt.sched.state_dict()}

    def load_heads_state(self, state: dict) -> None:
        self.head_opt.opt.load_state_dict(state["opt"])
        self.head_opt.sched.load_state_dict(state["sched"])

    def state_dict(self) -> dict:
        return {"blocks": [self.block_state(l) for l in range(self.num_blocks)], "heads": self.heads_state()}

    def load_state_dict(self, state: dict) -> None:
        for l, block_state in enumerate(state["blocks"]):
            self.load_block_state(l, block_state)
        self.load_heads_state(state["heads"])
