"""FlowEstimator: moves the source latent along learned motion directions (docs/architecture.md §3).

alpha = fc(target) (5 equalized linear layers, no activations), Q = reduced QR of (direction + 1e-8) [512,64],
output = source + Q alpha. The QR runs in float32 whatever the model dtype, which reproduces the column signs of
the original ``torch.qr``.
"""

from __future__ import annotations

import torch
from torch import nn

from avatar.renderer.config import RendererConfig
from avatar.renderer.layers import DerivedWeight, EqualLinear


class Direction(nn.Module):
    """Orthonormal basis of the motion space: Q of the QR decomposition of the learned [latent, motion] matrix."""

    def __init__(self, latent_dim: int, motion_space: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(latent_dim, motion_space))
        self._basis = DerivedWeight()

    def basis(self) -> torch.Tensor:
        return self._basis.get((self.weight,), lambda: torch.linalg.qr(self.weight.float() + 1e-8)[0])

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """Displacement sum_k alpha_k q_k for magnitudes alpha [B, motion_space] -> [B, latent_dim]."""
        return (alpha.float() @ self.basis().T).to(alpha.dtype)


class FlowEstimator(nn.Module):
    """(source latent [B,512], target latent [B,512]) -> latent that drives the face generator [B,512]."""

    def __init__(self, config: RendererConfig) -> None:
        super().__init__()
        dims = [config.latent_dim] * (config.flow_hidden_layers + 1) + [config.motion_space]
        self.fc = nn.Sequential(*(EqualLinear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)))
        self.direction = Direction(config.latent_dim, config.motion_space)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return source + self.direction(self.fc(target))
