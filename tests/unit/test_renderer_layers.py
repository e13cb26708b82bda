"""The renderer's building blocks behave as docs/architecture.md §3 says."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from avatar.renderer.flow import Direction
from avatar.renderer.generator import AdaptiveGroupNorm, WSConv3d, identity_grid
from avatar.renderer.layers import Blur, ConvLayer, DerivedWeight, EqualConv2d, EqualLinear, FusedLeakyReLU
from avatar.renderer.spade import SpectralNormConv2d


def test_equalized_layers_scale_weights_by_inverse_sqrt_fan_in() -> None:
    torch.manual_seed(0)
    conv = EqualConv2d(4, 3, 3, padding=1)
    conv.weight.data.normal_()
    conv.bias.data.normal_()
    x = torch.randn(2, 4, 5, 5)
    expected = F.conv2d(x, conv.weight / math.sqrt(4 * 9), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)

    lin = EqualLinear(16, 8)
    lin.weight.data.normal_()
    lin.bias.data.normal_()
    v = torch.randn(3, 16)
    torch.testing.assert_close(lin(v), v @ (lin.weight / 4).T + lin.bias)


def test_blur_keeps_a_constant_image_away_from_the_border() -> None:
    blur = Blur((2, 2))
    blur.kernel.copy_(torch.tensor([1.0, 3.0, 3.0, 1.0]).outer(torch.tensor([1.0, 3.0, 3.0, 1.0])) / 64)
    out = blur(torch.ones(1, 2, 8, 8))
    assert out.shape == (1, 2, 9, 9)
    torch.testing.assert_close(out[..., 3:-3, 3:-3], torch.ones(1, 2, 3, 3))


def test_downsampling_conv_layer_halves_the_resolution_with_the_official_padding() -> None:
    three = ConvLayer(8, 16, 3, downsample=True)
    one = ConvLayer(8, 16, 1, downsample=True, activate=False)
    assert three[0].pad == (2, 2) and one[0].pad == (1, 1)
    for module in (*three, *one):
        for t in (*module.parameters(), *module.buffers()):
            t.data.normal_()
    x = torch.randn(1, 8, 32, 32)
    assert three(x).shape == one(x).shape == (1, 16, 16, 16)


def test_fused_leaky_relu_adds_bias_then_applies_slope_and_gain() -> None:
    act = FusedLeakyReLU(2)
    act.bias.data = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    out = act(torch.zeros(1, 2, 1, 1)).flatten()
    torch.testing.assert_close(out, torch.tensor([math.sqrt(2), -0.2 * math.sqrt(2)]))


def test_spectral_norm_uses_the_stored_vectors_without_power_iteration() -> None:
    torch.manual_seed(0)
    conv = SpectralNormConv2d(4, 6, 3)
    conv.weight_orig.data.normal_()
    conv.bias.data.zero_()
    u, v = torch.randn(6), torch.randn(36)
    conv.weight_u.copy_(u / u.norm())
    conv.weight_v.copy_(v / v.norm())
    before = (conv.weight_u.clone(), conv.weight_v.clone())
    x = torch.randn(1, 4, 7, 7)
    out = conv(x)
    sigma = conv.weight_u @ conv.weight_orig.reshape(6, -1) @ conv.weight_v
    torch.testing.assert_close(out, F.conv2d(x, conv.weight_orig / sigma, padding=1))
    assert torch.equal(conv.weight_u, before[0]) and torch.equal(conv.weight_v, before[1])
    top = torch.linalg.matrix_norm(conv.weight_orig.reshape(6, -1), ord=2)
    assert not torch.isclose(sigma, top, rtol=1e-3)  # a converged sigma would give another output


def test_direction_basis_is_orthonormal_and_moves_along_it() -> None:
    torch.manual_seed(0)
    direction = Direction(32, 8)
    direction.weight.data.normal_()
    q = direction.basis()
    torch.testing.assert_close(q.T @ q, torch.eye(8), atol=1e-5, rtol=0)
    alpha = torch.randn(2, 8)
    torch.testing.assert_close(direction(alpha), alpha @ q.T)


def test_weight_standardised_conv_normalises_each_output_filter() -> None:
    torch.manual_seed(0)
    conv = WSConv3d(2, 3, kernel_size=3, padding=1, bias=False)
    conv.weight.data = conv.weight.data * 7 + 3
    w = conv.weight.flatten(1)
    w_std = (w - w.mean(1, keepdim=True)) / (w.std(1, keepdim=True) + 1e-5)
    x = torch.randn(1, 2, 4, 4, 4)
    torch.testing.assert_close(conv(x), F.conv3d(x, w_std.view_as(conv.weight), padding=1))


def test_adaptive_group_norm_scale_and_shift_come_from_the_condition() -> None:
    torch.manual_seed(0)
    agn = AdaptiveGroupNorm(channels=8, cond_channels=4, cond_positions=3, channels_per_group=4)
    agn.u.data.normal_()
    agn.v.data.normal_()
    x, cond = torch.randn(2, 8, 2, 3, 3), torch.randn(2, 4, 3)
    params = agn.u @ cond @ agn.v
    expected = F.group_norm(x, 2) * params[..., 0, None, None, None] + params[..., 1, None, None, None]
    torch.testing.assert_close(agn(x, cond), expected)


def test_identity_grid_is_xyz_ordered_and_spans_minus_one_to_one() -> None:
    grid = identity_grid(2, 3, 4, torch.device("cpu"), torch.float32)
    assert grid.shape == (2, 3, 4, 3)
    torch.testing.assert_close(grid[0, 0, :, 0], torch.linspace(-1, 1, 4))  # x runs along width
    torch.testing.assert_close(grid[0, :, 0, 1], torch.linspace(-1, 1, 3))  # y along height
    torch.testing.assert_close(grid[:, 0, 0, 2], torch.linspace(-1, 1, 2))  # z along depth


def test_derived_weight_is_recomputed_only_when_a_source_changes() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    cache, calls = DerivedWeight(), []

    def compute() -> torch.Tensor:
        calls.append(1)
        return weight * 2

    with torch.no_grad():
        cache.get((weight,), compute)
        cache.get((weight,), compute)
        assert len(calls) == 1
        weight.add_(1)  # in-place edit
        torch.testing.assert_close(cache.get((weight,), compute), torch.full((3,), 4.0))
        replaced = torch.nn.Parameter(torch.zeros(3))  # a new tensor object (assign / .to())
        torch.testing.assert_close(cache.get((replaced,), lambda: replaced * 2), torch.zeros(3))
    assert cache.get((weight,), compute).requires_grad  # with autograd on, nothing is cached
    assert len(calls) == 3
