"""What a CUDA graph of the step needs, checked on the CPU (issue 14): over consecutive steps each method's
``device_step`` dispatches the same operators on the same shapes, strides and scalar arguments (a graph
replays the first one for ever), makes no RNG-state call (CUDA refuses them during capture) and no host sync
(``aten::_local_scalar_dense`` is what ``.item()``, ``float()``, ``.tolist()`` dispatch to). The host parts
around it (``begin_step``, ``end_step``) are what ``train/graphs.py`` runs outside the graph."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from asge.config import TrainConfig
from asge.errors import AsgeError
from asge.nn.model import ASGENet
from asge.train import Backprop, LocalLearning
from asge.train.graphs import GraphedStep, graphs_blocker, use_cuda_graphs

SYNCS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
         "aten.is_nonzero.default", "aten._unique2.default", "aten.unique_consecutive.default"}
RNG_STATE_CALLS = [(torch, "manual_seed"), (torch, "seed"), (torch, "get_rng_state"), (torch, "set_rng_state"),
                   (torch.random, "manual_seed"), (torch.random, "seed"), (torch.random, "get_rng_state"),
                   (torch.random, "set_rng_state"), (torch.random, "fork_rng"), (torch.cuda, "manual_seed"),
                   (torch.cuda, "manual_seed_all"), (torch.cuda, "get_rng_state"), (torch.cuda, "set_rng_state"),
                   (torch.cuda, "get_rng_state_all"), (torch.cuda, "set_rng_state_all")]


def describe(a):
    """An argument as a graph sees it: tensors by shape, stride, dtype and device; the rest by value."""
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), a.stride() if a.layout == torch.strided else None, a.dtype, a.device.type)
    if isinstance(a, (list, tuple)):
        return tuple(describe(b) for b in a)
    if isinstance(a, dict):
        return tuple(sorted((k, describe(v)) for k, v in a.items()))
    if isinstance(a, torch.Generator):              # (its seed changes every step: begin_step, outside)
        return ("generator", a.device.type)
    return repr(a)


class Dispatched(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not str(func).startswith("profiler."):           # torch's own annotations (one object per call)
            self.ops.append((str(func), describe(args), describe(kwargs or {})))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def rng_state_calls(monkeypatch):
    calls = []
    for module, name in RNG_STATE_CALLS:
        if hasattr(module, name):
            real = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _n=f"{module.__name__}.{name}", _f=real, **k:
                                calls.append(_n) or _f(*a, **k))
    return calls


def make(method: str, recipe: str):
    cfg = TrainConfig.from_dict({"recipe": recipe, "method": method, "lr": 1e-2, "epochs": 1}).resolved()
    torch.manual_seed(0)
    net = ASGENet([8, 16, 16], [False, True, False], in_channels=3, num_classes=10, image_size=8, seed=0,
                  context=cfg.context, head_features=cfg.head_features, fusion_from=cfg.fusion_from, dropout=0.2)
    m = (LocalLearning if method == "asge" else Backprop)(net, cfg, 10, torch.device("cpu"))
    m.start_epoch(5)
    return m


def recorded_steps(m, shape: tuple[int, int, int], batch: int = 4):
    """The operators dispatched by steps 1 and 2 of method ``m`` (after a first step that creates the optimizer
    state), on random (batch, *shape) images; and the batches, the first of them for more host-side steps."""
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g))
               for _ in range(3)]
    m.train_step(*batches[0], 0)
    recorded = []
    for step, (x, y) in enumerate(batches[1:], 1):
        m.begin_step(step)
        with Dispatched() as d:
            m.device_step(x, y)
        m.end_step(y.shape[0])
        recorded.append(d.ops)
    return recorded, batches


@pytest.mark.parametrize("method,recipe", [("asge", "paper"), ("asge", "plus"), ("bp", "paper")])
def test_device_step_is_the_same_every_step_without_rng_state_calls_or_host_syncs(method, recipe,
                                                                                    rng_state_calls):
    m = make(method, recipe)
    del rng_state_calls[:]                                   # (make seeds the model's init)
    (first, second), batches = recorded_steps(m, (3, 8, 8))
    assert len(first) > 100 and first == second              # same operators, shapes and scalars
    assert not [op for op, *_ in first if op in SYNCS]
    assert any("_fused_adamw_" in op for op, *_ in first)    # the update is inside (reading the lr tensor)
    m.train_step(*batches[0], 3)                             # and the host parts touch no RNG state either
    assert rng_state_calls == []
    assert m.lrs()["blocks"] < 1e-2                          # the schedule moved: not a scalar of the step


def test_cuda_graphs_on_a_cpu_is_refused_in_one_line_and_auto_is_off():
    cpu = torch.device("cpu")
    with pytest.raises(AsgeError, match="need a CUDA device") as e:
        use_cuda_graphs(TrainConfig(cuda_graphs="on"), cpu)
    assert "\n" not in str(e.value)
    assert use_cuda_graphs(TrainConfig(cuda_graphs="auto"), cpu) is False
    assert use_cuda_graphs(TrainConfig(cuda_graphs="off"), cpu) is False
    cuda = torch.device("cuda")
    assert "fp16" in graphs_blocker(TrainConfig(amp="fp16"), cuda)
    assert "pipeline" in graphs_blocker(TrainConfig(pipeline=2), cuda)
    assert "compile" in graphs_blocker(TrainConfig(compile=True), cuda)
    assert graphs_blocker(TrainConfig(amp="bf16", channels_last=True), cuda) is None
    said = []
    assert use_cuda_graphs(TrainConfig(cuda_graphs="on", amp="fp16"), cuda, log=said.append) is False
    assert len(said) == 1 and "stays eager" in said[0]


def test_cuda_graphs_flag_in_the_cli_and_config(tmp_path, capsys):
    from asge.cli import main
    assert main(["bench", "--cuda-graphs", "on", "--device", "cpu", "--out", str(tmp_path / "b")]) == 2
    assert "--cuda-graphs on: CUDA graphs need a CUDA device" in capsys.readouterr().err
    assert main(["train", "--cuda-graphs", "on", "--device", "cpu", "--epochs", "1", "--progress", "none",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cuda-graphs on" in err and not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="cuda_graphs: expected auto, on or off"):
        TrainConfig(cuda_graphs="yes").validate()
    assert "cuda_graphs" in TrainConfig.RUNTIME_KEYS          # a run may resume with or without graphs


def test_graphed_step_is_a_wrapper_with_the_methods_interface():
    from asge.train.method import TrainingMethod
    assert issubclass(GraphedStep, TrainingMethod) and not GraphedStep.__abstractmethods__
    assert "__getattr__" not in vars(GraphedStep)             # each member delegated by name


def test_graphed_step_host_logic_with_a_stand_in_graph(stand_in_graph):
    """GraphedStep's own logic on the CPU, with a stand-in for the CUDA graph whose replay runs device_step
    on the static buffers: warm-up steps eager, one capture, every later full-size step a replay between
    begin_step and end_step, a smaller batch eager; the result equals plain eager training bitwise."""
    captures = stand_in_graph

    def run(method, wrap):
        m = make(method, "paper")
        m.cfg.batch_size = 4
        if wrap:
            m = GraphedStep(m, warmup=2)
        g = torch.Generator().manual_seed(3)
        for step in range(7):
            n = 3 if step == 5 else 4
            m.train_step(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g), step)
        return m
    for method in ("asge", "bp"):
        captures.clear()
        eager, graphed = run(method, False), run(method, True)
        assert captures == [2]                                # after two eager warm-up steps, once
        for a, b in zip(eager.net.state_dict().values(), graphed.net.state_dict().values()):
            assert torch.equal(a, b)
        for k in ("loss_sum", "correct", "first_bad_step"):
            assert torch.equal(getattr(eager, k), getattr(graphed.method, k))
        assert graphed.seen == eager.seen == 27 and graphed.lrs() == eager.lrs()
        graphed.load_state_dict(eager.state_dict())           # new optimizer tensors: capture again
        assert graphed.graph is None
