"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors and networks: one intra-op thread avoids thread hand-off cost on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_cuda_streams(monkeypatch):
    """GraphedStep's side stream, on a machine without CUDA: streams that do nothing."""
    from contextlib import nullcontext

    class Stream:
        def wait_stream(self, other):
            pass
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())


@pytest.fixture
def stand_in_graph(monkeypatch, no_cuda_streams):
    """GraphedStep on the CPU with a stand-in for the CUDA graph: capture records whether the method ran its
    full-size step eagerly first, and the replay runs device_step on the static buffers. Yields the list of
    those records, one per capture."""
    from asge.train import graphs
    captures = []

    def capture(self):
        captures.append(self.eager_full)
        self.graph = type("Replay", (), {"replay": lambda _: self.method.device_step(self.static_x, self.static_y)})()
    monkeypatch.setattr(graphs.GraphedStep, "capture", capture)
    return captures
