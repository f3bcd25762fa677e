"""The Best strategy's early-exit cost (summary.json's best_compute_fraction): every convolution and matrix
product the exit runs, context modules and the goodness projection included, against what Fusion runs."""
from __future__ import annotations

import json

import pytest
import torch

from asge.cli import main
from asge.nn.model import ASGENet

pytestmark = pytest.mark.usefixtures("single_thread")


def gsop_macs(c: int, d: int, side: int) -> int:
    """GSoP (channel mode, dim d) on a C x side x side map: 1x1 conv C -> d, covariance d x d over the
    positions, row-wise conv d -> 4d (kernel d x 1, d groups), 1x1 conv 4d -> C."""
    return c * d * side * side + d * d * side * side + 4 * d * d + 4 * d * c


def costs_by_hand(in_channels: int, channels: list[int], down: list[bool], image: int, classes: int, d: int):
    """(per block: conv + GSoP multiply-accumulates, per block: goodness projection, Fusion head) of an
    ASGENet with GSoP in every block, the paper's partition P_l = clamp(floor(C_L / C_l), 1, H_l) and the
    Fusion head on blocks 2..L (linear layers on each block's GAP)."""
    blocks, projections, side, c_in = [], [], image, in_channels
    for c, pool in zip(channels, down):
        blocks.append(c_in * c * 9 * side * side + gsop_macs(c, d, side))
        p = min(max(channels[-1] // c, 1), side)
        projections.append(c * p * p * classes)
        c_in, side = c, side // 2 if pool else side
    return blocks, projections, sum(c * classes for c in channels[1:])


def fraction_by_hand(upto: int, **net) -> float:
    blocks, projections, fusion = costs_by_hand(**net)
    return (sum(blocks[:upto]) + projections[upto - 1]) / (sum(blocks) + fusion)


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
def test_compute_fraction_counts_the_context_modules_and_the_heads(norm):
    shape = dict(in_channels=3, channels=[8, 16, 16], down=[False, True, False], image=8, classes=10, d=4)
    net = ASGENet(shape["channels"], shape["down"], in_channels=3, num_classes=10, image_size=8, norm=norm,
                  context="gsop", context_options={"dim": 4})
    for upto in (1, 2, 3):
        assert net.compute_fraction(upto) == pytest.approx(fraction_by_hand(upto, **shape), rel=1e-12)
    assert net.training, "the network's mode is restored"
    # the blocks' own convs alone say less for an exit after block 1
    convs = [3 * 8 * 9 * 64, 8 * 16 * 9 * 64, 16 * 16 * 9 * 16]
    assert net.compute_fraction(1) > convs[0] / sum(convs) + 0.01


def test_compute_fraction_refuses_a_block_the_network_does_not_have():
    net = ASGENet([8, 8], [False, True], image_size=8)
    with pytest.raises(ValueError, match=r"upto must be a block in 1..2, got 3"):
        net.compute_fraction(3)


def test_train_records_and_prints_the_exit_cost_with_a_context_module(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--channels", "8,16v,16", "--context", "gsop", "--context-option", "dim=4",
                 "--subset", "300", "--batch-size", "64", "--epochs", "1", "--progress", "none",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    l_star = s["best_block"]
    expected = fraction_by_hand(l_star, in_channels=1, channels=[8, 16, 16], down=[False, True, False], image=8,
                                classes=10, d=4)
    assert s["best_compute_fraction"] == pytest.approx(expected, rel=1e-12)
    assert (f"block {l_star} (early exit spends {100 * expected:.0f}% of Fusion's multiply-accumulates per "
            "image)") in text
