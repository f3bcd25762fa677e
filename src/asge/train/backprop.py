"""The backpropagation baseline: the same blocks, trained end to end through GAP + the Last head."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NonFiniteLossError
from .local import autocast_for, make_optimizer
from .method import DeviceStepMethod, OptSchedule


class Backprop(DeviceStepMethod):
    """One AdamW over every block and the Last head, same schedule as ASGE. Blocks are not detached."""

    name = "bp"

    def __init__(self, net, cfg, total_steps: int, device: torch.device,
                 sync_grads: Optional[Callable[[nn.Module], None]] = None):
        self.net, self.cfg, self.device, self.sync_grads = net, cfg, device, sync_grads
        params = list(net.blocks.parameters()) + list(net.heads.last.parameters())
        self.opt, self.sched = make_optimizer(params, cfg.lr, cfg.weight_decay, total_steps, cfg.min_lr)
        self.autocast = autocast_for(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        self.forward = torch.compile(self.logits, dynamic=False) if getattr(cfg, "compile", False) else self.logits
        self.step_now = torch.zeros((), dtype=torch.long, device=device)   # the step, for the statistics
        self.make_stats()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks end to end, then GAP and the Last head: (B, C, H, W) -> (B, N)."""
        h = x
        for block in self.net.blocks:
            y, h = block(h)
        return self.net.heads.last(y.float().mean(dim=(2, 3)))

    def begin_step(self, step: int) -> None:
        """Host side: write ``step`` into the device tensor the statistics read (dropout draws from the
        global RNG, whose state checkpoints hold)."""
        self.step_now.fill_(step)

    def device_step(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Forward, backward, update and statistics: device work only (``graphs.py`` can capture it)."""
        with self.autocast():
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if self.sync_grads is not None:
                self.sync_grads(self.net)
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            if self.sync_grads is not None:
                self.sync_grads(self.net)
            self.scaler.step(self.opt)
            self.scaler.update()
        loss = loss.detach()
        self.first_bad_step.copy_(torch.where((self.first_bad_step < 0) & ~torch.isfinite(loss), self.step_now,
                                              self.first_bad_step))
        self.loss_sum += loss * labels.shape[0]
        self.correct += (logits.detach().argmax(1) == labels).sum()

    def end_step(self, batch: int) -> None:
        """Host side: count the batch, step the schedule (which writes the device lr tensor)."""
        self.seen += batch
        self.sched.step()

    def make_stats(self) -> None:
        """Create the statistics tensors once (:meth:`reset_stats` zeroes them in place: fixed addresses)."""
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.seen = 0

    def reset_stats(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.first_bad_step.fill_(-1)
        self.seen = 0

    STATS = ("loss_sum", "correct", "first_bad_step", "seen")

    def check_finite(self, epoch: int) -> None:
        s = int(self.first_bad_step)
        if s >= 0:
            raise NonFiniteLossError(block=None, step=s, epoch=epoch)

    def running(self) -> dict:
        n = max(self.seen, 1)
        return {"loss": float(self.loss_sum) / n, "acc": 100.0 * float(self.correct) / n}

    def epoch_stats(self) -> dict:
        r = self.running()
        return {"loss": r["loss"], "last_acc": r["acc"]}

    def lrs(self) -> dict:
        return {"blocks": self.opt.param_groups[0]["lr"]}

    def opt_schedules(self) -> list[OptSchedule]:
        """The one (optimizer, schedule) of every block and the Last head."""
        return [OptSchedule(self.opt, self.sched)]

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
