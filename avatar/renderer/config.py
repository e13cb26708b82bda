"""Every size of the LIA renderer (docs/architecture.md §3; the official config ``head_animator_best_0506``).

The defaults are the official values. ``RendererConfig.tiny()`` keeps the architecture and shrinks only widths and
resolution, so that tests and the real-time pipeline can run an untrained renderer far above 25 fps on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def _prod(values: tuple[int, ...]) -> int:
    return math.prod(values)


@dataclass(frozen=True)
class RendererConfig:
    """Sizes of the four renderer modules. Official values are the defaults."""

    # Image and motion latent
    image_size: int = 512  # input portrait and output frame are image_size x image_size
    latent_dim: int = 512  # motion latent (the DyStream face_dim)

    # FaceEncoder (appearance volume f_app [reshape_channel, reshape_depth, S/2^n, S/2^n])
    block_expansion: int = 64
    num_down_blocks: int = 3
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6

    # MotionEncoder: channel width at each resolution from image_size down to 4x4
    motion_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 512, 512, 512)

    # FlowEstimator
    motion_space: int = 64
    flow_hidden_layers: int = 4  # EqualLinear(latent, latent) layers before the one to motion_space

    # FaceGenerator, 3-D part: extend_layer -> [C0, start, start], conv1 -> [C0, start_depth, start, start]
    volume_channels: tuple[int, ...] = (512, 256, 128, 64, 32)  # C0, then the output of each ResBlock3dStar
    volume_start_size: int = 4
    volume_start_depth: int = 4
    volume_upsample: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))
    group_norm_channel: int = 32  # channels per group of the adaptive group norms

    # FaceGenerator, 2-D part: projection -> seg, occlusion map, SPADE decoder
    seg_channels: int = 256
    occlusion_kernel: int = 7
    spade_hidden: int = 128
    decoder_channels: tuple[int, int, int] = (512, 256, 64)  # middle blocks, up_0 output, up_1 output
    num_middle_blocks: int = 6

    def __post_init__(self) -> None:
        problems: list[str] = []
        n_levels = int(math.log2(self.image_size)) - 1 if self.image_size > 0 else 0
        if self.image_size < 8 or 2 ** (n_levels + 1) != self.image_size:
            problems.append(f"image_size {self.image_size} must be a power of two >= 8")
        elif len(self.motion_channels) != n_levels:
            problems.append(
                f"motion_channels has {len(self.motion_channels)} widths; image_size {self.image_size} needs "
                f"{n_levels} (one per resolution from {self.image_size} down to 4)"
            )
        if len(self.volume_channels) != len(self.volume_upsample) + 1:
            problems.append("volume_channels needs one more entry than volume_upsample (C0, then one per block)")
        if self.feature_size * 8 != self.image_size:
            problems.append(
                f"the generator's feature map ({self.feature_size}) must be image_size / 8 ({self.image_size // 8}): "
                "adjust volume_start_size or volume_upsample"
            )
        if self.image_size // 2**self.num_down_blocks != self.feature_size:
            problems.append(
                f"FaceEncoder output size {self.image_size // 2**self.num_down_blocks} != generator feature size "
                f"{self.feature_size}: adjust num_down_blocks"
            )
        if self.max_features != self.reshape_channel * self.reshape_depth:
            problems.append("max_features must equal reshape_channel * reshape_depth")
        for c in self.volume_channels[1:]:
            if c % self.group_norm_channel:
                problems.append(f"volume width {c} is not a multiple of group_norm_channel {self.group_norm_channel}")
        if self.volume_channels[0] % self.group_norm_channel:
            problems.append(f"C0 {self.volume_channels[0]} is not a multiple of group_norm_channel")
        if problems:
            raise ValueError("invalid RendererConfig: " + "; ".join(problems))

    @property
    def feature_size(self) -> int:
        """Side of the 2-D feature map the SPADE decoder starts from (64 officially)."""
        return self.volume_start_size * _prod(tuple(u[1] for u in self.volume_upsample))

    @property
    def volume_depth(self) -> int:
        """Depth of the warp field and of the warped appearance volume (16 officially)."""
        return self.volume_start_depth * _prod(tuple(u[0] for u in self.volume_upsample))

    @property
    def warped_channels(self) -> int:
        """Channels of the warped volume flattened to 2-D (32 x 16 = 512 officially)."""
        return self.reshape_channel * self.volume_depth

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def tiny(cls) -> RendererConfig:
        """Same architecture, small widths, 128x128 output: an untrained renderer for tests and CPU demos."""
        return cls(
            image_size=128,
            block_expansion=8,
            max_features=64,
            reshape_channel=4,
            reshape_depth=16,
            num_resblocks=6,
            motion_channels=(16, 32, 32, 64, 64, 64),
            motion_space=64,
            volume_channels=(64, 32, 16, 8, 4),
            volume_start_size=1,
            volume_start_depth=4,
            group_norm_channel=4,
            seg_channels=32,
            spade_hidden=16,
            decoder_channels=(32, 16, 8),
        )
