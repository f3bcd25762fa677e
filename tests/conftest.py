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
