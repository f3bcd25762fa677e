"""One declared interface for the training methods (``asge.train.method.TrainingMethod``): the five methods
implement it, the abstract class refuses one that lacks a member, the wrappers delegate each member by name
(no ``__getattr__``), and the methods' names are the config's."""
from __future__ import annotations

import inspect

import pytest
import torch

from asge import config
from asge.config import TrainConfig
from asge.nn.model import ASGENet
from asge.train.backprop import Backprop
from asge.train.distributed import DistributedMethod, GradSync, World
from asge.train.graphs import GraphedStep
from asge.train.local import LocalLearning
from asge.train.method import DeviceStepMethod, OptSchedule, TrainingMethod
from asge.train.methods import METHODS
from asge.train.optim import optimizers, schedules
from asge.train.pipeline import PipelineLearning

CPU = torch.device("cpu")
MEMBERS = ("start_epoch", "train_step", "marked_step", "reset_stats", "stats_state", "load_stats_state",
           "check_finite", "running", "epoch_stats", "lrs", "opt_schedules", "state_dict", "load_state_dict")


def make(name: str):
    cfg = TrainConfig(method=name, lr=1e-2).resolved()
    torch.manual_seed(0)
    net = ASGENet([8, 16, 16], [False, True, False], in_channels=3, num_classes=10, image_size=8, seed=0)
    return METHODS[name](net, cfg, 10, CPU)


def test_the_five_methods_implement_the_interface(no_cuda_streams):
    asge, bp = make("asge"), make("bp")
    world = World(rank=0, size=1, local_rank=0, device=CPU)
    for m in (asge, bp, GraphedStep(make("asge")), DistributedMethod(make("bp"), world, GradSync())):
        assert isinstance(m, TrainingMethod)
    assert isinstance(asge, DeviceStepMethod) and isinstance(bp, DeviceStepMethod)
    # PipelineLearning starts its stages' processes when built: its class is checked instead.
    assert issubclass(PipelineLearning, TrainingMethod) and not PipelineLearning.__abstractmethods__
    for cls in (LocalLearning, Backprop, GraphedStep, DistributedMethod, PipelineLearning):
        assert not cls.__abstractmethods__, cls
        for member in MEMBERS:
            assert callable(getattr(cls, member)), (cls, member)


@pytest.mark.parametrize("missing", sorted(TrainingMethod.__abstractmethods__))
def test_a_class_missing_a_member_is_refused(missing):
    members = {name: (lambda self, *a, **k: None) for name in TrainingMethod.__abstractmethods__ if name != missing}
    Incomplete = type("Incomplete", (TrainingMethod,), members)
    with pytest.raises(TypeError, match=missing):
        Incomplete()
    Complete = type("Complete", (TrainingMethod,), dict(members, **{missing: lambda self, *a, **k: None}))
    assert isinstance(Complete(), TrainingMethod)


def test_the_interface_declares_what_the_loop_and_the_tools_use():
    assert {"train_step", "reset_stats", "stats_state", "load_stats_state", "check_finite", "running",
            "epoch_stats", "lrs", "opt_schedules", "state_dict",
            "load_state_dict"} == set(TrainingMethod.__abstractmethods__)
    for member in MEMBERS:
        assert inspect.getdoc(getattr(TrainingMethod, member)), member
    assert {"name", "net", "seen"} <= set(TrainingMethod.__annotations__)
    assert TrainingMethod.graph is None                      # eager unless a GraphedStep captured the step
    assert {"begin_step", "device_step", "end_step"} <= DeviceStepMethod.__abstractmethods__


@pytest.mark.parametrize("wrapper", [GraphedStep, DistributedMethod])
def test_wrappers_delegate_each_member_by_name(wrapper):
    assert "__getattr__" not in vars(wrapper)
    for member in MEMBERS + ("name", "net", "seen"):
        assert member in vars(wrapper), (wrapper, member)


def test_wrappers_present_the_wrapped_methods_members(no_cuda_streams):
    inner = make("asge")
    world = World(rank=0, size=1, local_rank=0, device=CPU)
    for m in (GraphedStep(inner), DistributedMethod(inner, world, GradSync())):
        assert m.name == "asge" and m.net is inner.net and m.graph is None
        assert m.opt_schedules() == inner.opt_schedules() and m.lrs() == inner.lrs()
        g = torch.Generator().manual_seed(1)
        m.train_step(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g), 0)
        assert m.seen == inner.seen and m.running() == inner.running()
        assert m.state_dict().keys() == inner.state_dict().keys() == {"blocks", "heads"}
        m.reset_stats()
        assert inner.seen == 0


def test_opt_schedules_are_every_optimizer_and_schedule_in_the_order_of_the_checkpoint():
    asge, bp = make("asge"), make("bp")
    pairs = asge.opt_schedules()
    assert all(isinstance(p, OptSchedule) for p in pairs)
    assert pairs[-1] is asge.head_opt and pairs[-1].sched.optimizer is asge.head_opt.opt
    assert [p.opt for p in pairs] == optimizers(asge) and [p.sched for p in pairs] == schedules(asge)
    assert bp.opt_schedules() == [OptSchedule(bp.opt, bp.sched)]
    opt, sched = asge.head_opt                               # still a pair where one is unpacked
    assert (opt, sched) == (asge.head_opt.opt, asge.head_opt.sched)


def test_marked_step_marks_each_block_then_the_heads():
    asge, bp = make("asge"), make("bp")
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
    marks = []
    asge.marked_step(x, y, 0, marks.append)
    assert marks == ["block1", "block2", "block3", "heads"]
    assert asge.seen == 0                                    # a measurement: no end_step
    bp.marked_step(x, y, 0, marks.append)
    assert len(marks) == 4 and bp.seen == 4                  # BP: its train_step, one part


def test_method_names_come_from_the_config():
    assert tuple(METHODS) == config.METHODS
    assert all(METHODS[name].name == name for name in config.METHODS)
    assert issubclass(PipelineLearning, LocalLearning) and PipelineLearning.name == "asge"
