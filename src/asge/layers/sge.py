"""Spatial Group-wise Enhance (SGE; Li, Hu and Yang, 2019).

The C channels are split into G groups. In each group, the similarity of every position's feature vector
to the group's spatially averaged vector is normalised over the positions, scaled and shifted by a
per-group (gamma, beta), and squashed into a per-position gate shared by the group's channels.
Two parameters per group; ``gamma = 0, beta = 1`` at init, so the module starts as ``x * sigmoid(1)``.
"""
from __future__ import annotations

import torch
from torch import nn

from .context import CONTEXTS, forwards_options


class SpatialGroupEnhance(nn.Module):
    """x: (B, C, H, W) -> (B, C, H, W), with C % groups == 0.

    Per group g (channels viewed as (B*G, C/G, H, W)):

    - ``m = mean over (H, W) of x_g``                                (B*G, C/G, 1, 1)
    - ``c = sum over the group's channels of x_g * m``               (B*G, 1, H, W)
    - ``n = (c - mean_HW(c)) / (std_HW(c) + eps)``, std unbiased; for H*W = 1 the centred value is 0
      and the std is taken as 0, so n = 0 (no NaN); a constant map likewise gives n = 0
    - ``out = x * sigmoid(gamma_g * n + beta_g)``

    The statistics are computed in float32 for half-precision inputs; the result has the input's dtype.
    """

    def __init__(self, channels: int, groups: int = 64, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        if groups < 1 or channels % groups != 0:
            raise ValueError(f"SpatialGroupEnhance: channels ({channels}) must be divisible by groups "
                             f"({groups}); choose groups among the divisors of {channels}")
        self.channels, self.groups, self.eps = channels, groups, eps
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1, device=device, dtype=dtype))  # gamma
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1, device=device, dtype=dtype))  # beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g, n = self.groups, h * w
        xg = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(b * g, c // g, n)
        # similarity of each position to the group's mean vector: (B*G, 1, C/G) @ (B*G, C/G, HW)
        sim = torch.bmm(xg.mean(dim=2, keepdim=True).transpose(1, 2), xg)  # (B*G, 1, HW)
        # Unbiased std as the authors; correction 0 for a single position (sim - mean is then 0).
        # The clamp keeps sqrt's gradient finite when the variance is exactly 0 (constant or all-zero
        # maps); sqrt(tiny) ~ 1e-19 is far below eps, so the value is unchanged.
        var, mean = torch.var_mean(sim, dim=2, keepdim=True, correction=1 if n > 1 else 0)
        std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
        gamma = self.weight.reshape(1, g, 1).expand(b, g, 1).reshape(b * g, 1, 1)
        beta = self.bias.reshape(1, g, 1).expand(b, g, 1).reshape(b * g, 1, 1)
        gate = torch.sigmoid(torch.addcmul(beta, sim - mean, gamma / (std + self.eps)))  # (B*G, 1, HW)
        return (xg * gate).reshape(b, c, h, w).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, eps={self.eps}"


@CONTEXTS.register("sge")
@forwards_options(SpatialGroupEnhance)
def _sge(channels: int, groups: int = 64, feat_size=None, **kw):
    """``groups`` is capped at ``channels`` (so ``sge`` works on narrow layers); it must divide them."""
    g = min(groups, channels)
    if channels % g != 0:
        raise ValueError(f"context 'sge': groups={g} (min(groups={groups}, channels={channels})) does not "
                         f"divide channels={channels}; pass groups=<a divisor of {channels}>")
    return SpatialGroupEnhance(channels, g, **kw)


__all__ = ["SpatialGroupEnhance"]
