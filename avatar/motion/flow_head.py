"""The flow-matching head of DyStream (docs/architecture.md §7), and the diffusion time embedding.

``FlowHead`` predicts the clean latent x0 of one frame from a noisy latent z_t, the transformer's condition c_n and
the time embedding. It works on a single token (no attention): ``noisy_proj(z_t)`` goes through 6 AdaLN-MLP
blocks, each modulated first by the time embedding and then by ``gpt_proj(c_n)``, then ``output_norm`` and
``output_proj``. The normalisations of the blocks have no affine and run in float32.

``TimeEmbedding`` is diffusers' ``Timesteps(H, flip_sin_to_cos=True, downscale_freq_shift=0)`` followed by
``TimestepEmbedding`` (Linear → SiLU → Linear), with the checkpoint's key names (``time_embedder.linear_1/2``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Linear → exact GELU → Linear (timm ``Mlp`` without dropout at inference)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def sinusoidal_timestep(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[S] timesteps → [S, dim]: ``cat(cos, sin)`` of ``t · exp(-ln(max_period) · i / (dim/2))``, i < dim/2."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepMlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeEmbedding(nn.Module):
    """Integer diffusion timesteps [S] (int64, 1…1000) → embeddings [S, H]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.time_embedder = TimestepMlp(dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        freq = sinusoidal_timestep(timesteps, self.dim)
        weight = self.time_embedder.linear_1.weight
        return self.time_embedder(freq.to(weight.dtype))


def _layer_norm_fp32(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float(), (x.shape[-1],), eps=1e-5)


class FlowHeadBlock(nn.Module):
    """Two AdaLN-modulated MLPs: ``x += gate · MLP(LN(x)·(1+scale) + shift)``, modulated by temb, then by c_n."""

    def __init__(self, dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.mlp1 = Mlp(dim, mlp_hidden)
        self.mlp2 = Mlp(dim, mlp_hidden)
        self.adaLN_modulation1 = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaLN_modulation2 = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))

    @staticmethod
    def _modulated(x: torch.Tensor, mlp: Mlp, modulation: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = modulation.chunk(3, dim=-1)
        h = (_layer_norm_fp32(x) * (1 + scale) + shift).to(x.dtype)
        return (x.float() + mlp(h).float() * gate).to(x.dtype)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self._modulated(x, self.mlp1, self.adaLN_modulation1(temb))
        return self._modulated(x, self.mlp2, self.adaLN_modulation2(cond))


class FlowHead(nn.Module):
    """x0 prediction of one frame. ``past_proj`` and ``anchor_proj`` are in the release but unused."""

    def __init__(self, face_dim: int, dim: int, num_blocks: int, mlp_hidden: int) -> None:
        super().__init__()
        self.noisy_proj = nn.Linear(face_dim, dim)
        self.gpt_proj = nn.Linear(face_dim, dim)
        self.past_proj = nn.Linear(face_dim, dim)  # unused, kept for the checkpoint
        self.anchor_proj = nn.Linear(face_dim, dim)  # unused, kept for the checkpoint
        self.blocks = nn.ModuleList(FlowHeadBlock(dim, mlp_hidden) for _ in range(num_blocks))
        self.output_norm = nn.LayerNorm(dim)
        self.output_proj = nn.Linear(dim, face_dim)

    def forward(self, z_t: torch.Tensor, c_n: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``z_t`` [1 or B, F], ``c_n`` [B, F], ``temb`` [1 or B, H] → x0 [B, F] (size-1 inputs broadcast)."""
        x = self.noisy_proj(z_t)
        cond = self.gpt_proj(c_n)
        for block in self.blocks:
            x = block(x, cond, temb)
        return self.output_proj(self.output_norm(x))
