"""Untrained renderer weights for tests and demos without the official checkpoint.

Seeded and deterministic. Scales are chosen so that a random render is neither flat nor saturated:
- equalized-LR layers (motion encoder, flow estimator) get unit-normal weights, as they are scaled in forward;
- other conv/linear weights get N(0, gain^2 / fan_in), with gain 1/2 on the two layers that feed a tanh
  (warp offsets, RGB) so that offsets stay a few cells and colours stay inside (-1, 1);
- biases and norm shifts are small, norm scales near 1, BatchNorm running statistics mean 0 / variance 1;
- adaptive group norm matrices are uniform with unit-variance products;
- spectral-norm vectors u, v are the leading singular vectors of weight_orig, so sigma = u^T W v is its norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avatar.renderer.config import RendererConfig
from avatar.renderer.flow import Direction
from avatar.renderer.generator import AdaptiveGroupNorm
from avatar.renderer.layers import Blur, EqualConv2d, EqualLinear, FusedLeakyReLU, blur_kernel
from avatar.renderer.renderer import Renderer, resolve_dtype
from avatar.renderer.spade import SpectralNormConv2d

TANH_INPUT_GAIN = 0.5
POWER_ITERATIONS = 500


def _normal(t: torch.Tensor, std: float, gen: torch.Generator) -> None:
    t.copy_(torch.randn(t.shape, generator=gen) * std)


def _uniform(t: torch.Tensor, bound: float, gen: torch.Generator) -> None:
    t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1) * bound)


def _fan_in(weight: torch.Tensor) -> int:
    return max(1, math.prod(weight.shape[1:]))


def _spectral_vectors(weight: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading singular vectors (u, v) of W = weight.reshape(out, -1), so that u^T W v is its spectral norm:
    u by float64 power iteration on the small Gram matrix W W^T, then v = W^T u / |W^T u|."""
    w = weight.double().reshape(weight.shape[0], -1)
    gram = w @ w.T
    u = torch.randn(w.shape[0], generator=gen, dtype=torch.float64)
    for _ in range(POWER_ITERATIONS):
        u = gram @ u
        u = u / u.norm()
    v = w.T @ u
    return u.float(), (v / v.norm()).float()


@torch.no_grad()
def init_random_weights(renderer: Renderer, seed: int = 0) -> Renderer:
    """Fill every parameter and buffer of ``renderer`` (on CPU, float32) from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    tanh_inputs = {id(renderer.face_generator.conv2), id(renderer.face_generator.conv_img[0])}
    for module in renderer.modules():
        if isinstance(module, (EqualConv2d, EqualLinear, Direction)):
            _normal(module.weight, 1.0, gen)
            if getattr(module, "bias", None) is not None:
                _normal(module.bias, 0.05, gen)
        elif isinstance(module, SpectralNormConv2d):
            _normal(module.weight_orig, 1.0 / math.sqrt(_fan_in(module.weight_orig)), gen)
            if module.bias is not None:
                _normal(module.bias, 0.05, gen)
            u, v = _spectral_vectors(module.weight_orig, gen)
            module.weight_u.copy_(u)
            module.weight_v.copy_(v)
        elif isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            gain = TANH_INPUT_GAIN if id(module) in tanh_inputs else 1.0
            _normal(module.weight, gain / math.sqrt(_fan_in(module.weight)), gen)
            if module.bias is not None:
                _normal(module.bias, 0.05, gen)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
            module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
            _normal(module.bias, 0.05, gen)
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
                module.reset_running_stats()
        elif isinstance(module, AdaptiveGroupNorm):
            _uniform(module.u, math.sqrt(3.0 / module.u.shape[1]), gen)
            _uniform(module.v, math.sqrt(3.0 / module.v.shape[0]), gen)
        elif isinstance(module, FusedLeakyReLU):
            _normal(module.bias, 0.05, gen)
        elif isinstance(module, Blur):
            module.kernel.copy_(blur_kernel())
    return renderer


def random_renderer(
    config: RendererConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> Renderer:
    """An untrained renderer (eval mode, no gradients) with deterministic weights from ``seed``."""
    renderer = init_random_weights(Renderer(config), seed)
    return renderer.to(device=device, dtype=resolve_dtype(dtype)).eval().requires_grad_(False)
