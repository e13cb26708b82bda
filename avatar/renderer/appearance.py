"""FaceEncoder: the appearance volume f_app of the reference portrait (docs/architecture.md §3).

image [B,3,S,S] -> SameBlock2d 3->64 -> 3 x DownBlock2d (64->128->256->512) -> conv1x1 512->512
-> reshape to [B, 32, 16, S/8, S/8] -> 6 x ResBlock3d(32) -> f_app. BatchNorm runs with its running statistics
(the module is used in eval mode only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avatar.renderer.config import RendererConfig
from avatar.renderer.layers import DownBlock2d, SameBlock2d


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class FaceEncoder(nn.Module):
    """Portrait [B,3,S,S] in [-1,1] -> appearance volume [B, reshape_channel, reshape_depth, S/8, S/8]."""

    def __init__(self, config: RendererConfig) -> None:
        super().__init__()
        self.config = config
        width = config.block_expansion
        self.first = SameBlock2d(3, width)
        blocks = []
        for i in range(config.num_down_blocks):
            c_in = min(config.max_features, width * 2**i)
            c_out = min(config.max_features, width * 2 ** (i + 1))
            blocks.append(DownBlock2d(c_in, c_out))
        self.down_blocks = nn.ModuleList(blocks)
        c_last = min(config.max_features, width * 2**config.num_down_blocks)
        self.second = nn.Conv2d(c_last, config.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(config.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(config.reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        volume = out.view(b, self.config.reshape_channel, self.config.reshape_depth, h, w)
        return self.resblocks_3d(volume)
