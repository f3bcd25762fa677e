"""Data-parallel training: ``torchrun --nproc_per_node=N -m asge train ...``.

Every rank builds the same network, receives the main rank's initial (or resumed) state, and walks the
same global sequence of batches (same seed, same permutation); at every step rank r trains on its own
contiguous slice of the global batch. Each block's gradient is all-reduced right after that block's
backward (``block_step``'s ``sync_grads``), weighted by the slice's share of the batch, so every rank
applies the update of the whole batch and the ranks stay identical; the heads likewise. Buffers that each
rank updates from its own slice (BatchNorm's running statistics) are rank 0's on every rank after each
epoch, as DDP's ``broadcast_buffers`` makes them. Every rank evaluates and tests its share of each batch;
only rank 0 writes the run directory. Every collective is made
by every rank at the same point whatever the options; a rank that fails is named to the others through
torchrun's store (``peers.py``). Backend: NCCL on GPUs (rank r uses ``cuda:LOCAL_RANK``), gloo on
CPU.

Multi-node: torchrun's usual rendezvous, e.g. on each of 2 machines
``torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 --rdzv_id=job1
-m asge train ...``; the run directory is written by global rank 0 (resuming reads it there and sends the
checkpoint to the other ranks).
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..errors import AsgeError, PeerFailedError, Preempted
from . import peers
from .method import DeviceStepMethod, OptSchedule, TrainingMethod

#: How long a collective waits for a rank that does not answer (a rank that dies is noticed at once: its
#: connections close). Every rank evaluates its share, so no rank waits long on another in a healthy run.
TIMEOUT = datetime.timedelta(minutes=float(os.environ.get("ASGE_DIST_TIMEOUT_MIN", "10")))


def free_port() -> int:
    """A TCP port that was free a moment ago on localhost."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_seed(seed: int, rank: int) -> int:
    """The global RNG seed of ``rank`` for an epoch seeded ``seed`` (rank 0 keeps ``seed``)."""
    return seed if rank == 0 else (seed * 0x9E3779B1 + rank * 0x85EBCA77) % (2 ** 63)


def flat_all_reduce_(tensors: list[torch.Tensor], weight: Optional[float] = None) -> None:
    """Sum ``tensors`` over the ranks in one collective (after scaling by ``weight``), in place."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    if weight is not None:
        flat.mul_(weight)
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


class GradSync:
    """``sync_grads`` for ``block_step`` and the trainers: the batch-weighted mean of every gradient.

    ``weight`` is this rank's share of the current global batch (its images / the batch's images), so the
    summed gradient is the gradient of the whole batch's mean loss even when the slices differ in size.
    Parameters without a gradient are skipped (the same ones on every rank).
    """

    def __init__(self):
        self.weight = 1.0

    def __call__(self, module: nn.Module) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat_all_reduce_(grads, self.weight)


@dataclasses.dataclass
class World:
    """This process's place in the data-parallel group (what ``fit`` needs of it)."""

    rank: int
    size: int
    local_rank: int
    device: torch.device
    host_group: Optional[object] = None   # a gloo group for host-side agreement (None: the default group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rng_seed(self, seed: int) -> int:
        return rank_seed(seed, self.rank)

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def broadcast_module(self, net: nn.Module) -> None:
        """Every parameter and buffer from rank 0 (one collective per dtype)."""
        self._broadcast([t.data for t in net.parameters()] + list(net.buffers()))

    def broadcast_buffers(self, net: nn.Module) -> None:
        """Every buffer from rank 0 (as DDP's ``broadcast_buffers``): BatchNorm's running statistics, which
        each rank updates from its own slice of the batches, so that every rank evaluates the network rank 0
        checkpoints."""
        self._broadcast(list(net.buffers()))

    def _broadcast(self, tensors: list[torch.Tensor]) -> None:
        """``tensors`` overwritten in place by rank 0's (one collective per dtype)."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()

    def all_reduce_(self, t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        dist.all_reduce(t, op=op)
        return t

    def max_int(self, value: int) -> int:
        """The largest ``value`` over the ranks (e.g. a stop signal that only some ranks received), agreed on
        the host: on GPUs it does not wait for the queued GPU work."""
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.host_group)
        return int(t.item())

    def all_gather_object(self, obj) -> list:
        every = [None] * self.size
        dist.all_gather_object(every, obj)
        return every

    def barrier(self) -> None:
        dist.barrier()

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice [lo, hi) of a global batch of ``n`` (sizes differ by at most one)."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size


class DistributedMethod(TrainingMethod):
    """Wraps a trainer (``LocalLearning`` or ``Backprop``) for one rank: slices each global batch, sets the
    gradient weights, and reduces the epoch's statistics over the ranks. Every other member is the
    trainer's own."""

    def __init__(self, inner: DeviceStepMethod, world: World, sync: GradSync):
        self.inner, self.world, self.sync = inner, world, sync

    # -- the wrapped trainer's members ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def net(self) -> nn.Module:
        return self.inner.net

    @property
    def seen(self) -> int:
        """This rank's images, or after :meth:`epoch_stats` the whole group's."""
        return self.inner.seen

    @property
    def graph(self):
        return self.inner.graph

    def start_epoch(self, seed: int) -> None:
        self.inner.start_epoch(seed)

    def reset_stats(self) -> None:
        self.inner.reset_stats()

    def running(self) -> dict:
        """This rank's share so far (no collective: the progress bar reads it at any step)."""
        return self.inner.running()

    def lrs(self) -> dict:
        return self.inner.lrs()

    def opt_schedules(self) -> list[OptSchedule]:
        return self.inner.opt_schedules()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    # -- this rank's share of a step ----------------------------------------------------------------------
    def shard(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of a global batch, with the gradient weight set to its share."""
        n = labels.shape[0]
        if n < self.world.size:
            raise AsgeError(f"a batch of {n} images cannot be split over {self.world.size} ranks; "
                            "use a batch size (and a dataset size modulo it) of at least the number of ranks")
        lo, hi = self.world.shard(n)
        self.sync.weight = (hi - lo) / n
        return x[lo:hi], labels[lo:hi]

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        self.inner.train_step(*self.shard(x, labels), step)

    def marked_step(self, x: torch.Tensor, labels: torch.Tensor, step: int, mark) -> None:
        """The trainer's own, on this rank's slice."""
        self.inner.marked_step(*self.shard(x, labels), step, mark)

    def _reduce_first_bad(self) -> None:
        fb = self.inner.first_bad_step
        big = torch.iinfo(fb.dtype).max
        t = torch.where(fb < 0, torch.full_like(fb, big), fb)
        self.world.all_reduce_(t, dist.ReduceOp.MIN)
        self.inner.first_bad_step = torch.where(t == big, torch.full_like(t, -1), t)

    def check_finite(self, epoch: int) -> None:
        self._reduce_first_bad()       # every rank raises at the same check, none is left waiting
        self.inner.check_finite(epoch)

    def epoch_stats(self) -> dict:
        """The statistics of the whole epoch (all ranks' slices); ``seen`` becomes the global count."""
        m = self.inner
        for name in ("loss_sum", "correct", "head_loss_sum"):
            if name in m.STATS:
                self.world.all_reduce_(getattr(m, name))
        if "head_loss_sum" in m.STATS:
            m.head_loss_sum /= self.world.size          # a per-step mean summed over the ranks
        seen = torch.tensor([float(m.seen)], device=self.world.device)
        m.seen = int(self.world.all_reduce_(seen).item())
        self.check_agreement()
        self.world.broadcast_buffers(m.net)           # validation next: every rank with rank 0's statistics
        return m.epoch_stats()

    SUMMED = ("loss_sum", "correct", "head_loss_sum", "seen")   # statistics that add up over the ranks

    def stats_state(self) -> dict:
        """The whole group's statistics so far (a collective): sums over the ranks, this rank's step count."""
        state = self.inner.stats_state()
        for name in self.SUMMED:
            if name == "seen":
                seen = torch.tensor([float(state["seen"])], dtype=torch.float64, device=self.world.device)
                state["seen"] = int(self.world.all_reduce_(seen).item())
            elif name in state:
                self.world.all_reduce_(state[name])
        return state

    def load_stats_state(self, state: dict) -> None:
        """The main rank takes the group's sums, the others start from zero: the epoch's reduction adds up."""
        if not self.world.is_main:
            state = {k: (0 if k == "seen" else torch.zeros_like(v)) if k in self.SUMMED else v
                     for k, v in state.items()}
        self.inner.load_stats_state(state)

    def check_agreement(self) -> None:
        """All ranks must hold bitwise the same parameters (same reduced gradients, same updates)."""
        mine = parameters_checksum(self.inner.net).to(self.world.device)
        every = [torch.empty_like(mine) for _ in range(self.world.size)]
        dist.all_gather(every, mine)
        self.checksum = mine.tolist()
        if not all(torch.equal(every[0], c) for c in every[1:]):
            raise AsgeError("data-parallel ranks hold different parameters (checksums "
                            f"{[c.tolist() for c in every]}); the run is not consistent")


def init_world(cfg) -> World:
    """Join the group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    from ..runs.build import resolve_device
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if "ASGE_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["ASGE_THREADS"]))
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), timeout=TIMEOUT,
                                **({"device_id": device} if device.type == "cuda" else {}))
    peers.announce(rank)
    host_group = dist.new_group(backend="gloo") if device.type == "cuda" else None
    return World(rank, size, local, device, host_group)


def lost_peer(error: Exception, world: World) -> Optional[PeerFailedError]:
    """The one-line error for a collective that broke because another rank failed (None: this rank's own
    error, to raise as it is)."""
    who = peers.who_failed(world.rank, world.size)
    text = " ".join(str(error).split())
    if who is None and not any(s in text for s in ("gloo", "Connection closed", "Timed out", "NCCL", "timeout")):
        return None
    reason = who or f"the ranks lost each other ({text[:200]})"
    return PeerFailedError(f"data-parallel run stopped: {reason}; every rank stopped, the last checkpoint is kept "
                     "(continue with --resume)")


def fit_distributed(cfg, *, resume: bool = False, log: Callable[[str], None] = print,
                    on_epoch_end=None) -> dict:
    """``fit`` as one rank of a torchrun group. Rank 0 returns the summary, the others ``{"rank": r}``."""
    from .methods import METHODS
    from .loop import train_run
    world = init_world(cfg)
    sync = GradSync()

    def factory(net, cfg_, total_steps, device):
        inner = METHODS[cfg_.method](net, cfg_, total_steps, device, sync_grads=sync)
        factory.method = DistributedMethod(inner, world, sync)
        return factory.method

    if not world.is_main:
        cfg = dataclasses.replace(cfg, progress="none")
        log = lambda *_: None  # noqa: E731
    try:
        out = train_run(cfg, resume=resume, log=log, method_factory=factory, world=world,
                  on_epoch_end=on_epoch_end if world.is_main else None)
        # Leave together: a rank that tears the group down while rank 0 is still testing and writing
        # the summary can abort the process (gloo: "terminate called without an active exception").
        dist.barrier()
        return dict(out, world_size=world.size, ranks_agree=True, parameter_checksum=factory.method.checksum)
    except Preempted:
        raise
    except Exception as e:
        lost = lost_peer(e, world) if isinstance(e, RuntimeError) else None
        if lost is not None:
            raise lost from None
        peers.note_failure(world.rank, " ".join(str(e).split()) or type(e).__name__)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        peers.close()


def parameters_checksum(net: nn.Module) -> torch.Tensor:
    """float64 (sum, sum of squares) over every parameter: equal on all ranks after a data-parallel run."""
    flat = torch.cat([p.detach().double().reshape(-1) for p in net.parameters()])
    return torch.stack([flat.sum(), flat.square().sum()])
