"""The autoregressive motion transformer of DyStream (docs/architecture.md §6), and the whole motion generator.

One step reads a window of 94 past motion latents (one token each, ``face_embed``), one fused audio token per
motion token, and the anchor latent m0. Each of the ``num_layers`` pre-LN blocks does, in order:

1. causal self-attention where q = k = RoPE(norm1(x)) and v = norm1(x); the rotation acts on (even, odd) pairs of the
   whole hidden vector *before* the in-projection, positions 0…93 in every window;
2. ``x += cross_linear_audio(audio)``: the audio of the same time step, added;
3. cross-attention from norm_anchor(x) to the single anchor token: with one key the softmax is 1, so this adds
   ``out_proj(W_v · anchor + b_v)`` to every token;
4. causal self-attention with the sinusoidal absolute position added to q, k and v (norm3);
5. MLP (norm4).

``norm2`` and ``cross_attn_rope`` are in the release's checkpoint but unused; they are kept so that the state dict
(names, order, shapes) equals the official one and EMA weights map by parameter order. The last token's output,
``output_proj(output_norm(·))``, is the condition c_n of the flow head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avatar.errors import InputError
from avatar.motion.audio import AudioEncoder, fuse_branches
from avatar.motion.config import MotionConfig
from avatar.motion.flow_head import FlowHead, Mlp, TimeEmbedding
from avatar.sampling.cfg import BRANCHES_5, Branch, branch_gates


class RotaryEmbedding(nn.Module):
    """Rotation of (even, odd) channel pairs by ``pos · 10000^(-2i/H)``; the angles are persistent buffers."""

    def __init__(self, dim: int, max_seq_len: int) -> None:
        super().__init__()
        theta = 10000.0 ** (-2 * torch.arange(dim // 2, dtype=torch.float32) / dim)
        angles = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * theta[None, :]
        self.register_buffer("cos_angles", angles.cos())
        self.register_buffer("sin_angles", angles.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, L, H] at positions 0…L−1 → rotated copy."""
        length = x.shape[1]
        cos, sin = self.cos_angles[:length], self.sin_angles[:length]
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class SinusoidalPosition(nn.Module):
    """Absolute position: sin on even channels, cos on odd, base 10000 (buffer ``pe`` [1, max_seq_len, H])."""

    def __init__(self, dim: int, max_seq_len: int) -> None:
        super().__init__()
        position = torch.arange(max_seq_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_seq_len, dim)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


class Attention(nn.Module):
    """Multi-head attention with a packed q/k/v in-projection (``nn.MultiheadAttention``'s parameter layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, qk_input: torch.Tensor, v_input: torch.Tensor, causal: bool) -> torch.Tensor:
        """Self-attention where queries and keys come from ``qk_input`` and values from ``v_input``."""
        dim = qk_input.shape[-1]
        if v_input is qk_input:
            q, k, v = F.linear(qk_input, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q, k = F.linear(qk_input, self.in_proj_weight[: 2 * dim], self.in_proj_bias[: 2 * dim]).chunk(2, dim=-1)
            v = F.linear(v_input, self.in_proj_weight[2 * dim :], self.in_proj_bias[2 * dim :])
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), is_causal=causal)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def single_key(self, kv_input: torch.Tensor) -> torch.Tensor:
        """Attention output for any query over one key/value token [B, 1, H]: the softmax is 1, so it is
        ``out_proj(v)``."""
        dim = kv_input.shape[-1]
        return self.out_proj(F.linear(kv_input, self.in_proj_weight[2 * dim :], self.in_proj_bias[2 * dim :]))


class RopeSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, max_seq_len: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.rope = RotaryEmbedding(dim, max_seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.self_attn(self.rope(x), x, causal=True)


class RopeCrossAttention(nn.Module):
    """Cross-attention to a condition sequence (the anchor: one token, at position 0 where RoPE is the identity)."""

    def __init__(self, dim: int, num_heads: int, max_seq_len: int) -> None:
        super().__init__()
        self.cross_attn = Attention(dim, num_heads)
        self.rope = RotaryEmbedding(dim, max_seq_len)

    def forward(self, anchor: torch.Tensor) -> torch.Tensor:
        """``anchor`` [B, 1, H] → [B, 1, H], the same for every query position."""
        return self.cross_attn.single_key(anchor)


class PositionSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, max_seq_len: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.pe = SinusoidalPosition(dim, max_seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pe(x)
        return self.self_attn(x, x, causal=True)


class MotionBlock(nn.Module):
    """One transformer block (``Audio2FaceGPTBlock``)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, max_seq_len: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)  # unused, kept for the checkpoint
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.norm_anchor = nn.LayerNorm(dim)  # the query of a single-key attention: no effect on the output
        self.self_attn_rope = RopeSelfAttention(dim, num_heads, max_seq_len)
        self.cross_attn_rope = RopeCrossAttention(dim, num_heads, max_seq_len)  # unused, kept for the checkpoint
        self.self_attn_pos = PositionSelfAttention(dim, num_heads, max_seq_len)
        self.cross_attn_anchor = RopeCrossAttention(dim, num_heads, max_seq_len)
        self.cross_linear_audio = nn.Linear(dim, dim)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn_rope(self.norm1(x))
        x = x + self.cross_linear_audio(audio)
        x = x + self.cross_attn_anchor(anchor)
        x = x + self.self_attn_pos(self.norm3(x))
        return x + self.mlp(self.norm4(x))


class MotionGenerator(nn.Module):
    """DyStream's motion generator (``Audio2FaceGPT``): audio encoders, fusion, transformer, flow head.

    Its ``state_dict`` equals the official one without the ``model.`` prefix (keys, order, shapes, buffers).
    ``fuse``, ``last_hidden`` and ``condition`` run under ``torch.inference_mode`` (they return inference tensors).
    """

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        self.config = config
        dim, face = config.hidden_size, config.face_dim
        self.audio_encoder_face = AudioEncoder(config)
        self.audio_encoder_face_other = AudioEncoder(config)
        self.audio_proj = nn.Linear(config.audio_dim, dim)
        self.audio_other_proj = nn.Linear(config.audio_dim, dim)
        self.audio_audioother_fusion = nn.Linear(2 * dim, dim)
        self.face_embed = nn.Linear(face, dim)
        self.anchor_embed = nn.Linear(face, dim)
        self.time_embed = TimeEmbedding(dim)
        self.blocks = nn.ModuleList(
            MotionBlock(dim, config.num_heads, config.mlp_hidden, config.max_seq_len) for _ in range(config.num_layers)
        )
        self.output_norm = nn.LayerNorm(dim)
        self.output_proj = nn.Linear(dim, face)
        self.diffusion_head = FlowHead(face, dim, config.head_blocks, config.mlp_hidden)

    @property
    def device(self) -> torch.device:
        return self.face_embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.face_embed.weight.dtype

    @torch.inference_mode()
    def fuse(
        self, feat_self: torch.Tensor, feat_other: torch.Tensor, branches: tuple[Branch, ...] = BRANCHES_5
    ) -> torch.Tensor:
        """25 fps features ``feat_self``, ``feat_other`` [T, A] → fused audio tokens [B, T, H], one row per branch
        (default order ``[uncond, anchor, audio_self, audio_other, all]``; pass ``BRANCHES_4`` to drop the anchor)."""
        gates = branch_gates(branches, device=feat_self.device, dtype=feat_self.dtype)
        return fuse_branches(
            self.audio_proj, self.audio_other_proj, self.audio_audioother_fusion, feat_self, feat_other, gates
        )

    @torch.inference_mode()
    def last_hidden(
        self, past_motion: torch.Tensor, fused: torch.Tensor, anchor: torch.Tensor, anchor_gate: torch.Tensor
    ) -> torch.Tensor:
        """Transformer output at the last position [N·B, H] (the input of ``output_norm``); see ``condition``."""
        context, face, hidden = self.config.context, self.config.face_dim, self.config.hidden_size
        if past_motion.ndim == 2:
            past_motion = past_motion[None]
        sessions, rows = past_motion.shape[0], fused.shape[0]
        if past_motion.shape[1:] != (context, face):
            raise InputError(f"past_motion must be [{context}, {face}], got {tuple(past_motion.shape)}")
        if fused.ndim != 3 or fused.shape[1:] != (context, hidden) or rows % sessions:
            raise InputError(f"fused audio must be [branches, {context}, {hidden}], got {tuple(fused.shape)}")
        if anchor.shape != (sessions, face):
            raise InputError(f"anchor must be [{sessions}, {face}], got {tuple(anchor.shape)}")
        if anchor_gate.shape != (rows,):
            raise InputError(f"anchor_gate must be [{rows}] (one per branch), got {tuple(anchor_gate.shape)}")
        branches = rows // sessions
        x = self.face_embed(past_motion)[:, None].expand(-1, branches, -1, -1).reshape(rows, context, hidden)
        anchor_hidden = self.anchor_embed(anchor)[:, None].expand(-1, branches, -1).reshape(rows, 1, hidden)
        anchor_hidden = anchor_hidden * anchor_gate.to(fused)[:, None, None]
        for block in self.blocks:
            x = block(x, fused, anchor_hidden)
        return x[:, -1]

    @torch.inference_mode()
    def condition(
        self, past_motion: torch.Tensor, fused: torch.Tensor, anchor: torch.Tensor, anchor_gate: torch.Tensor
    ) -> torch.Tensor:
        """One transformer window → the flow head's condition c_n [B, F].

        ``past_motion`` [94, F]: the motion history (oldest first); ``fused`` [B, 94, H]: the fused audio token of
        each history token per branch; ``anchor`` [1, F]: m0; ``anchor_gate`` [B]: 1 where the branch sees the anchor.
        Positions restart at 0 in every window. N sessions at once: ``past_motion`` [N, 94, F], ``anchor`` [N, F],
        ``fused`` and ``anchor_gate`` session-major ([N·B, …]) → [N·B, F].
        """
        return self.output_proj(self.output_norm(self.last_hidden(past_motion, fused, anchor, anchor_gate)))
