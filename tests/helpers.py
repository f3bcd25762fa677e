"""Helpers shared by the tests."""
import torch
import torch.nn.functional as F
from torch import nn


def context_cnn(module: nn.Module, channels: int = 16, classes: int = 4) -> nn.Sequential:
    """conv3x3(3 -> channels) -> ReLU -> ``module`` -> 2x2 avg pool -> linear, for 8x8 inputs."""
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), module, nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(channels * 4 * 4, classes))


def train_by_backprop(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 15) -> list[float]:
    """Adam(1e-2) on cross-entropy for ``steps`` full-batch steps; asserts every gradient is finite."""
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
        opt.step()
        losses.append(loss.item())
    return losses


def randomise_batchnorm(m: nn.Module) -> nn.Module:
    """Random affine BN parameters and running statistics, so eval-mode outputs are not trivial."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_()
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    return m


def same_tensors(a, b) -> bool:
    """Bitwise equality of nested dicts / lists of tensors and plain values (model and optimizer states)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return a == b
