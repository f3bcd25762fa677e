"""The local rules (asge.nn.local_rules): each rule's scores and loss against an independent computation written
here (loops and einsums over the rule's own weights, never its helpers), determinism from the generator, where
the loss's gradient goes, the one-line refusals, and the heads' parameters and MACs against hand counts."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asge.nn.local_module import LocalModule
from asge.nn.local_rules import (LOCAL_RULES, PredSimRule, create_rule, head_cost, predsim_pool,
                                 similarity_matrix)

RULES = ("asge", "cwc", "dgl", "predsim")


def make(name, c=20, h=8, w=8, n=10, seed=0, **kw):
    return create_rule(name, c, h, w, n, partition=kw.pop("partition", 2),
                       generator=torch.Generator().manual_seed(seed), **kw)


def bins(n: int, p: int) -> list[tuple[int, int]]:
    """The p adaptive-pooling windows over n positions: [floor(i n / p), ceil((i + 1) n / p))."""
    return [(i * n // p, -(-(i + 1) * n // p)) for i in range(p)]


def adaptive_pool(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    out = torch.zeros(*x.shape[:2], ph, pw, dtype=x.dtype)
    for i, (h0, h1) in enumerate(bins(x.shape[2], ph)):
        for j, (w0, w1) in enumerate(bins(x.shape[3], pw)):
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


def batch_norm(x: torch.Tensor, bn: nn.Module, training: bool) -> torch.Tensor:
    """BatchNorm written out: over the batch (and positions) with the biased variance in training, else the
    running statistics."""
    dims = (0,) if x.dim() == 2 else (0, 2, 3)
    shape = (1, -1) if x.dim() == 2 else (1, -1, 1, 1)
    if training:
        mean = x.mean(dim=dims)
        var = ((x - mean.reshape(shape)) ** 2).mean(dim=dims)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + bn.eps) * bn.weight.reshape(shape) \
        + bn.bias.reshape(shape)


def cross_entropy(scores: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    n = scores.shape[1]
    logp = scores - torch.log(torch.exp(scores - scores.max(1, keepdim=True).values).sum(1, keepdim=True)) \
        - scores.max(1, keepdim=True).values
    target = torch.full_like(scores, smoothing / n)
    target[torch.arange(len(labels)), labels] += 1 - smoothing
    return -(target * logp).sum(1).mean()


# ---------------------------------------------------------------- CwC

def test_cwc_scores_are_each_class_groups_mean_square_and_the_loss_their_cross_entropy():
    torch.manual_seed(0)
    b, c, h, w, n = 3, 12, 5, 4, 4
    y = torch.randn(b, c, h, w, dtype=torch.float64)
    labels = torch.tensor([3, 0, 2])
    rule = create_rule("cwc", c, h, w, n, partition=1)
    expected = torch.zeros(b, n, dtype=torch.float64)
    for i in range(b):
        for j in range(n):                      # class j owns channels 3j, 3j+1, 3j+2
            total = 0.0
            for ch in range(3 * j, 3 * j + 3):
                for r in range(h):
                    for s in range(w):
                        total += float(y[i, ch, r, s]) ** 2
            expected[i, j] = total / (3 * h * w)
    scores = rule(y)
    torch.testing.assert_close(scores, expected)
    for smoothing in (0.0, 0.1):
        torch.testing.assert_close(rule.loss(y, scores, labels, smoothing),
                                   cross_entropy(expected, labels, smoothing).float())
    assert list(rule.parameters()) == [] and list(rule.buffers()) == []


def test_cwc_refuses_channels_not_a_multiple_of_the_classes_in_one_line():
    with pytest.raises(ValueError) as e:
        create_rule("cwc", 16, 8, 8, 10, partition=1)
    msg = str(e.value)
    assert "\n" not in msg
    assert "CwC" in msg and "multiple of the 10 classes" in msg and "has 16" in msg and "20/40/80" in msg
    with pytest.raises(ValueError, match="has 64 .*60 or 70"):
        LocalModule(nn.Identity(), in_shape=(64, 8, 8), out_shape=(64, 8, 8), num_classes=10, partition=1,
                    rule="cwc")


# ---------------------------------------------------------------- DGL

def dgl_reference(rule, y: torch.Tensor, training: bool) -> torch.Tensor:
    """MLP-SR-aux written out: adaptive pool to ceil(H/4) x ceil(W/4), 1x1 convs (einsum) + BN + ReLU, adaptive
    pool to 2x2, flatten channel-major, (Linear + BN1d + ReLU) x 3, Linear."""
    h = adaptive_pool(y, math.ceil(y.shape[2] / 4), math.ceil(y.shape[3] / 4))
    for conv, bn, _ in rule.convs:
        h = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], h)
        h = batch_norm(h, bn, training).clamp(min=0)
    h = adaptive_pool(h, 2, 2)
    v = torch.stack([h[i].reshape(-1) for i in range(len(h))])
    layers = list(rule.classifier)
    for k in range(0, len(layers) - 1, 3):
        lin, bn = layers[k], layers[k + 1]
        v = batch_norm(v @ lin.weight.T + lin.bias, bn, training).clamp(min=0)
    return v @ layers[-1].weight.T + layers[-1].bias


@pytest.mark.parametrize("size", [8, 12, 3])
def test_dgl_scores_match_mlp_sr_aux_written_out_in_train_and_eval_mode(size):
    torch.manual_seed(1)
    c, n = 6, 5
    rule = create_rule("dgl", c, size, size, n, partition=1, generator=torch.Generator().manual_seed(2),
                       dtype=torch.float64)
    assert len(rule.convs) == 3 and len(rule.classifier) == 3 * 3 + 1
    assert rule.classifier[0].in_features == 4 * c and rule.classifier[-1].out_features == n
    for m in rule.modules():                    # non-trivial norms and statistics
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    y = torch.randn(7, c, size, size, dtype=torch.float64)
    labels = torch.randint(0, n, (7,))
    rule.eval()
    torch.testing.assert_close(rule(y), dgl_reference(rule, y, training=False))
    rule.train()
    expected = dgl_reference(rule, y, training=True)
    scores = rule(y)
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(rule.loss(y, scores, labels, 0.1), cross_entropy(expected, labels, 0.1).float())


# ---------------------------------------------------------------- PredSim

@pytest.mark.parametrize("shape, kernel, padding, features", [
    ((64, 8, 8), (1, 1), (0, 0), 4096),          # 64 * 8 * 8 = 4096: no pooling
    ((128, 16, 16), (4, 2), (0, 0), 4096),       # 128*16*16 -> (2,1) 128*8*16 -> (2,2) 8192 -> (4,2) 4096
    ((128, 32, 32), (8, 4), (0, 0), 4096),
    ((256, 8, 8), (2, 2), (0, 0), 4096),
    ((512, 4, 4), (2, 1), (0, 0), 4096),
    ((128, 7, 7), (2, 1), (1, 0), 128 * 4 * 7),  # ceil(7/2) = 4 rows: one row of padding on each side
    ((64, 7, 7), (1, 1), (0, 0), 64 * 49),
])
def test_predsim_pooling_resolves_as_the_authors_code(shape, kernel, padding, features):
    assert predsim_pool(*shape) == (kernel, padding, features)
    rule = make("predsim", *shape)
    assert rule.decoder.in_features == features
    out = rule(torch.zeros(2, *shape))
    assert out.shape == (2, 10)


def similarity_reference(rows: torch.Tensor) -> torch.Tensor:
    b = rows.shape[0]
    unit = []
    for i in range(b):
        r = rows[i] - rows[i].sum() / rows.shape[1]
        unit.append(r / (1e-8 + math.sqrt(sum(float(v) ** 2 for v in r))))
    return torch.tensor([[max(-1.0, min(1.0, float((unit[i] * unit[j]).sum()))) for j in range(b)]
                         for i in range(b)], dtype=rows.dtype)


@pytest.mark.parametrize("size", [6, 7])
def test_predsim_scores_and_loss_match_a_written_out_computation(size):
    torch.manual_seed(3)
    b, c, n, beta = 5, 8, 4, 0.99
    rule = create_rule("predsim", c, size, size, n, partition=1, generator=torch.Generator().manual_seed(4),
                       dtype=torch.float64)
    kernel, padding, features = predsim_pool(c, size, size, max_features=64)
    rule_small = PredSimRule(c, size, size, n, max_features=64, generator=torch.Generator().manual_seed(4),
                             dtype=torch.float64)
    assert torch.all(rule.decoder.weight == 0) and torch.all(rule_small.decoder.weight == 0)   # the authors' init
    y = torch.randn(b, c, size, size, dtype=torch.float64).relu()
    labels = torch.tensor([0, 2, 2, 1, 0])
    for r, (kh, kw) in ((rule, (1, 1)), (rule_small, kernel)):
        r.decoder.weight.data.normal_()
        ph, pw = (0, 0) if r is rule else padding
        # the prediction branch: average pool (zero padding counted, as AvgPool2d's default), flatten, linear
        padded = F.pad(y, (pw, pw, ph, ph))
        oh, ow = (padded.shape[2] - kh) // kh + 1, (padded.shape[3] - kw) // kw + 1
        pooled = torch.zeros(b, c, oh, ow, dtype=y.dtype)
        for i in range(oh):
            for j in range(ow):
                pooled[:, :, i, j] = padded[:, :, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].sum(dim=(2, 3)) / (kh * kw)
        scores = r(y)
        torch.testing.assert_close(scores, pooled.flatten(1) @ r.decoder.weight.T + r.decoder.bias)
        # the similarity branch: conv3x3 (shifted sums), per-channel std over positions, adjusted cosine
        wgt = r.sim_conv.weight.detach()
        yp = F.pad(y, (1, 1, 1, 1))
        conv = sum(torch.einsum("oc,bchw->bohw", wgt[:, :, dy, dx], yp[:, :, dy:dy + size, dx:dx + size])
                   for dy in range(3) for dx in range(3))
        flat = conv.reshape(b, c, -1)
        std = torch.sqrt(((flat - flat.mean(2, keepdim=True)) ** 2).sum(2) / (flat.shape[2] - 1))
        r_h = similarity_reference(std)
        r_y = similarity_reference(F.one_hot(labels, n).double())
        sim = ((r_h - r_y) ** 2).mean()
        expected = (1 - beta) * cross_entropy(scores, labels, 0.05) + beta * sim
        torch.testing.assert_close(r.loss(y, scores, labels, 0.05).double(), expected, rtol=1e-6, atol=1e-7)


def test_predsim_label_similarity_is_one_for_the_same_class_and_minus_one_over_n_minus_one_otherwise():
    # centred one-hot rows: cos = 1 for equal labels, -1/(N-1) for different ones (an independent check of S)
    n = 5
    s = similarity_matrix(F.one_hot(torch.tensor([0, 0, 3]), n).float())
    torch.testing.assert_close(s, torch.tensor([[1.0, 1.0, -0.25], [1.0, 1.0, -0.25], [-0.25, -0.25, 1.0]]))


# ---------------------------------------------------------------- every rule

@pytest.mark.parametrize("name", ["dgl", "predsim"])
def test_rules_draw_their_parameters_from_the_generator_alone(name):
    state = torch.get_rng_state()
    a, b, other = make(name, seed=5), make(name, seed=5), make(name, seed=6)
    assert torch.equal(torch.get_rng_state(), state)          # the global RNG is not drawn from
    sa, sb, so = a.state_dict(), b.state_dict(), other.state_dict()
    assert sa.keys() == sb.keys() == so.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(v.is_floating_point() and not torch.equal(v, so[k]) for k, v in sa.items())
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    make(name, seed=5)
    create_rule(name, 20, 8, 8, 10, partition=1, generator=g)
    assert not torch.equal(g.get_state(), before)             # the draws come from the generator passed in


def graph_leaves(t: torch.Tensor) -> set[int]:
    """ids of the leaf tensors the autograd graph of t accumulates gradients into."""
    out, seen, stack = set(), set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            out.add(id(node.variable))
        stack.extend(f for f, _ in node.next_functions)
    return out


@pytest.mark.parametrize("name", RULES)
def test_the_loss_gradient_reaches_y_and_the_rules_own_parameters_only(name):
    torch.manual_seed(6)
    x = torch.randn(6, 3, 8, 8)
    body = nn.Conv2d(3, 20, 3, padding=1)
    y = body(x).relu().detach().requires_grad_()             # the module's output, as the local step hands it
    outsider = nn.Linear(20, 10)
    rule = make(name, projection="learned" if name == "asge" else "fixed")
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    loss = rule.loss(y, rule(y), labels)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    own = {id(p) for p in rule.parameters()}
    assert graph_leaves(loss) == {id(y)} | own
    loss.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is not None for p in rule.parameters())
    assert all(p.grad is None for p in (*body.parameters(), *outsider.parameters()))


def test_unknown_rule_refused_in_one_line_naming_the_valid_ones():
    with pytest.raises(ValueError) as e:
        create_rule("dni", 20, 8, 8, 10, partition=1)
    msg = str(e.value)
    assert "\n" not in msg and "'dni'" in msg
    assert all(name in msg for name in RULES)
    assert set(RULES) <= set(LOCAL_RULES)


@pytest.mark.parametrize("name", RULES)
def test_every_rule_works_inside_a_local_module_on_the_dtype_asked_for(name):
    body = nn.Conv2d(3, 20, 3, padding=1, stride=2).double()
    module = LocalModule(body, in_shape=(3, 16, 16), out_shape=(20, 8, 8), num_classes=10, partition=2, rule=name,
                         generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in (*module.rule.parameters(), *module.rule.buffers())
               if t.is_floating_point())
    y, _ = module(torch.randn(4, 3, 16, 16, dtype=torch.float64))
    logits = module.local_logits(y)
    assert logits.shape == (4, 10)
    module.local_loss(y, logits, torch.tensor([1, 2, 3, 4])).backward()
    assert body.weight.grad is not None


# ---------------------------------------------------------------- parameters and MACs

def test_head_costs_match_hand_counts_for_a_64_channel_8x8_module():
    c, h, w, n = 64, 8, 8, 10
    # ASGE: the C P^2 x N projection, fixed (buffers: no parameters)
    assert head_cost("asge", c, h, w, n, partition=2) == (0, c * 4 * n, c * 4 * n, 128)
    assert head_cost("asge", c, h, w, n, partition=2, projection="learned").parameters == c * 4 * n + n
    # CwC: no parameters, no products (needs a multiple of N: 60 channels)
    assert head_cost("cwc", 60, h, w, n) == (0, 0, 0, 128)
    # DGL: pooled to 2 x 2 (= ceil(8/4)); three 1x1 convs C x C on 4 positions; 4C -> 4C three times; 4C -> N
    f = 4 * c
    dgl_macs = 3 * c * c * 4 + 3 * f * f + f * n
    dgl_params = 3 * (c * c + 2 * c) + 3 * (f * f + f + 2 * f) + f * n + n
    assert head_cost("dgl", c, h, w, n) == (dgl_params, dgl_macs, dgl_macs, 128)
    assert (dgl_macs, dgl_params) == (248_320, 214_154)
    # PredSim: 64 * 8 * 8 = 4096 features, no pooling; Linear 4096 x N; the loss adds the 3x3 conv C x C on 64
    # positions and the two B x B similarity products (B x C and B x N per image)
    b = 4
    cost = head_cost("predsim", c, h, w, n, batch=b)
    assert cost.parameters == 4096 * n + n + c * c * 9
    assert cost.macs == 4096 * n == 40_960
    assert cost.train_macs == 4096 * n + c * c * 9 * h * w + b * c + b * n


def test_the_bases_are_abstract_and_every_rule_and_block_implements_them():
    from asge.nn.block import ASGEBlock
    from asge.nn.local_block import LocalBlock
    from asge.nn.local_module import LocalModule
    from asge.nn.local_rules import LocalRule
    for base in (LocalRule, LocalBlock):
        with pytest.raises(TypeError, match="abstract"):
            base()
    assert all(not cls.__abstractmethods__ for cls in (ASGEBlock, LocalModule))
    for name in LOCAL_RULES:
        rule = create_rule(name, 20, 4, 4, 10, partition=2)
        assert isinstance(rule, LocalRule) and not type(rule).__abstractmethods__ and rule.name == name
