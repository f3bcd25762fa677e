"""Pipelined ASGE (``asge train --pipeline K``): the seed's two branches, run in K processes.

The blocks are split into K contiguous stages, one process each (torch.distributed point-to-point: gloo on
CPU, NCCL on GPUs, stage k on its own GPU). Stage k receives a batch's detached activation, labels and the
GAP features of the blocks before it, runs ``block_step`` on each of its blocks and hands the last block's
output on to stage k+1 *before* that block's update (``block_step``'s ``handoff``), then updates and waits
for the next batch. So while stage k+1 works on batch t, stage k already works on batch t+1; the weights
that produce batch t's activations are the same as in the sequential loop, and so is every update: on CPU
the result equals ``fit`` without a pipeline bit for bit (same seed, same threads per process). Dropout
masks are seeded per (epoch, step, block) in both modes, so every stage draws the masks the sequential loop
draws. The last stage trains the Fusion and Last heads on the features it received.

Stage 0 is the calling process: it is ``fit``'s method (:class:`PipelineLearning`), loads the data, and
gathers the other stages' statistics, weights and optimizer states when ``fit`` needs them (epoch end,
checkpoint), so evaluation, checkpoints and resuming are those of the sequential loop: a pipelined run can
be resumed without a pipeline and the other way round.
"""
from __future__ import annotations

import collections
import traceback
from typing import Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..errors import AsgeError
from ..runs.preempt import ignore_stop_signals
from .distributed import TIMEOUT, backend_for, free_port
from .local import LocalLearning

# Message kinds (first entry of every header).
TRAIN, EPOCH, STATS, PULL, PUSH, STOP = range(6)
HEADER = 5                                         # [kind, batch, step (EPOCH: the seed), dtype, channels_last]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
MAX_IN_FLIGHT = 4                                  # batches a stage may send ahead of its successor


def stage_bounds(net, stages: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) block ranges of near-equal training cost (conv MACs plus the element-wise work
    on each block's output), each stage at least one block."""
    L = len(net.blocks)
    if not 1 <= stages <= L:
        raise AsgeError(f"--pipeline {stages}: needs between 1 and {L} stages (one block at least per stage)")
    cost = [b.conv_macs() + 40 * b.out_channels * b.in_size ** 2 for b in net.blocks]
    total, bounds, lo, acc = sum(cost), [], 0, 0.0
    for k in range(stages - 1):
        target = total * (k + 1) / stages
        hi = lo + 1
        acc += cost[lo]
        while hi < L - (stages - 2 - k) and acc + cost[hi] / 2 < target:
            acc += cost[hi]
            hi += 1
        bounds.append((lo, hi))
        lo = hi
    bounds.append((lo, L))
    return bounds


def stage_device(device: torch.device, rank: int) -> torch.device:
    if device.type == "cuda":
        first = device.index or 0
        return torch.device("cuda", (first + rank) % torch.cuda.device_count())
    return device


class _Stage(LocalLearning):
    """One stage's share of ``LocalLearning``: its blocks (and, if last, the heads) and the wire protocol."""

    def setup_stage(self, rank: int, bounds: list[tuple[int, int]]):
        self.rank, self.bounds, self.K = rank, bounds, len(bounds)
        self.lo, self.hi = bounds[rank]
        self.last = rank == self.K - 1
        self.in_flight: collections.deque = collections.deque()
        self.cum_channels = [sum(b.head_dim for b in self.net.blocks[:i]) for i in range(len(self.net.blocks) + 1)]

    # -- sending / receiving ---------------------------------------------------------------------------
    def _wait(self, work) -> None:
        work.wait()

    def _isend(self, tensors: list[torch.Tensor], dst: int) -> None:
        works = [dist.isend(t, dst) for t in tensors]
        self.in_flight.append((works, tensors))
        while len(self.in_flight) > MAX_IN_FLIGHT:
            self._drain_one()

    def _drain_one(self) -> None:
        works, _ = self.in_flight.popleft()
        for w in works:
            self._wait(w)

    def drain(self) -> None:
        while self.in_flight:
            self._drain_one()

    def _recv(self, shape, dtype, src: int) -> torch.Tensor:
        t = torch.empty(shape, dtype=dtype, device=self.device)
        self._wait(dist.irecv(t, src))
        return t

    def header(self, kind: int, batch: int = 0, step: int = 0, dtype: int = 0, cl: int = 0) -> torch.Tensor:
        return torch.tensor([kind, batch, step, dtype, cl], dtype=torch.int64, device=self.device)

    def send_on(self, header: torch.Tensor, labels, out: torch.Tensor, feats: list[torch.Tensor]) -> None:
        """Hand a batch to the next stage: header, labels, activation (in its memory format), features."""
        cl = out.dim() == 4 and not out.is_contiguous() and out.is_contiguous(memory_format=torch.channels_last)
        header = header.clone()
        header[3] = DTYPES.index(out.dtype)
        header[4] = int(cl)
        wire = out.permute(0, 2, 3, 1) if cl else out.contiguous()
        self._isend([header, labels, wire, torch.cat(feats, 1).float()], self.rank + 1)

    def recv_batch(self, header: torch.Tensor):
        _, batch, _, dtype, cl = header.tolist()
        b = self.net.blocks[self.lo - 1]
        c, s = b.out_channels, b.out_size
        labels = self._recv((batch,), torch.int64, self.rank - 1)
        shape = (batch, s, s, c) if cl else (batch, c, s, s)
        x = self._recv(shape, DTYPES[dtype], self.rank - 1)
        if cl:
            x = x.permute(0, 3, 1, 2)
        flat = self._recv((batch, self.cum_channels[self.lo]), torch.float32, self.rank - 1)
        sizes = [blk.head_dim for blk in self.net.blocks[:self.lo]]
        feats = [f.contiguous() for f in flat.split(sizes, dim=1)]
        return x, labels, feats

    # -- one batch through this stage ------------------------------------------------------------------
    def stage_step(self, x, labels, step: int, feats_in: list[torch.Tensor], header: torch.Tensor) -> None:
        handoff = None if self.last else (lambda out, feats: self.send_on(header, labels, out, feats_in + feats))
        _, feats, losses, correct = self.run_blocks(x, labels, step, self.lo, self.hi, handoff)
        head_correct = self.heads_step(feats_in + feats, labels) if self.last else None
        self.record(losses, correct, labels.shape[0], step, lo=self.lo, head_correct=head_correct)
        self.end_step(labels.shape[0], heads=self.last)

    # -- state exchanged with stage 0 ------------------------------------------------------------------
    def owned_modules(self, rank: int) -> list[torch.nn.Module]:
        lo, hi = self.bounds[rank]
        mods = list(self.net.blocks[lo:hi])
        return mods + [self.net.heads] if rank == self.K - 1 else mods

    def owned_state(self, rank: int) -> dict:
        lo, hi = self.bounds[rank]
        state = {"blocks": {l: self.block_state(l) for l in range(lo, hi)}}
        if rank == self.K - 1:
            state["heads"] = self.heads_state()
        return state

    def load_owned_state(self, state: dict) -> None:
        for l, block_state in state["blocks"].items():
            self.load_block_state(l, block_state)
        if "heads" in state:
            self.load_heads_state(state["heads"])

    def module_tensors(self, rank: int) -> list[torch.Tensor]:
        return [t for m in self.owned_modules(rank) for t in m.state_dict(keep_vars=True).values()]

    def stats_tensor(self) -> torch.Tensor:
        return torch.cat([self.loss_sum.double(), self.correct.double(), self.head_loss_sum.double().view(1),
                          self.first_bad_step.double()]).view(-1)

    def stats_size(self) -> int:
        return 3 * self.num_blocks + 3


def _worker(rank: int, bounds, port: int, cfg, info, total_steps: int, threads: int, device: str) -> None:
    """Stages 1..K-1: serve messages from the previous stage until STOP."""
    from ..runs.allocator import tune_malloc
    from ..runs.build import build_model
    ignore_stop_signals()                     # stage 0 stops the pipeline, at a step it chooses
    tune_malloc()                             # as the asge command does in stage 0 (allocator.py)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    K = len(bounds)
    dist.init_process_group(backend_for(dev), init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=K,
                            timeout=TIMEOUT)
    try:
        torch.manual_seed(cfg.seed)
        net = build_model(cfg, info).to(dev)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        net.train()
        st = _Stage(net, cfg, total_steps, dev)
        st.setup_stage(rank, bounds)
        _serve(st)
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        dist.destroy_process_group()


def _serve(st: _Stage) -> None:
    prev = st.rank - 1
    while True:
        header = st._recv((HEADER,), torch.int64, prev)
        kind, _, step, _, _ = header.tolist()
        if kind == TRAIN:
            x, labels, feats = st.recv_batch(header)
            st.stage_step(x, labels, step, feats, header)
            continue
        if not st.last:                       # control messages travel down the chain first
            st._isend([header], st.rank + 1)
        if kind == EPOCH:
            st.start_epoch(step)
            st.reset_stats()
        elif kind == STATS:
            st._isend([st.stats_tensor()], 0)
            st.drain()
        elif kind == PULL:                    # weights and optimizer states to stage 0
            for t in st.module_tensors(st.rank):
                st._isend([t.detach().contiguous().clone()], 0)
            st.drain()
            dist.send_object_list([st.owned_state(st.rank)], 0, device=_obj_device(st.device))
        elif kind == PUSH:                    # weights (and optionally optimizer states) from stage 0
            for t in st.module_tensors(st.rank):
                buf = st._recv(t.shape, t.dtype, 0)
                with torch.no_grad():
                    t.copy_(buf)
            box = [None]
            dist.recv_object_list(box, 0, device=_obj_device(st.device))
            if box[0] is not None:
                st.load_owned_state(box[0])
        elif kind == STOP:
            st.drain()
            return


def _obj_device(device: torch.device):
    return device if device.type == "cuda" else None


class PipelineLearning(_Stage):
    """Stage 0, as ``fit``'s method: a :class:`~asge.train.method.TrainingMethod` whose members gather what
    they report from every stage."""

    def __init__(self, net, cfg, total_steps: int, device: torch.device, *, stages: int,
                 threads: Optional[int] = None):
        if device.type == "cuda" and torch.cuda.device_count() < stages:
            raise AsgeError(f"--pipeline {stages} on CUDA needs {stages} GPUs (one per stage); "
                            f"{torch.cuda.device_count()} visible")
        super().__init__(net, cfg, total_steps, device)
        bounds = stage_bounds(net, stages)
        self.setup_stage(0, bounds)
        self.threads = threads or max(1, torch.get_num_threads() // stages)
        self._threads_before = torch.get_num_threads()
        from ..data import DatasetInfo
        info = DatasetInfo("pipeline", num_classes=net.num_classes, in_channels=net.blocks[0].in_channels,
                           image_size=net.image_size)
        port = free_port()
        ctx = mp.get_context("spawn")
        self.procs = []
        for rank in range(1, stages):
            p = ctx.Process(target=_worker, daemon=False,     # (compile workers need children)
                            args=(rank, bounds, port, cfg, info, total_steps, self.threads,
                                  str(stage_device(device, rank))))
            p.start()
            self.procs.append(p)
        self.closed = False
        try:
            dist.init_process_group(backend_for(device), init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                    world_size=stages, timeout=TIMEOUT)
        except BaseException:
            self.close(failed=True)
            raise
        torch.set_num_threads(self.threads)
        self._push(with_state=False)          # every stage starts from this process's weights

    # -- training ---------------------------------------------------------------------------------------
    def start_epoch(self, seed: int) -> None:
        super().start_epoch(seed)
        torch.set_num_threads(self.threads)   # the stages share the cores while they train
        self._isend([self.header(EPOCH, 0, seed)], 1)

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        header = self.header(TRAIN, labels.shape[0], step)
        self.stage_step(x, labels, step, [], header)

    def marked_step(self, x: torch.Tensor, labels: torch.Tensor, step: int, mark) -> None:
        """:meth:`train_step` through every stage, no mark: the other stages' memory is in their processes."""
        self.train_step(x, labels, step)

    def _control(self, kind: int) -> None:
        self._isend([self.header(kind)], 1)

    # -- statistics: this stage's plus the others' -----------------------------------------------------
    def _gather_stats(self):
        self._control(STATS)
        total = self.stats_tensor()
        L = self.num_blocks
        first_bad = self.first_bad_step.clone()
        for rank in range(1, self.K):
            other = self._recv((self.stats_size(),), torch.float64, rank)
            total[:2 * L + 3] += other[:2 * L + 3]
            first_bad = torch.maximum(first_bad, other[2 * L + 3:].long())
        return (total[:L].float(), total[L:2 * L + 2].round().long(), total[2 * L + 2].float(), first_bad)

    def _with_all_stats(self, fn):
        own = (self.loss_sum, self.correct, self.head_loss_sum, self.first_bad_step)
        self.loss_sum, self.correct, self.head_loss_sum, self.first_bad_step = self._gather_stats()
        try:
            return fn()
        finally:
            self.loss_sum, self.correct, self.head_loss_sum, self.first_bad_step = own

    def check_finite(self, epoch: int) -> None:
        self._with_all_stats(lambda: LocalLearning.check_finite(self, epoch))

    def stats_state(self) -> dict:
        """Every stage's statistics so far, gathered here; resumed, this stage holds them all and the
        others start from zero, so the epoch's totals add up the same."""
        return self._with_all_stats(lambda: LocalLearning.stats_state(self))

    def running(self) -> dict:
        return self._with_all_stats(lambda: LocalLearning.running(self))

    def epoch_stats(self) -> dict:
        """The epoch's statistics over all stages; also brings every stage's weights into this process's
        network, which ``fit`` evaluates and checkpoints next."""
        stats = self._with_all_stats(lambda: LocalLearning.epoch_stats(self))
        self._pull()
        torch.set_num_threads(self._threads_before)   # the other stages wait: evaluation gets every core
        return stats

    # -- weights and optimizer states --------------------------------------------------------------------
    def _pull(self) -> dict:
        self._control(PULL)
        states = {}
        for rank in range(1, self.K):
            for t in self.module_tensors(rank):
                buf = self._recv(t.shape, t.dtype, rank)
                with torch.no_grad():
                    t.copy_(buf)
            box = [None]
            dist.recv_object_list(box, rank, device=_obj_device(self.device))
            states[rank] = box[0]
        return states

    def _push(self, *, with_state: bool) -> None:
        self._control(PUSH)
        for rank in range(1, self.K):
            for t in self.module_tensors(rank):
                self._isend([t.detach().contiguous().clone()], rank)
            self.drain()
            dist.send_object_list([self.owned_state(rank) if with_state else None], rank,
                                  device=_obj_device(self.device))

    def state_dict(self) -> dict:
        """The same layout as ``LocalLearning.state_dict``, with each block's state from its stage."""
        for rank, st in self._pull().items():
            self.load_owned_state(st)         # this process's copies of the other stages' optimizers
        return LocalLearning.state_dict(self)

    def load_state_dict(self, state: dict) -> None:
        LocalLearning.load_state_dict(self, state)
        self._push(with_state=True)

    # -- shutdown -----------------------------------------------------------------------------------------
    def close(self, failed: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if not failed and dist.is_initialized():
                self._control(STOP)
                self.drain()
                for p in self.procs:
                    p.join(timeout=60)
        finally:
            for p in self.procs:
                if p.is_alive():
                    p.kill()                  # the stages ignore SIGTERM (asge.runs.preempt)
                    p.join(timeout=10)
            if dist.is_initialized():
                dist.destroy_process_group()
            torch.set_num_threads(self._threads_before)


def fit_pipeline(cfg, *, resume: bool = False, log=print, threads: Optional[int] = None, on_epoch_end=None) -> dict:
    """``fit`` with the blocks split over ``cfg.pipeline`` processes (ASGE only)."""
    from .loop import train_run
    if cfg.pipeline < 2:
        return train_run(cfg, resume=resume, log=log, on_epoch_end=on_epoch_end)
    if cfg.method != "asge":
        raise AsgeError("--pipeline needs --method asge: backprop cannot hand a block's output on before the "
                        "whole network's backward")
    holder = {}

    def factory(net, cfg_, total_steps, device):
        holder["m"] = PipelineLearning(net, cfg_, total_steps, device, stages=cfg_.pipeline, threads=threads)
        return holder["m"]

    ok = False
    try:
        summary = train_run(cfg, resume=resume, log=log, on_epoch_end=on_epoch_end, method_factory=factory)
        ok = True
    finally:
        if "m" in holder:
            holder["m"].close(failed=not ok)
    m = holder["m"]
    return dict(summary, pipeline={"stages": m.K, "bounds": m.bounds, "threads_per_stage": m.threads})
