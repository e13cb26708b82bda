"""FaceGenerator: a frame from a motion latent and the appearance volume (docs/architecture.md §3).

1. Warp field. extend_layer maps the latent to z [C0,4,4]; the same numbers, read as [C0,16], are the condition
   of every adaptive group norm. conv1 (1x1) lifts z to a volume [C0,4,4,4]; four ResBlock3dStar with
   upsampling grow it to [32,16,64,64]; GroupNorm -> ReLU -> conv3d -> tanh gives per-voxel offsets that are
   added to the identity grid.
2. Warp. f_app is resampled at the grid (trilinear, zero padding) and flattened to [512,64,64].
3. Decoder. projection -> seg (times the occlusion map), fc, 6 SPADE blocks at 64x64, two up-blocks, LeakyReLU,
   conv3x3 to 12 channels, PixelShuffle(2), tanh -> [3,512,512] in [-1,1].
``warp_layer`` is part of the checkpoint but not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avatar.renderer.config import RendererConfig
from avatar.renderer.layers import DerivedWeight, SameBlock2d
from avatar.renderer.spade import SPADEResnetBlock


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then a per-sample scale and shift: [scale, shift] = u @ cond @ v."""

    def __init__(self, channels: int, cond_channels: int, cond_positions: int, channels_per_group: int) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.empty(channels, cond_channels))
        self.v = nn.Parameter(torch.empty(cond_positions, 2))
        self.groups = channels // channels_per_group

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        params = self.u @ cond @ self.v  # [B, C, 2]
        scale = params[..., 0, None, None, None]
        shift = params[..., 1, None, None, None]
        return F.group_norm(x, self.groups) * scale + shift


class WSConv3d(nn.Conv3d):
    """Conv3d with weight standardisation: (w - mean) / (unbiased std + 1e-5) per output channel."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._standardized = DerivedWeight()

    def standardized_weight(self) -> torch.Tensor:
        def compute() -> torch.Tensor:
            w = self.weight.float()
            dims = tuple(range(1, w.dim()))
            w = (w - w.mean(dim=dims, keepdim=True)) / (w.std(dim=dims, keepdim=True) + 1e-5)
            return w.to(self.weight.dtype)

        return self._standardized.get((self.weight,), compute)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


class ResBlock3dStar(nn.Module):
    """AGN -> ReLU -> WSConv3d -> AGN -> ReLU -> Conv3d, plus a Conv3d skip; all 3x3x3 without bias."""

    def __init__(self, in_channels: int, out_channels: int, config: RendererConfig) -> None:
        super().__init__()
        c0, positions, per_group = config.volume_channels[0], config.volume_start_size**2, config.group_norm_channel
        self.skip_layer = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.agn1 = AdaptiveGroupNorm(in_channels, c0, positions, per_group)
        self.conv1 = WSConv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.agn2 = AdaptiveGroupNorm(out_channels, c0, positions, per_group)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.agn1(x, cond)))
        out = self.conv2(F.relu(self.agn2(out, cond)))
        return out + self.skip_layer(x)


def identity_grid(depth: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[D,H,W,3] sampling grid in [-1,1] with coordinates in (x, y, z) order, as grid_sample expects."""
    z, y, x = (torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) for n in (depth, height, width))
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


class FaceGenerator(nn.Module):
    """(latent [B,512], f_app [B,32,16,64,64]) -> frame [B,3,512,512] in [-1,1]."""

    def __init__(self, config: RendererConfig) -> None:
        super().__init__()
        self.config = config
        c0, start = config.volume_channels[0], config.volume_start_size
        self.extend_layer = nn.Linear(config.latent_dim, c0 * start * start, bias=False)
        self.conv1 = nn.Conv2d(c0, c0 * config.volume_start_depth, kernel_size=1, bias=False)
        widths = config.volume_channels
        for i in range(len(config.volume_upsample)):
            self.add_module(f"resblock{i + 1}", ResBlock3dStar(widths[i], widths[i + 1], config))
        self.gn = nn.GroupNorm(1, widths[-1])
        self.conv2 = nn.Conv3d(widths[-1], 3, kernel_size=3, padding=1, bias=False)
        self.warp_layer = nn.Conv2d(config.warped_channels, config.warped_channels, kernel_size=1, bias=False)
        k = config.occlusion_kernel
        self.occlusion = nn.Conv2d(config.warped_channels, 1, kernel_size=k, padding=k // 2)
        self.projection = nn.Sequential(
            nn.Identity(),
            SameBlock2d(config.warped_channels, config.seg_channels, leaky=True),
            nn.Conv2d(config.seg_channels, config.seg_channels, kernel_size=1),
        )
        mid, up0, up1 = config.decoder_channels
        self.fc = nn.Conv2d(config.seg_channels, mid, kernel_size=3, padding=1)
        for i in range(config.num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(mid, mid, config.seg_channels, config.spade_hidden))
        self.up_0 = SPADEResnetBlock(mid, up0, config.seg_channels, config.spade_hidden)
        self.up_1 = SPADEResnetBlock(up0, up1, config.seg_channels, config.spade_hidden)
        self.conv_img = nn.Sequential(nn.Conv2d(up1, 12, kernel_size=3, padding=1), nn.PixelShuffle(2))

    def resblocks(self) -> list[ResBlock3dStar]:
        return [getattr(self, f"resblock{i + 1}") for i in range(len(self.config.volume_upsample))]

    def middle_blocks(self) -> list[SPADEResnetBlock]:
        return [getattr(self, f"G_middle_{i}") for i in range(self.config.num_middle_blocks)]

    def warp_offsets(self, latent: torch.Tensor) -> torch.Tensor:
        """conv2 output: the warp offsets before tanh, [B,3,D,H,W]."""
        cfg = self.config
        b, c0, s = latent.shape[0], cfg.volume_channels[0], cfg.volume_start_size
        z = self.extend_layer(latent)
        cond = z.view(b, c0, s * s)
        volume = self.conv1(z.view(b, c0, s, s)).view(b, c0, cfg.volume_start_depth, s, s)
        for scale, block in zip(cfg.volume_upsample, self.resblocks(), strict=True):
            volume = block(F.interpolate(volume, scale_factor=scale), cond)
        return self.conv2(F.relu(self.gn(volume)))

    def forward(
        self, latent: torch.Tensor, f_app: torch.Tensor, internals: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Render; when ``internals`` is a dict, fill it with ``conv2_out`` and ``occlusion_logits``."""
        offsets = self.warp_offsets(latent)
        b, _, d, h, w = offsets.shape
        grid = identity_grid(d, h, w, offsets.device, offsets.dtype) + torch.tanh(offsets).permute(0, 2, 3, 4, 1)
        if f_app.shape[0] != b:
            f_app = f_app.expand(b, *f_app.shape[1:])
        warped = F.grid_sample(f_app, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = warped.reshape(b, -1, h, w)
        occlusion_logits = self.occlusion(warped)
        seg = self.projection(warped) * torch.sigmoid(occlusion_logits)
        if internals is not None:
            internals["conv2_out"] = offsets
            internals["occlusion_logits"] = occlusion_logits

        x = self.fc(seg)
        for block in self.middle_blocks():
            x = block(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2), seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.tanh(x)
