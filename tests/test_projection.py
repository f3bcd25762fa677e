"""--projection learned: the block's goodness projection is trained by that block's own loss, nothing else."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from asge import ASGENet
from asge.config import TrainConfig
from asge.nn.goodness import GoodnessProjection
from asge.train.local import LocalLearning, block_step


def test_learned_projection_starts_at_the_fixed_one_and_keeps_its_state_dict_keys():
    fixed = ASGENet([8, 8], [False, True], in_channels=1, image_size=8, seed=3)
    learned = ASGENet([8, 8], [False, True], in_channels=1, image_size=8, seed=3, projection="learned")
    assert fixed.state_dict().keys() == learned.state_dict().keys()
    for k, v in fixed.state_dict().items():
        assert torch.equal(v, learned.state_dict()[k]), k
    for b_fixed, b_learned in zip(fixed.blocks, learned.blocks):
        assert not any(p is b_fixed.projection.weight for p in b_fixed.parameters())
        assert any(p is b_learned.projection.weight for p in b_learned.parameters())
        assert any(p is b_learned.projection.bias for p in b_learned.parameters())
    x = torch.randn(4, 1, 8, 8)
    fixed.eval(), learned.eval()
    for a, b in zip(fixed.block_logits(x), learned.block_logits(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_learned_projection_gets_the_gradient_of_its_own_block_loss_only():
    torch.manual_seed(0)
    net = ASGENet([8, 12, 12], [False, True, False], in_channels=1, image_size=8, seed=0, projection="learned")
    x, labels = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    # Reference, block by block on detached inputs: the gradient of CE(W_l g(Y_l) + b_l, y) w.r.t. W_l, b_l.
    h, refs = x, []
    for b in net.blocks:
        y = b.features(h.detach())
        loss = F.cross_entropy(b.local_logits(y), labels)
        refs.append(torch.autograd.grad(loss, [b.projection.weight, b.projection.bias]))
        h = b.pool(y).detach()      # dropout aside: the reference needs only each block's own input
    net.eval()                      # no dropout, so the step's inputs equal the reference's
    h = x
    for b, (g_w, g_b) in zip(net.blocks, refs):
        for p in b.parameters():
            p.grad = None
        h, _, _, _ = block_step(b, torch.optim.SGD(b.parameters(), lr=0.0), h, labels)
        torch.testing.assert_close(b.projection.weight.grad, g_w)
        torch.testing.assert_close(b.projection.bias.grad, g_b)
    # later blocks sent nothing back into earlier blocks' projections
    torch.testing.assert_close(net.blocks[0].projection.weight.grad, refs[0][0])


def test_learned_projection_moves_in_training_and_fixed_does_not():
    for kind in ("fixed", "learned"):
        cfg = TrainConfig.from_dict({"projection": kind, "lr": 1e-2, "epochs": 1}).resolved()
        net = ASGENet([8, 8], [False, True], in_channels=1, image_size=8, seed=0, projection=kind)
        before = [b.projection.weight.clone() for b in net.blocks]
        method = LocalLearning(net, cfg, total_steps=2, device=torch.device("cpu"))
        method.train_step(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)), 0)
        moved = [not torch.equal(w, b.projection.weight) for w, b in zip(before, net.blocks)]
        assert moved == [kind == "learned"] * 2


def test_unknown_projection_is_refused():
    import pytest
    with pytest.raises(ValueError, match="unknown projection 'random'; valid: fixed, learned"):
        GoodnessProjection(4, 2, kind="random")
    with pytest.raises(ValueError, match="unknown projection 'random'"):
        TrainConfig.from_dict({"projection": "random"})
