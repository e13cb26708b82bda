"""The Renderer API on an untrained tiny renderer: shapes, ranges, batching, determinism, input errors, uint8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.renderer import Renderer, RendererConfig, random_renderer, to_uint8

TINY = RendererConfig.tiny()


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return random_renderer(TINY, seed=3)


def _portrait(size: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    face = (x**2 + y**2 < 0.5).float()
    return torch.stack([x * 0.8, y * 0.6, face - 0.5])[None]


@pytest.fixture(scope="module")
def encoded(renderer: Renderer) -> tuple[torch.Tensor, torch.Tensor]:
    return renderer.encode_portrait(_portrait(TINY.image_size))


def _targets(m0: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    return m0 + 0.5 * torch.randn(n, m0.shape[1], generator=torch.Generator().manual_seed(seed))


def test_encode_portrait_shapes(encoded: tuple[torch.Tensor, torch.Tensor]) -> None:
    m0, f_app = encoded
    assert m0.shape == (1, 512)
    assert f_app.shape == (1, TINY.reshape_channel, TINY.reshape_depth, TINY.feature_size, TINY.feature_size)
    assert torch.isfinite(m0).all() and torch.isfinite(f_app).all()


def test_random_render_is_neither_flat_nor_saturated(
    renderer: Renderer, encoded: tuple[torch.Tensor, torch.Tensor]
) -> None:
    m0, f_app = encoded
    frames = renderer.render(m0, _targets(m0, 2), f_app)
    assert frames.shape == (2, 3, TINY.image_size, TINY.image_size)
    assert frames.abs().max() <= 1
    assert 0.05 < frames.std() < 0.7
    assert (frames.abs() > 0.98).float().mean() < 0.01
    assert (frames[0] - frames[1]).abs().mean() > 0.01  # the motion latent changes the frame


def test_batched_render_matches_frame_by_frame(renderer: Renderer, encoded: tuple[torch.Tensor, torch.Tensor]) -> None:
    m0, f_app = encoded
    targets = _targets(m0, 3, seed=1)
    batched, internals = renderer.render_with_internals(m0, targets, f_app)
    single = torch.cat([renderer.render(m0, t[None], f_app) for t in targets])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    assert internals["flow_latent"].shape == (3, 512)
    assert internals["conv2_out"].shape == (3, 3, TINY.volume_depth, TINY.feature_size, TINY.feature_size)
    assert internals["occlusion_logits"].shape == (3, 1, TINY.feature_size, TINY.feature_size)


def test_flow_output_shifts_one_to_one_with_the_source(
    renderer: Renderer, encoded: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """The flow output is source + Q alpha(target): changing the source shifts it one to one."""
    m0, _ = encoded
    target = _targets(m0, 1, seed=2)
    a = renderer.flow_estimator(m0, target)
    b = renderer.flow_estimator(m0 + 1.0, target)
    torch.testing.assert_close(b - a, torch.ones_like(a), atol=1e-5, rtol=0)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a, b, c = random_renderer(TINY, seed=5), random_renderer(TINY, seed=5), random_renderer(TINY, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["face_generator.extend_layer.weight"], sc["face_generator.extend_layer.weight"])


def test_random_spectral_vectors_are_consistent_singular_vectors() -> None:
    block = random_renderer(TINY, seed=0).face_generator.G_middle_0.conv_0
    w = block.weight_orig.reshape(block.weight_orig.shape[0], -1)
    top = torch.linalg.matrix_norm(w, ord=2)
    torch.testing.assert_close(block.sigma(), top, rtol=1e-4, atol=0)


def test_random_renderer_is_in_eval_mode_without_gradients(renderer: Renderer) -> None:
    assert not renderer.training
    assert all(not p.requires_grad for p in renderer.parameters())


def test_bad_inputs_name_the_input_and_the_expected_shape(
    renderer: Renderer, encoded: tuple[torch.Tensor, torch.Tensor]
) -> None:
    m0, f_app = encoded
    with pytest.raises(ValueError, match=r"portrait image .*\[B,3,128,128\]"):
        renderer.encode_portrait(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="target_latent"):
        renderer.render(m0, torch.zeros(2, 256), f_app)
    with pytest.raises(ValueError, match="source_latent"):
        renderer.render(torch.zeros(3, 512), torch.zeros(2, 512), f_app)
    with pytest.raises(ValueError, match="f_app"):
        renderer.render(m0, m0, f_app[:, :, :8])


def test_to_uint8_truncates_like_the_official_code() -> None:
    values = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0, 2 * 127.9 / 255 - 1])
    frames = values.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    out = to_uint8(frames)
    assert out.dtype == np.uint8 and out.shape == (1, 1, values.numel(), 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255, 127]


@pytest.mark.parametrize("assign", [False, True])
def test_new_weights_take_effect_after_a_render(assign: bool) -> None:
    """Cached derived weights (QR basis, spectral and standardised kernels) follow a weight reload."""
    first, second = random_renderer(TINY, seed=1), random_renderer(TINY, seed=2)
    m0, f_app = first.encode_portrait(_portrait(TINY.image_size))
    target = _targets(m0, 1, seed=4)
    expected = first.render(m0, target, f_app)
    assert not torch.equal(second.render(m0, target, f_app), expected)
    second.load_state_dict({k: v.clone() for k, v in first.state_dict().items()}, assign=assign)
    torch.testing.assert_close(second.render(m0, target, f_app), expected, atol=0, rtol=0)
