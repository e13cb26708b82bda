"""RendererConfig: official defaults, derived sizes, the tiny config, and clear errors for inconsistent sizes."""

from __future__ import annotations

import dataclasses

import pytest

from avatar.renderer import Renderer, RendererConfig


def test_defaults_are_the_official_head_animator_0506_values() -> None:
    cfg = RendererConfig()
    assert cfg.image_size == 512 and cfg.latent_dim == 512
    assert (cfg.block_expansion, cfg.num_down_blocks, cfg.max_features) == (64, 3, 512)
    assert (cfg.reshape_channel, cfg.reshape_depth, cfg.num_resblocks) == (32, 16, 6)
    assert cfg.motion_space == 64 and cfg.group_norm_channel == 32
    assert cfg.motion_channels == (32, 64, 128, 256, 512, 512, 512, 512)
    assert (cfg.feature_size, cfg.volume_depth, cfg.warped_channels) == (64, 16, 512)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RendererConfig().image_size = 256  # type: ignore[misc]


def test_tiny_keeps_the_latent_and_shrinks_the_rest() -> None:
    tiny = RendererConfig.tiny()
    assert tiny.latent_dim == 512
    assert tiny.image_size == 128 and tiny.feature_size == 16
    generator_params = sum(p.numel() for p in Renderer(tiny).face_generator.parameters())
    assert generator_params < 2_000_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_size": 500}, "power of two"),
        ({"motion_channels": (32, 64)}, "motion_channels"),
        ({"volume_start_size": 2}, "feature map"),
        ({"max_features": 256}, "reshape_channel"),
        ({"group_norm_channel": 48}, "group_norm_channel"),
    ],
)
def test_inconsistent_sizes_are_rejected_with_the_reason(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RendererConfig(**change)  # type: ignore[arg-type]
