"""The whole training step as one CUDA graph (``--cuda-graphs on``), for both methods.

A method's ``device_step(x, labels)`` (``local.py``, ``backprop.py``: a ``method.DeviceStepMethod``) is
device work only: every block's forward, local loss, backward and fused AdamW update, the heads, the running
statistics, with the same operators on the same shapes at every full-size step, no host sync and no
RNG-state call. So it is captured once per run and replayed for every full-size batch: the host then
launches one graph per step instead of each of the step's operators. Around each replay the host does what
cannot be captured:

- before: ``begin_step`` (re-seeds the per-block dropout generators, which are registered with the graph so
  that a replay draws from their current seed, and writes the step number into a device tensor), and
  ``copy_`` of the batch into the static input buffers;
- after: ``end_step`` (counts the images; the schedules write the learning rates into the optimizers'
  device tensors, which the captured fused AdamW reads; ``capturable`` is set on its param groups).

The first full-size steps run eagerly on a side stream (CUDA's lazy initialisation, the optimizer state),
then the next one is captured and replayed, and every later full-size step is a replay; a smaller batch (the
last of an epoch) runs eagerly. Graph and eager steps compute the same kernels in the same order.

``--cuda-graphs``: ``off`` and ``auto`` (the default) run every step eagerly; ``on`` captures the step where
nothing blocks it (:func:`graphs_blocker`): fp16 (the grad scaler's host logic), ``--compile``, ``--pipeline``
and torchrun stay eager, saying so once; on a device other than CUDA ``on`` is an error.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..errors import AsgeError
from .method import DeviceStepMethod, OptSchedule, TrainingMethod
from .optim import optimizers


def graphs_blocker(cfg, device: torch.device, world=None) -> Optional[str]:
    """Why this run cannot be captured (None: it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (this run is on {device.type})"
    if cfg.amp == "fp16":
        return "fp16's grad scaler checks for inf on the host every step"
    if getattr(cfg, "compile", False):
        return "--compile replaces the eager kernels that a graph captures"
    if getattr(cfg, "pipeline", 1) > 1:
        return "--pipeline stages exchange batches between processes every step"
    if world is not None:
        return "data-parallel ranks all-reduce gradients between processes every step"
    return None


def use_cuda_graphs(cfg, device: torch.device, world=None, log: Callable[[str], None] = print) -> bool:
    """Whether to capture: ``cfg.cuda_graphs`` is ``on`` and nothing blocks it (``off`` and ``auto``: never).
    ``on`` where it cannot apply: on a CPU (or other non-CUDA device) an error in one line; for fp16,
    --compile, --pipeline, torchrun one line saying the run stays eager."""
    mode = getattr(cfg, "cuda_graphs", "auto")
    if mode in ("off", "auto"):               # auto: eager (the capture is only made when asked for)
        return False
    why = graphs_blocker(cfg, device, world)
    if why is None:
        return True
    if mode == "on" and device.type != "cuda":
        raise AsgeError(f"--cuda-graphs on: {why}; use --cuda-graphs off (or auto)")
    if mode == "on" and (world is None or world.is_main):
        log(f"--cuda-graphs: this run stays eager: {why}")
    return False


class GraphedStep(TrainingMethod):
    """Wraps a method (``LocalLearning`` or ``Backprop``): the same interface, each member the method's own,
    but ``train_step`` replays one captured ``device_step`` for every batch of ``cfg.batch_size`` images
    (x (B, C, H, W) in one layout, labels (B,)), and ``graph`` is that capture (None before it).
    ``warmup``: eager full-size steps first."""

    def __init__(self, method: DeviceStepMethod, warmup: int = 3):
        self.method, self.warmup = method, max(1, warmup)   # (the optimizer state is made at a first step)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_x: Optional[torch.Tensor] = None
        self.static_y: Optional[torch.Tensor] = None
        self.eager_full = 0
        self.side = torch.cuda.Stream(device=method.device)

    # -- the wrapped method's members -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.method.name

    @property
    def net(self):
        return self.method.net

    @property
    def seen(self) -> int:
        return self.method.seen

    def start_epoch(self, seed: int) -> None:
        self.method.start_epoch(seed)

    def marked_step(self, x: torch.Tensor, labels: torch.Tensor, step: int, mark: Callable[[str], None]) -> None:
        """The method's own (eager: a measurement is not replayed)."""
        self.method.marked_step(x, labels, step, mark)

    def reset_stats(self) -> None:
        self.method.reset_stats()               # in place: the addresses the graph writes to stay

    def stats_state(self) -> dict:
        return self.method.stats_state()

    def load_stats_state(self, state: dict) -> None:
        self.method.load_stats_state(state)

    def check_finite(self, epoch: int) -> None:
        self.method.check_finite(epoch)

    def running(self) -> dict:
        return self.method.running()

    def epoch_stats(self) -> dict:
        return self.method.epoch_stats()

    def lrs(self) -> dict:
        return self.method.lrs()

    def opt_schedules(self) -> list[OptSchedule]:
        return self.method.opt_schedules()

    def state_dict(self) -> dict:
        return self.method.state_dict()

    # -- the graphed step -------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        m = self.method
        if x.shape[0] != m.cfg.batch_size:
            m.train_step(x, labels, step)     # a smaller (last) batch: eager
            return
        if self.static_x is None:
            self.static_x, self.static_y = torch.empty_like(x), torch.empty_like(labels)   # keeps x's layout
        if x.shape != self.static_x.shape or x.stride() != self.static_x.stride() or x.dtype != self.static_x.dtype:
            m.train_step(x, labels, step)     # not the captured layout: eager
            return
        if self.graph is None and self.eager_full < self.warmup:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                m.train_step(x, labels, step)
            torch.cuda.current_stream().wait_stream(self.side)
            self.eager_full += 1
            return
        m.begin_step(step)
        self.static_x.copy_(x)
        self.static_y.copy_(labels)
        if self.graph is None:
            self.capture()
        self.graph.replay()
        m.end_step(labels.shape[0])

    def capture(self) -> None:
        """Capture ``device_step`` on the static buffers (recorded, not run: the replay that follows runs it)."""
        m = self.method
        groups = [g for opt in optimizers(m) for g in opt.param_groups]
        for group in groups:
            group["capturable"] = True        # the fused kernel is the same; this only allows the capture
        try:
            graph = torch.cuda.CUDAGraph()
            for gen in m.dropout_generators():
                graph.register_generator_state(gen)
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):   # (data-loading threads)
                m.device_step(self.static_x, self.static_y)
        finally:
            for group in groups:
                group["capturable"] = False   # eager steps (the last, smaller batch) as before
        self.graph = graph

    def load_state_dict(self, state: dict) -> None:
        """Loading optimizer states replaces the tensors a graph reads: capture again (after warm-up)."""
        self.method.load_state_dict(state)
        self.graph, self.eager_full = None, 0


def maybe_graphed(method, cfg, device: torch.device, world=None, log: Callable[[str], None] = print):
    """``method`` wrapped in :class:`GraphedStep` when :func:`use_cuda_graphs` says so, else as it is."""
    return GraphedStep(method) if use_cuda_graphs(cfg, device, world, log) else method


__all__ = ["GraphedStep", "use_cuda_graphs", "graphs_blocker", "maybe_graphed"]
