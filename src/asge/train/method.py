"""The interface of a training method: everything the epoch loop, the checkpoints and the tools use of one.

:class:`TrainingMethod` is what ``fit`` drives (``--method asge``: :class:`~asge.train.local.LocalLearning`,
``--method bp``: :class:`~asge.train.backprop.Backprop`, and the pipelined ASGE of ``pipeline.py``) and what
the wrappers (:class:`~asge.train.graphs.GraphedStep`, :class:`~asge.train.distributed.DistributedMethod`)
present again, delegating each member to the method they wrap.

:class:`DeviceStepMethod` is a method whose step splits into host work, device work and host work again
(``LocalLearning``, ``Backprop``): what a CUDA graph captures (``graphs.py``) and what a data-parallel rank
reduces (``distributed.py``).

Shapes: a batch is x (B, C, H, W) and labels (B,) (int64), on the method's device.
"""
from __future__ import annotations

import abc
from typing import Callable, ClassVar, NamedTuple, Optional

import torch
from torch import nn


class OptSchedule(NamedTuple):
    """An optimizer and the learning-rate schedule that steps it (``optim.make_optimizer``'s result)."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler


class TrainingMethod(abc.ABC):
    """A way to train a network: one step per batch, running statistics per epoch, a checkpointable state.

    Attributes every method has (a wrapper presents the wrapped method's):

    - ``name`` (str): what ``--method`` chooses (``"asge"``, ``"bp"``): ``asge.train.methods.METHODS``'s key.
    - ``net`` (``nn.Module``, an ``ASGENet``): the network it trains (its ``blocks`` and ``heads``).
    - ``seen`` (int): images trained on since :meth:`reset_stats` (all ranks' after a data-parallel
      :meth:`epoch_stats`).
    - ``graph``: the CUDA graph that replays the step (``torch.cuda.CUDAGraph``), None when the step runs
      eagerly (every method but a captured :class:`~asge.train.graphs.GraphedStep`).
    """

    name: ClassVar[str]
    net: nn.Module
    seen: int
    graph: Optional["torch.cuda.CUDAGraph"] = None

    # -- the step ---------------------------------------------------------------------------------------
    def start_epoch(self, seed: int) -> None:
        """Called before each epoch with the epoch's seed (an int). Default: nothing (ASGE seeds its dropout
        masks from it)."""

    @abc.abstractmethod
    def train_step(self, x: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """One training step on x (B, C, H, W) and labels (B,): forward, loss, backward, update, statistics.
        ``step``: the step's index in the epoch (0-based). No host sync."""

    def marked_step(self, x: torch.Tensor, labels: torch.Tensor, step: int, mark: Callable[[str], None]) -> None:
        """One step for a memory measurement (``perf/activation_memory.py``), calling ``mark(name)`` after
        each part whose peak is reported on its own. Default: :meth:`train_step`, no mark (one part).
        ASGE: each block (``"block1"``, ...), then ``"heads"``, without the host work after the step (the
        schedules are not stepped, the images not counted)."""
        self.train_step(x, labels, step)

    # -- running statistics (device tensors: one host sync per read) --------------------------------------
    @abc.abstractmethod
    def reset_stats(self) -> None:
        """Zero the running statistics (at an epoch's start), in place."""

    @abc.abstractmethod
    def stats_state(self) -> dict:
        """The epoch's running statistics so far, as copies ({name: tensor or int}): what a mid-epoch
        checkpoint holds, and :meth:`load_stats_state` puts back."""

    @abc.abstractmethod
    def load_stats_state(self, state: dict) -> None:
        """Put back what :meth:`stats_state` returned (resuming in the middle of an epoch)."""

    @abc.abstractmethod
    def check_finite(self, epoch: int) -> None:
        """Raise :class:`~asge.errors.NonFiniteLossError` (naming the block, the step and ``epoch``) if a loss
        of the epoch so far was not finite."""

    @abc.abstractmethod
    def running(self) -> dict:
        """Live numbers for the progress bar: {"loss": float, "acc": float (percent)} over the epoch so far."""

    @abc.abstractmethod
    def epoch_stats(self) -> dict:
        """The epoch's statistics, the ``train`` record of ``metrics.jsonl``. ASGE: {"block_loss": [L floats],
        "block_acc": [L], "fusion_acc", "last_acc", "head_loss"}; BP: {"loss", "last_acc"}. Accuracies in
        percent."""

    @abc.abstractmethod
    def lrs(self) -> dict:
        """The current learning rates: {"blocks": float} and, for ASGE, "heads"."""

    # -- optimizers and checkpoints -----------------------------------------------------------------------
    @abc.abstractmethod
    def opt_schedules(self) -> list[OptSchedule]:
        """Every (optimizer, schedule) the method steps, each once: ASGE the blocks' (one, or one per block
        under fp16) then the heads'; BP its one. ``optim.schedules`` and ``optim.optimizers`` read them
        (resuming stretches the schedules; a CUDA graph marks the optimizers capturable)."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Optimizer, schedule and grad-scaler states, ``last.pt``'s ``"method"`` (the model's weights are
        the network's own). ASGE: {"blocks": [per block {"opt", "sched", "scaler"}], "heads": {"opt",
        "sched"}}; BP: {"opt", "sched", "scaler"}."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Load what :meth:`state_dict` returned."""


class DeviceStepMethod(TrainingMethod):
    """A method whose step is :meth:`begin_step` on the host, :meth:`device_step` (device work only: no host
    sync, the same operators on the same shapes at every full-size step, so a CUDA graph can capture it)
    and :meth:`end_step` on the host; its running statistics are device tensors and ints it holds as
    attributes named in ``STATS``.

    Attributes besides :class:`TrainingMethod`'s: ``cfg`` (its ``TrainConfig``), ``device``
    (``torch.device``), ``first_bad_step`` (int64 tensor, one entry per block for ASGE, 0-dim for BP: the
    first step of the epoch whose loss was not finite, -1 if none), ``STATS`` (the names of the statistics
    attributes that :meth:`stats_state` copies).
    """

    STATS: ClassVar[tuple[str, ...]]
    cfg: object
    device: torch.device
    first_bad_step: torch.Tensor

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """:meth:`begin_step`, :meth:`device_step`, :meth:`end_step`."""
        self.begin_step(step)
        self.device_step(x, labels)
        self.end_step(labels.shape[0])

    @abc.abstractmethod
    def begin_step(self, step: int) -> None:
        """Host side, before the step: what the device step reads that changes with ``step`` (e.g. the step
        number in a device tensor, the dropout generators' seeds)."""

    @abc.abstractmethod
    def device_step(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Forward, loss, backward, update and statistics on x (B, C, H, W), labels (B,): device work only."""

    @abc.abstractmethod
    def end_step(self, batch: int) -> None:
        """Host side, after the step: count ``batch`` images, step the schedules (which write the learning
        rates into the optimizers' device tensors)."""

    def dropout_generators(self) -> list[torch.Generator]:
        """The generators :meth:`device_step` draws from (a CUDA graph registers them, so that a replay draws
        from their current seed). Default: none (the global RNG)."""
        return []

    def stats_state(self) -> dict:
        """Copies of the statistics named in ``STATS`` (device tensors and ints)."""
        return {k: getattr(self, k).clone() if torch.is_tensor(getattr(self, k)) else getattr(self, k)
                for k in self.STATS}

    def load_stats_state(self, state: dict) -> None:
        """Put back what :meth:`stats_state` took: tensors copied into the method's own (on its device, at
        their addresses), ints set."""
        for k, v in state.items():
            if torch.is_tensor(getattr(self, k)):
                getattr(self, k).copy_(v)
            else:
                setattr(self, k, v)


__all__ = ["TrainingMethod", "DeviceStepMethod", "OptSchedule"]
