"""Building blocks shared by the renderer modules (docs/architecture.md §3).

- StyleGAN2-style layers of the motion encoder and flow estimator: equalized-learning-rate convolution and linear
  layers (weight x 1/sqrt(fan_in) applied in forward), the [1,3,3,1] blur and the fused leaky ReLU
  (bias, slope 0.2, gain sqrt 2).
- ``SameBlock2d`` / ``DownBlock2d``: conv3x3 + BatchNorm + (leaky) ReLU (+ 2x2 average pool) of the appearance
  encoder and the generator's projection.
- ``DerivedWeight``: a cache for tensors derived from fixed weights (computed once per weight change, not per frame).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def blur_kernel(taps: tuple[float, ...] = BLUR_TAPS) -> torch.Tensor:
    """Outer product of ``taps`` with itself, normalised to sum 1 ([4,4] for the default taps)."""
    total = sum(taps) ** 2
    return torch.tensor([[a * b / total for b in taps] for a in taps], dtype=torch.float32)  # no tensor math: meta-safe


class EqualConv2d(nn.Module):
    """Conv2d whose unit-variance weight is scaled by 1/sqrt(fan_in) at run time."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer whose unit-variance weight is scaled by 1/sqrt(in_features) at run time (no activation)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class Blur(nn.Module):
    """Zero-pad by ``pad`` = (before, after) on both axes, then filter each channel with the [1,3,3,1] kernel."""

    def __init__(self, pad: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel())
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        weight = self.kernel.flip(0, 1).to(x.dtype).expand(c, 1, *self.kernel.shape)
        return F.conv2d(x, weight, groups=c)


class FusedLeakyReLU(nn.Module):
    """leaky_relu(x + bias, 0.2) * sqrt(2), with a per-channel bias stored as [1,C,1,1]."""

    def __init__(self, channels: int, negative_slope: float = 0.2, gain: float = math.sqrt(2.0)) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.negative_slope = negative_slope
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias, self.negative_slope) * self.gain


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU]. Downsampling blurs first, then convolves with stride 2."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False, activate: bool = True
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR_TAPS) - 2) + (kernel_size - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False))
        if activate:
            layers.append(FusedLeakyReLU(out_channels))
        super().__init__(*layers)


class SameBlock2d(nn.Module):
    """conv3x3 -> BatchNorm2d -> ReLU (or LeakyReLU 0.01), resolution kept."""

    def __init__(self, in_channels: int, out_channels: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x) if self.leaky else F.relu(x)


class DownBlock2d(SameBlock2d):
    """SameBlock2d followed by a 2x2 average pool (halves the resolution)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), kernel_size=2)


class DerivedWeight:
    """Caches a tensor computed from weights (a QR basis, a normalised kernel) until one of them changes.

    A cached value stays valid while every source is the same tensor object (held by weak reference, so
    ``load_state_dict(assign=True)`` and ``.to()`` invalidate it) with the same in-place version counter (so
    ``load_state_dict`` copies and in-place edits do too). Nothing is cached while autograd could need the graph.
    """

    def __init__(self) -> None:
        self._sources: list[tuple[weakref.ref[torch.Tensor], int]] = []
        self._value: torch.Tensor | None = None

    def _valid(self, sources: tuple[torch.Tensor, ...]) -> bool:
        if self._value is None or len(self._sources) != len(sources):
            return False
        pairs = zip(self._sources, sources, strict=True)
        return all(ref() is t and version == t._version for (ref, version), t in pairs)

    def get(self, sources: tuple[torch.Tensor, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
            return compute()
        if not self._valid(sources):
            self._value = compute()
            self._sources = [(weakref.ref(t), t._version) for t in sources]
        return self._value
