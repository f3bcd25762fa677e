"""The optimizers of both methods: AdamW whose learning rate lives in a device tensor, the cosine schedule
that writes it, and one AdamW over several blocks whose state still reads and loads block by block.

Why a device tensor: a learning rate passed as a Python float is a scalar argument of the update kernel,
new at every step, so a CUDA graph of the step would replay the first one for ever. Held in a tensor that
the schedule fills after each step, the update reads it on the device (``train/graphs.py``).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import CheckpointError


def lr_dtype(device: torch.device) -> torch.dtype:
    """The learning-rate tensor's dtype: float64 on CPU, where the fused kernel reads the tensor as a double
    (so the update is bitwise the one a Python float gives); float32 elsewhere (CUDA's kernel reads a float)."""
    return torch.float64 if device.type == "cpu" else torch.float32


class DeviceLRAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose step reads each param group's learning rate from ``lr_tensors`` (0-dim,
    on the parameters' device). ``group["lr"]`` stays the Python float that schedules and checkpoints see;
    :meth:`write_lr` copies it into the tensor (the schedule does, after each of its steps)."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        device = next((p.device for g in self.param_groups for p in g["params"]), torch.device("cpu"))
        self.lr_tensors = [torch.tensor(g["lr"], dtype=lr_dtype(device), device=device) for g in self.param_groups]

    def write_lr(self) -> None:
        """Copy every group's float learning rate into its tensor (one fill per group; no host sync)."""
        for group, t in zip(self.param_groups, self.lr_tensors):
            t.fill_(group["lr"])

    def step(self, closure=None):
        floats = [g["lr"] for g in self.param_groups]
        for group, t in zip(self.param_groups, self.lr_tensors):
            group["lr"] = t
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, floats):
                group["lr"] = lr

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self.write_lr()


class CosineLR(torch.optim.lr_scheduler.CosineAnnealingLR):
    """``CosineAnnealingLR`` (the same float values, the same state_dict) that also writes the optimizer's
    learning-rate tensors after every step and load."""

    def step(self, epoch=None) -> None:
        super().step(epoch)
        if isinstance(self.optimizer, DeviceLRAdamW):
            self.optimizer.write_lr()

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        if isinstance(self.optimizer, DeviceLRAdamW):
            self.optimizer.write_lr()


def make_optimizer(params, lr: float, weight_decay: float, total_steps: int, min_lr: float):
    """AdamW with a per-step cosine schedule from ``lr`` to ``min_lr`` over ``total_steps``:
    (:class:`DeviceLRAdamW`, :class:`CosineLR`).

    The fused implementation (one kernel per parameter, cheaper than the default per-tensor loop: measured in
    docs/performance.md) wherever torch has it: CPU and CUDA float parameters. Its updates equal the loop's
    to rounding (it evaluates the same formula in one pass, in another order).
    """
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = bool(tensors) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    opt = DeviceLRAdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    sched = CosineLR(opt, T_max=max(1, total_steps), eta_min=min(min_lr, lr))
    return opt, sched


class BlockOptimizer:
    """One AdamW and one schedule for the parameters of several blocks: one fused update per step for all of
    them (their parameters are disjoint, and the fused kernel updates every tensor element by element, so
    this is bitwise the same as one AdamW per block). ``block_state(l)`` / ``load_block_state(l, state)``
    read and load block ``l``'s part in the layout of a one-block AdamW's ``state_dict``: the layout of each
    block's entry in a checkpoint, and what the pipeline's stages exchange."""

    def __init__(self, blocks: Iterable[nn.Module], lr: float, weight_decay: float, total_steps: int,
                 min_lr: float):
        self.params = [list(b.parameters()) for b in blocks]
        self.opt, self.sched = make_optimizer([p for ps in self.params for p in ps], lr, weight_decay,
                                              total_steps, min_lr)
        self.first = [sum(len(ps) for ps in self.params[:i]) for i in range(len(self.params))]

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def block_state(self, i: int) -> dict:
        """Block ``i``'s (0-based, among this optimizer's blocks) optimizer and schedule state."""
        full = self.opt.state_dict()
        first, n = self.first[i], len(self.params[i])
        state = {j - first: full["state"][j] for j in range(first, first + n) if j in full["state"]}
        group = dict(full["param_groups"][0], params=list(range(n)))
        return {"opt": {"state": state, "param_groups": [group]}, "sched": self.sched.state_dict()}

    def load_block_state(self, i: int, state: dict) -> None:
        """Load what :meth:`block_state` returns (or a one-block AdamW's state_dict of the same block)."""
        groups = state["opt"]["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params[i]):
            got = "+".join(str(len(g["params"])) for g in groups)
            raise CheckpointError(f"the checkpoint's optimizer state of a block holds {got} parameters, the "
                                  f"block has {len(self.params[i])}: it comes from another model or version")
        one = DeviceLRAdamW(self.params[i], lr=groups[0]["lr"], fused=groups[0].get("fused"))
        one.load_state_dict(state["opt"])                        # casts and places the state as AdamW does
        for p in self.params[i]:
            self.opt.state.pop(p, None)
            if p in one.state:
                self.opt.state[p] = one.state[p]
        for key in ("lr", "initial_lr"):                         # the rest comes from the configuration
            if key in groups[0]:
                self.opt.param_groups[0][key] = groups[0][key]
        self.sched.load_state_dict(state["sched"])


def schedules(method) -> list[CosineLR]:
    """Every cosine schedule of a training method (a ``method.TrainingMethod``), in the order of its
    ``opt_schedules()``: ASGE's blocks' then heads', or backprop's one."""
    return [pair.sched for pair in method.opt_schedules()]


def optimizers(method) -> list[torch.optim.Optimizer]:
    """Every optimizer a training method steps, in the order of :func:`schedules` (each schedule's own)."""
    return [pair.opt for pair in method.opt_schedules()]


__all__ = ["DeviceLRAdamW", "CosineLR", "make_optimizer", "BlockOptimizer", "lr_dtype", "optimizers", "schedules"]
