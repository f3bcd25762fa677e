"""Local learning rules: how a locally trained module turns its own output into class scores and a loss.

A rule reads the module's output y (B, C, H, W), never anything after it. ``rule(y)`` gives the module's local
class scores (B, N) (the Best strategy exits with them); ``rule.loss(y, logits, labels)`` is the loss the
module learns from (its gradient reaches only the module and the rule's own parameters).

``asge`` is the paper's rule: the patch goodness of y on a P x P grid, through the fixed random projection,
cross-entropy. The others are the rules of other papers, for comparison, each as its paper (and its authors'
code) defines it (docs/local-rules.md says which details come from where):

- ``cwc``: channel-wise competitive Forward-Forward (Papachristodoulou et al., AAAI 2024): the C channels in N
  groups, a group's goodness is its class's score; no parameters.
- ``dgl``: Decoupled Greedy Learning's auxiliary network (Belilovsky et al., ICML 2020), MLP-SR-aux.
- ``predsim``: Nøkland & Eidnes (ICML 2019): a linear prediction of pooled y, and the match of a conv of y's
  similarity matrix to the labels'.

:func:`create_rule` builds a rule by name; :data:`LOCAL_RULES` lists the names; :func:`head_cost` measures a
rule's parameters and multiply-accumulates.
"""
from __future__ import annotations

import abc
import math
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .goodness import GoodnessProjection, spatial_goodness


class LocalRule(nn.Module, abc.ABC):
    """Base of the local rules. Subclasses set ``name`` and define :meth:`forward`; :meth:`loss` defaults to
    cross-entropy on the scores.

    Shapes: y (B, C, H, W) -> scores (B, N); loss: 0-dim float32.
    """

    name = ""

    @abc.abstractmethod
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """The rule's class scores of y: (B, C, H, W) -> (B, N)."""

    def loss(self, y: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """The module's local loss; ``logits`` is ``self(y)``, already computed by the caller."""
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class GoodnessRule(LocalRule):
    """ASGE: ``a = spatial_goodness(y, P) @ W + b`` with W the fixed (or ``learned``) random projection.

    channels C, ``partition`` P, ``num_classes`` N; ``goodness``: mean or sum of y**2 per patch.
    """

    name = "asge"

    def __init__(self, channels: int, num_classes: int, *, partition: int, goodness: str = "mean",
                 projection: str = "fixed", generator: Optional[torch.Generator] = None, device=None, dtype=None):
        super().__init__()
        self.partition, self.goodness = partition, goodness
        self.projection = GoodnessProjection(channels * partition * partition, num_classes, generator,
                                             device=device, dtype=dtype, kind=projection)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.projection(spatial_goodness(y, self.partition, self.goodness))


def _uniform_init_(module: nn.Module, generator: Optional[torch.Generator]) -> None:
    """torch's default initialisation of every conv and linear layer in ``module`` (weight and bias uniform in
    +-1/sqrt(fan_in), what ``reset_parameters`` draws), drawn from ``generator`` instead of the global RNG."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(m.weight[0].numel())           # fan_in = in_features (x kernel area)
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def _layer(cls, *args, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` on the CPU without initialising it (no draw from the global RNG): the rule
    draws its parameters from its own generator (:func:`_uniform_init_`)."""
    return torch.nn.utils.skip_init(cls, *args, **kwargs)


class ChannelCompetitionRule(LocalRule):
    """CwC (Papachristodoulou et al., AAAI 2024, CwC_CE): channel-wise competitive Forward-Forward.

    The C channels of y are split into N consecutive groups of C/N (channels ``j*C/N .. (j+1)*C/N - 1`` belong
    to class j); class j's score is its group's goodness, the mean of y**2 over its channels and all positions;
    the loss is the cross-entropy of the N scores. No parameters. C must be a multiple of N.
    """

    name = "cwc"

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        if channels % num_classes:
            lo, hi = channels // num_classes * num_classes, -(-channels // num_classes) * num_classes
            nearest = f"{hi}" if lo == 0 else f"{lo} or {hi}"
            raise ValueError(f"CwC needs each module's channels to be a multiple of the {num_classes} classes; "
                             f"this module has {channels} (nearest: {nearest}): choose widths like "
                             f"{2 * num_classes}/{4 * num_classes}/{8 * num_classes}")
        self.num_classes, self.group = num_classes, channels // num_classes

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y.square().unflatten(1, (self.num_classes, self.group)).mean(dim=(2, 3, 4))

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, channels_per_class={self.group}"


class DGLRule(LocalRule):
    """DGL's auxiliary network (Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of CNNs", ICML 2020):
    MLP-SR-aux, the default of the authors' CIFAR and ImageNet code.

    y (B, C, H, W) -> adaptive average pool to ceil(H/4) x ceil(W/4) -> ``convs`` x [1x1 conv C->C (no bias),
    BatchNorm, ReLU] -> adaptive average pool to 2 x 2 -> flatten (4C) -> ``mlp_layers`` x [Linear 4C->4C,
    BatchNorm1d, ReLU] -> Linear 4C->N; cross-entropy. ``mlp_layers=0``: BatchNorm2d then Linear 4C->N (their
    variant without the MLP). Defaults 3 and 3: the authors' ``--type_aux mlp-sr`` (CIFAR) and ``--nlin 3 --mlp 3``
    (ImageNet). Its BatchNorms make the scores depend on the batch in train mode (running statistics in eval).
    """

    name = "dgl"

    def __init__(self, channels: int, height: int, width: int, num_classes: int, *, convs: int = 3,
                 mlp_layers: int = 3, generator: Optional[torch.Generator] = None, device=None, dtype=None):
        super().__init__()
        self.reduced = (math.ceil(height / 4), math.ceil(width / 4))
        self.convs = nn.ModuleList(nn.Sequential(_layer(nn.Conv2d, channels, channels, 1, bias=False),
                                                 nn.BatchNorm2d(channels), nn.ReLU())
                                   for _ in range(convs))
        features = 4 * channels
        if mlp_layers > 0:
            layers = []
            for _ in range(mlp_layers):
                layers += [_layer(nn.Linear, features, features), nn.BatchNorm1d(features), nn.ReLU()]
            self.norm = None
            self.classifier = nn.Sequential(*layers, _layer(nn.Linear, features, num_classes))
        else:
            self.norm = nn.BatchNorm2d(channels)
            self.classifier = _layer(nn.Linear, features, num_classes)
        _uniform_init_(self, generator)
        self.to(device=device, dtype=dtype)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(y, self.reduced)
        for conv in self.convs:
            h = conv(h)
        h = F.adaptive_avg_pool2d(h, 2)
        if self.norm is not None:
            h = self.norm(h)
        return self.classifier(h.flatten(1))


def predsim_pool(channels: int, height: int, width: int, max_features: int = 4096) -> tuple[tuple, tuple, int]:
    """PredSim's average pooling before its linear prediction: ((kH, kW), (padH, padW), features).

    As the authors' code resolves it: kernels double, the height's first, then the width's, until
    ``channels * ceil(H/kH) * ceil(W/kW) <= max_features`` (``--dim-in-decoder``, 4096) or kH reaches H;
    the padding ``kH * (ceil(H/kH) - H // kH) // 2`` makes the pooled map ceil(H/kH) high. (1, 1): no pooling.
    """
    kh = kw = 1
    oh, ow = height, width
    while channels * oh * ow > max_features and kh < height:
        kh *= 2
        oh = math.ceil(height / kh)
        if channels * oh * ow > max_features and kw < width:
            kw *= 2
            ow = math.ceil(width / kw)
    pad = (kh * (oh - height // kh) // 2, kw * (ow - width // kw) // 2)
    return (kh, kw), pad, channels * oh * ow


def similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """PredSim's adjusted cosine similarity of the B rows of x: (B, ...) -> (B, B) in [-1, 1].

    A (B, C, H, W) map with C > 3 and H > 1 is first reduced to each channel's standard deviation over its
    positions (B, C); any other x is flattened. Each row is centred (its mean subtracted), divided by
    (1e-8 + its norm), and R = x x^T, clamped to [-1, 1] (the authors' code, without ``--no-similarity-std``).
    """
    if x.dim() == 4 and x.shape[1] > 3 and x.shape[2] > 1:
        x = x.flatten(2).std(dim=2)
    else:
        x = x.flatten(1)
    xc = x - x.mean(dim=1, keepdim=True)
    xn = xc / (1e-8 + xc.square().sum(dim=1, keepdim=True).sqrt())
    return (xn @ xn.T).clamp(-1, 1)


class PredSimRule(LocalRule):
    """PredSim (Nøkland & Eidnes, "Training Neural Networks with Local Error Signals", ICML 2019).

    Scores: y -> average pool (:func:`predsim_pool`, at most 4096 features) -> flatten -> Linear -> N logits.
    Loss: ``(1 - beta) * CE(scores, labels) + beta * MSE(S(conv3x3(y)), S(onehot(labels)))`` with S
    :func:`similarity_matrix` (B x B) and the conv C->C, 3x3, padding 1, no bias, beta = 0.99 (the authors'
    defaults). The linear layer's weight starts at zero (their code), its bias and the conv as torch's default.
    The conv runs only in the loss: the scores (the Best exit) cost the linear layer alone.
    """

    name = "predsim"

    def __init__(self, channels: int, height: int, width: int, num_classes: int, *, beta: float = 0.99,
                 max_features: int = 4096, generator: Optional[torch.Generator] = None, device=None, dtype=None):
        super().__init__()
        self.beta, self.num_classes = beta, num_classes
        kernel, padding, features = predsim_pool(channels, height, width, max_features)
        self.pool = nn.AvgPool2d(kernel, padding=padding) if kernel != (1, 1) else None
        self.decoder = _layer(nn.Linear, features, num_classes)
        self.sim_conv = _layer(nn.Conv2d, channels, channels, 3, padding=1, bias=False)
        _uniform_init_(self, generator)
        with torch.no_grad():
            self.decoder.weight.zero_()
        self.to(device=device, dtype=dtype)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = y if self.pool is None else self.pool(y)
        return self.decoder(h.flatten(1))

    def loss(self, y: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        pred = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        r_h = similarity_matrix(self.sim_conv(y).float())
        # one-hot by comparison: F.one_hot reads the labels' range on the host, which a CUDA graph cannot
        onehot = (labels[:, None] == torch.arange(self.num_classes, device=labels.device)).float()
        r_y = similarity_matrix(onehot)
        return (1 - self.beta) * pred + self.beta * F.mse_loss(r_h, r_y)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


#: name -> factory(channels, height, width, num_classes, *, partition, goodness, projection, generator, device,
#: dtype). Only ``asge`` reads partition, goodness and projection; the others ignore them.
LOCAL_RULES: dict[str, Callable[..., LocalRule]] = {
    "asge": lambda channels, height, width, num_classes, **kw: GoodnessRule(channels, num_classes, **kw),
    "cwc": lambda channels, height, width, num_classes, **kw: ChannelCompetitionRule(channels, num_classes),
    "dgl": lambda channels, height, width, num_classes, *, generator=None, device=None, dtype=None, **kw:
        DGLRule(channels, height, width, num_classes, generator=generator, device=device, dtype=dtype),
    "predsim": lambda channels, height, width, num_classes, *, generator=None, device=None, dtype=None, **kw:
        PredSimRule(channels, height, width, num_classes, generator=generator, device=device, dtype=dtype),
}


def create_rule(name: str, channels: int, height: int, width: int, num_classes: int, *, partition: int,
                goodness: str = "mean", projection: str = "fixed", generator: Optional[torch.Generator] = None,
                device=None, dtype=None) -> LocalRule:
    """The local rule ``name`` for a module whose output is (B, channels, height, width)."""
    if name not in LOCAL_RULES:
        raise ValueError(f"unknown local rule {name!r}; valid: {', '.join(LOCAL_RULES)}")
    return LOCAL_RULES[name](channels, height, width, num_classes, partition=partition, goodness=goodness,
                             projection=projection, generator=generator, device=device, dtype=dtype)


class HeadCost(NamedTuple):
    """A rule's size and cost for a module output of one shape: ``parameters`` (trainable values; ASGE's fixed
    projection is buffers, not counted), ``macs`` (multiply-accumulates per image of the scores, what the Best
    exit adds), ``train_macs`` (per image of the scores and the loss together, at a batch of ``batch``: PredSim's
    similarity matrices cost B x (C + N) per image, so this depends on B)."""

    parameters: int
    macs: int
    train_macs: float
    batch: int


def measure_head(rule: LocalRule, shape: tuple[int, int, int], num_classes: int, batch: int = 128) -> HeadCost:
    """:class:`HeadCost` of ``rule`` on module outputs of ``shape`` (C, H, W), by torch's flop counter
    (every convolution and matrix product: pooling, norms, squares and other elementwise work are not counted,
    as :func:`asge.nn.flops.forward_macs`). Run in eval mode without gradients; the rule's mode is restored."""
    from torch.utils.flop_counter import FlopCounterMode

    from .flops import forward_macs
    p = next(iter([*rule.parameters(), *rule.buffers()]), None)
    kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
    training = rule.training
    rule.eval()
    try:
        macs = forward_macs(rule, torch.zeros(1, *shape, **kw))
        y = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0)).to(**kw)
        labels = torch.arange(batch, device=y.device) % num_classes
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            rule.loss(y, rule(y), labels)
        train_macs = counter.get_total_flops() / 2 / batch
    finally:
        rule.train(training)
    return HeadCost(sum(q.numel() for q in rule.parameters()), int(macs), train_macs, batch)


def head_cost(name: str, channels: int, height: int, width: int, num_classes: int, *, partition: int = 1,
              goodness: str = "mean", projection: str = "fixed", batch: int = 128) -> HeadCost:
    """:class:`HeadCost` of the rule ``name`` for a module whose output is (B, channels, height, width): the
    head's column of the table "head FLOPs relative to the module" (divide by the module's own MACs)."""
    rule = create_rule(name, channels, height, width, num_classes, partition=partition, goodness=goodness,
                       projection=projection, generator=torch.Generator().manual_seed(0))
    return measure_head(rule, (channels, height, width), num_classes, batch)
