"""ASGENet: a stack of ASGE blocks (or of modules cut from any network), their local scores, and the three
prediction strategies."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .block import ASGEBlock
from .goodness import partition_factor
from .heads import Heads, check_strategy
from .local_module import LocalModule
from .presets import get_preset, scale_channels
from .split import example_input, trace_chain


class ASGENet(nn.Module):
    """VGG-style stack of :class:`ASGEBlock` (or, by :meth:`from_modules`, any chain of modules each trained by
    its own local rule), plus Last/Fusion heads and the Best-block choice.

    Args:
        channels: width of each block; downsample: whether each block pools 2x2 on the way out.
        in_channels, num_classes, image_size: input (B, in_channels, image_size, image_size), N classes.
        alpha: partition-granularity hyper-parameter (``P_l = clamp(floor(alpha*C_L/C_l), 1, H_l)``).
        norm, pool, goodness, dropout: block options (see :class:`ASGEBlock`).
        context, context_options, context_blocks: context module name, its kwargs, and the 1-based blocks
            that get it (None = all blocks).
        head_features: what the Fusion head reads of each block (``gap``: GAP(Y_l), the paper; ``goodness``,
            ``patch``: GAP(Y_l) and the block's patch statistics); fusion_from: first fused block (1-based,
            the paper skips block 1: 2); projection: each block's goodness projection, ``fixed`` (the paper)
            or ``learned`` (:class:`~asge.nn.goodness.GoodnessProjection`).
        seed: draws the conv init and the fixed projections (the run's seed).

    ``best_block`` is a buffer (1-based l*, 0 until chosen) so that it travels with the state dict; it can be
    set as a plain number (``net.best_block = 3``). ``classes`` (index -> name) and ``preprocessing`` (how an
    image file becomes an input row, :class:`asge.data.preprocess.Preprocessing`) are set by :func:`asge.load`.
    """

    classes: tuple = ()
    note: Optional[str] = None           # how a cut network was cut (asge.nn.local_network)
    preprocessing = None

    def __init__(self, channels: Sequence[int], downsample: Sequence[bool], *, in_channels: int = 3,
                 num_classes: int = 10, image_size: int = 32, alpha: float = 1.0, norm: str = "layer",
                 pool: str = "rms", goodness: str = "mean", dropout: float = 0.1, context: str = "none",
                 context_options: Optional[dict] = None, context_blocks: Optional[Sequence[int]] = None,
                 head_features: str = "gap", fusion_from: int = 2, projection: str = "fixed", seed: int = 0,
                 device=None, dtype=None):
        super().__init__()
        if len(channels) == 0 or len(channels) != len(downsample):
            raise ValueError(f"channels ({len(channels)}) and downsample ({len(downsample)}) must be non-empty "
                             "lists of the same length")
        if context_blocks is not None:
            bad = [b for b in context_blocks if not 1 <= b <= len(channels)]
            if bad:
                raise ValueError(f"context_blocks {bad} out of range 1..{len(channels)}")
        generator = torch.Generator().manual_seed(seed)
        blocks, size, c_in = [], image_size, in_channels
        for i, (c, down) in enumerate(zip(channels, downsample)):
            if size < 1 or (down and size < 2):
                raise ValueError(f"block {i + 1} would see a {size}x{size} map: too many downsampling blocks "
                                 f"for {image_size}px images")
            use_ctx = context_blocks is None or (i + 1) in context_blocks
            blocks.append(ASGEBlock(
                c_in, c, in_size=size, num_classes=num_classes,
                partition=partition_factor(c, channels[-1], alpha, size), downsample=bool(down), norm=norm,
                pool=pool, context=context if use_ctx else "none",
                context_options=context_options if use_ctx else None,
                dropout=dropout, goodness=goodness, head_features=head_features, first=(i == 0), generator=generator,
                projection=projection, device=device, dtype=dtype))
            c_in, size = c, blocks[-1].out_size
        self._assemble(blocks, num_classes=num_classes, image_size=image_size, alpha=alpha, fusion_from=fusion_from,
                       generator=generator, device=device, dtype=dtype)

    def _assemble(self, blocks: Sequence[nn.Module], *, num_classes: int, image_size: int, alpha: float,
                  fusion_from: int, generator: torch.Generator, device=None, dtype=None) -> None:
        """What every ASGENet has around its blocks (ASGE blocks or :class:`LocalModule`): the blocks, the
        Last/Fusion heads on their output channels (drawn from ``generator`` after the blocks), the
        ``best_block`` buffer."""
        self.num_classes, self.image_size, self.alpha = num_classes, image_size, alpha
        self.blocks = nn.ModuleList(blocks)
        self.heads = Heads([b.out_channels for b in blocks], num_classes, generator,
                           feature_dims=[b.head_dim for b in blocks], fusion_from=fusion_from, device=device,
                           dtype=dtype)
        self.register_buffer("best_block", torch.zeros((), dtype=torch.long, device=device))

    @classmethod
    def from_preset(cls, name: str, *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0,
                    image_size: Optional[int] = None, **kwargs) -> "ASGENet":
        """Build ``vgg8``, ``vgg11``, ``quick`` or ``digits`` with a width multiplier."""
        p = get_preset(name)
        return cls(scale_channels(p["channels"], width), p["downsample"], in_channels=in_channels,
                   num_classes=num_classes, image_size=image_size or p["image_size"], **kwargs)

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module], *, in_channels: int, image_size: int, num_classes: int,
                     alpha: float = 1.0, goodness: str = "mean", head_features: str = "gap", fusion_from: int = 2,
                     projection: str = "fixed", rule: str = "asge", entry_norm: str = "none",
                     seed: int = 0) -> "ASGENet":
        """An ASGENet whose blocks are ``modules`` (any chain: module k's output is module k+1's input, each
        a (B, C, H, W) map), each wrapped in a :class:`LocalModule` with its own local ``rule``.

        Shapes are found by one dry run of a (2, ``in_channels``, ``image_size``, ``image_size``) input through
        the chain, in eval mode without gradients (every module's train/eval mode is restored), which also
        measures each module's multiply-accumulates (:func:`asge.nn.split.trace_chain`). Module k's
        partition is ``P_k = partition_factor(C_k, C_K, alpha, min(H_k, W_k))`` from its output channels C_k
        and the last module's C_K. ``entry_norm`` (``layer``, ``rms``; default ``none``) normalises the input
        of modules 2..K (the paper's block-entry norm), its parameters trained by its module's loss. ``seed``
        draws the rules' projections, then the heads, in module order; the modules' own parameters are as given
        (seed torch before building them). The rules, entry norms and heads are drawn on the CPU, then moved to
        the device and dtype of the modules' first parameter.
        """
        modules = list(modules)
        if not modules:
            raise ValueError("from_modules needs at least one module")
        example = example_input(modules, (in_channels, image_size, image_size))
        traces = trace_chain(modules, example)
        last_channels = traces[-1].out_shape[0]
        generator = torch.Generator().manual_seed(seed)
        blocks = [LocalModule(m, in_shape=t.in_shape, out_shape=t.out_shape, num_classes=num_classes,
                              partition=partition_factor(t.out_shape[0], last_channels, alpha, min(t.out_shape[1:])),
                              rule=rule, goodness=goodness, projection=projection, head_features=head_features,
                              macs=t.macs, entry_norm=entry_norm if k > 0 else "none", generator=generator)
                  for k, (m, t) in enumerate(zip(modules, traces))]
        net = cls.__new__(cls)
        nn.Module.__init__(net)
        net._assemble(blocks, num_classes=num_classes, image_size=image_size, alpha=alpha, fusion_from=fusion_from,
                      generator=generator)
        device, dtype = example.device, example.dtype            # the modules' own (or torch's defaults)
        for part in (*[b.rule for b in net.blocks], *[b.entry for b in net.blocks if b.entry is not None], net.heads):
            part.to(device=device, dtype=dtype)
        net.to(device=device)
        return net

    def __setattr__(self, name, value):
        if name == "best_block" and not isinstance(value, torch.Tensor) and "best_block" in self._buffers:
            if not 0 <= int(value) <= len(self.blocks):
                raise ValueError(f"best_block must be 1..{len(self.blocks)} (0: not chosen), got {value}")
            self._buffers["best_block"].fill_(int(value))
            return
        super().__setattr__(name, value)

    @property
    def channels(self) -> list[int]:
        return [b.out_channels for b in self.blocks]

    def preprocess(self, images, device=None) -> torch.Tensor:
        """Paths, PIL images or uint8 arrays -> float32 (B, C, S, S) for :meth:`predict`, on ``device`` (default:
        the network's), by ``self.preprocessing`` (default: stretch to S x S, the in-memory datasets' way)."""
        from ..data.preprocess import Preprocessing
        pre = self.preprocessing or Preprocessing(self.image_size, self.blocks[0].in_channels)
        return pre(images, device=device if device is not None else self.best_block.device)

    def forward_features(self, x: torch.Tensor, upto: Optional[int] = None):
        """Run blocks 1..``upto`` (all by default). Returns (list of Y_l, list of the heads' features of Y_l,
        each (B, head_dim_l) starting with GAP(Y_l))."""
        ys, feats = [], []
        for block in self.blocks[:upto]:
            y, x = block(x)
            ys.append(y)
            feats.append(block.head_features(y))
        return ys, feats

    def block_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's local scores a_l, each (B, N)."""
        ys, _ = self.forward_features(x)
        return [b.local_logits(y) for b, y in zip(self.blocks, ys)]

    def predict(self, x: torch.Tensor, strategy: str = "fusion") -> torch.Tensor:
        """Class scores (B, N) by ``fusion``, ``last`` or ``best`` (early exit after block l*)."""
        check_strategy(strategy)
        if strategy == "best":
            l_star = int(self.best_block)
            if l_star < 1:
                raise RuntimeError("the best block has not been chosen yet: train the network, or set "
                                   "net.best_block (1-based) from validation accuracies")
            return self.exit_logits(x, l_star)
        _, feats = self.forward_features(x)
        return self.heads.fusion_logits(feats) if strategy == "fusion" else self.heads.last_logits(feats)

    def exit_logits(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Block ``upto``'s local scores a_l (B, N), running blocks 1..``upto`` only (the Best strategy's early
        exit, with ``upto`` = l*)."""
        ys, _ = self.forward_features(x, upto=upto)
        return self.blocks[upto - 1].local_logits(ys[-1])

    def parameter_counts(self) -> dict:
        """Trainable parameters of the blocks and of each strategy's classifier (Best has none)."""
        count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
        return {"blocks": count(self.blocks), "fusion": count(self.heads.fusion),
                "last": count(self.heads.last), "best": 0}

    def compute_fraction(self, upto: int) -> float:
        """Early-exit cost: the multiply-accumulates per image of the Best exit after block ``upto`` (blocks
        1..``upto`` with their context modules, and block ``upto``'s goodness projection) as a share of
        those of the Fusion strategy (every block and the Fusion head).

        Both are measured by a forward pass on this network's input shape (1, C, S, S), in eval mode
        (:func:`asge.nn.flops.forward_macs`: every convolution and matrix product torch runs, e.g. GSoP's
        covariance and Gather-Excite's gathers as well as the blocks' convs). The network's train/eval mode
        is restored afterwards.
        """
        from .flops import forward_macs
        if not 1 <= upto <= len(self.blocks):
            raise ValueError(f"compute_fraction: upto must be a block in 1..{len(self.blocks)}, got {upto}")
        p = next(self.parameters())
        example = torch.zeros(1, self.blocks[0].in_channels, self.image_size, self.image_size, device=p.device,
                              dtype=p.dtype)
        training = self.training
        self.eval()
        try:
            exit_macs = forward_macs(lambda x: self.exit_logits(x, upto), example)
            fusion_macs = forward_macs(lambda x: self.predict(x, "fusion"), example)
        finally:
            self.train(training)
        return exit_macs / fusion_macs
