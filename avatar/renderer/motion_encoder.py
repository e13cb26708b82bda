"""MotionEncoder: the 512-d motion latent of a face image (docs/architecture.md §3; StyleGAN2-style).

image [B,3,S,S] -> ConvLayer 1x1 3->32 -> one ResBlock per halving (S -> 4x4) -> EqualConv2d k4 (no bias)
-> latent [B,512]. At inference this gives m0 of the reference portrait; the feature pyramid of the original
encoder is unused and not computed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avatar.renderer.config import RendererConfig
from avatar.renderer.layers import ConvLayer, EqualConv2d


class ResBlock(nn.Module):
    """(conv3x3 -> blurred stride-2 conv3x3) + blurred stride-2 1x1 skip, summed and divided by sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class MotionEncoder(nn.Module):
    """Face image [B,3,S,S] in [-1,1] -> motion latent [B, latent_dim]."""

    def __init__(self, config: RendererConfig) -> None:
        super().__init__()
        widths = config.motion_channels
        layers: list[nn.Module] = [ConvLayer(3, widths[0], 1)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(ResBlock(c_in, c_out))
        layers.append(EqualConv2d(widths[-1], config.latent_dim, 4, bias=False))
        self.convs = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.convs(image).flatten(1)
