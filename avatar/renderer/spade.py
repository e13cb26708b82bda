"""The SPADE decoder blocks of the face generator (docs/architecture.md §3).

- ``SpectralNormConv2d``: a conv whose weight is W_orig / sigma with sigma = u^T W_orig.reshape(out, -1) v, using
  the stored vectors u and v as the official model does in eval mode (no power iteration). The parameters keep the
  names of the old hook-style ``spectral_norm``: ``weight_orig`` (parameter), ``weight_u``, ``weight_v`` (buffers).
- ``SPADE``: InstanceNorm (no affine) x (1 + gamma) + beta, with gamma, beta = conv3x3(ReLU(conv3x3(seg))).
- ``SPADEResnetBlock``: conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x)))))) + shortcut, where the shortcut is
  conv_s(norm_s(x)) when the width changes and x otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avatar.renderer.layers import DerivedWeight


class SpectralNormConv2d(nn.Module):
    """Conv2d with a spectrally normalised weight, evaluated with the stored u, v (eval-mode behaviour)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size))
        self.padding = kernel_size // 2
        self._weight = DerivedWeight()

    def sigma(self) -> torch.Tensor:
        """u^T W v with W = weight_orig flattened to [out, in*k*k] (computed in float32)."""
        w = self.weight_orig.float().reshape(self.weight_orig.shape[0], -1)
        return torch.dot(self.weight_u.float(), w @ self.weight_v.float())

    def weight(self) -> torch.Tensor:
        """W_orig / sigma (cached until weight_orig, weight_u or weight_v change)."""
        sources = (self.weight_orig, self.weight_u, self.weight_v)
        return self._weight.get(sources, lambda: (self.weight_orig.float() / self.sigma()).to(self.weight_orig.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation of x, modulated by the segmentation-like feature map ``seg``."""

    def __init__(self, channels: int, seg_channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(seg_channels, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x)
        if seg.shape[-2:] != x.shape[-2:]:
            seg = F.interpolate(seg, size=x.shape[-2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block of two spectrally normalised 3x3 convs, each after SPADE + LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, seg_channels: int, hidden: int) -> None:
        super().__init__()
        middle = min(in_channels, out_channels)
        self.learned_shortcut = in_channels != out_channels
        self.conv_0 = SpectralNormConv2d(in_channels, middle, 3)
        self.conv_1 = SpectralNormConv2d(middle, out_channels, 3)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(in_channels, out_channels, 1, bias=False)
        self.norm_0 = SPADE(in_channels, seg_channels, hidden)
        self.norm_1 = SPADE(middle, seg_channels, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(in_channels, seg_channels, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx
