"""The audio front end of DyStream (docs/architecture.md §4): from 16 kHz speech to one fused audio token per
25 fps frame.

Two separately fine-tuned wav2vec2 encoders, one for the avatar's own voice ("self") and one for the person it
listens to ("other"), each:

1. utterance normalisation of the whole stream (``normalize_utterance``) and an 80-sample zero tail;
2. the wav2vec2 CNN feature extractor, feature projection and the first N post-LN transformer layers
   (bidirectional, no mask) → features at 50 Hz (``AudioEncoder``);
3. 50 Hz → 25 fps by linear interpolation with ``align_corners=True`` (``to_25fps``).

Per frame the two features are projected, gated per CFG branch (the gate multiplies *after* the projection, so the
projection bias is gated too) and fused by one linear layer (``fuse_branches``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    Wav2Vec2Encoder,
    Wav2Vec2FeatureEncoder,
    Wav2Vec2FeatureProjection,
)

from avatar.errors import InputError
from avatar.motion.config import MotionConfig
from avatar.sampling.cfg import Gates

SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = 640  # 40 ms at 25 fps
TAIL_PAD = 80  # zeros appended after normalisation (5 ms): N = 640 t samples then give exactly 2 t wav2vec frames
NORM_EPS = 1e-7


def normalize_utterance(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole stream, exactly as ``Wav2Vec2FeatureExtractor(do_normalize=True)``.

    μ and σ² are float32 (NumPy), ``sqrt(σ² + 1e-7)`` is taken in float64 and the division is float32.
    An all-zero stream stays all zeros.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise InputError(f"audio must be a 1-D mono array of 16 kHz samples, got shape {x.shape}: downmix it first")
    if x.size == 0:
        raise InputError("audio is empty: pass at least one 40 ms frame (640 samples at 16 kHz)")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise InputError("audio contains NaN or infinite samples: check the decoder / resampler output")
    mean = x.mean()
    var = x.var()
    std = np.float32(np.sqrt(np.float64(var) + NORM_EPS))
    return ((x - mean) / std).astype(np.float32, copy=False)


def input_values(padded_audio: np.ndarray) -> np.ndarray:
    """The encoder input of one stream: the normalised stream followed by 80 zero samples."""
    normalized = normalize_utterance(padded_audio)
    return np.concatenate([normalized, np.zeros(TAIL_PAD, dtype=np.float32)])


def wav2vec_frames(num_samples: int) -> int:
    """Number of 50 Hz features for ``num_samples`` encoder input samples (receptive field 400, hop 320)."""
    return max(0, (num_samples - 400) // 320 + 1)


class AudioEncoder(nn.Module):
    """A wav2vec2 encoder truncated to its first ``config.wav2vec_layers`` layers (``WrapedWav2Vec`` in the release).

    The submodule names are the checkpoint's: ``feature_extractor``, ``feature_projection``, ``encoder``.
    """

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        w2v = config.wav2vec2_config()
        self.feature_extractor = Wav2Vec2FeatureEncoder(w2v)
        self.feature_projection = Wav2Vec2FeatureProjection(w2v)
        self.encoder = Wav2Vec2Encoder(w2v)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """``input_values`` [B, N] (normalised, tail-padded) → last hidden state at 50 Hz [B, L, A]."""
        if input_values.ndim != 2:
            raise InputError(f"input_values must be [batch, samples], got shape {tuple(input_values.shape)}")
        if input_values.shape[1] < 400:
            raise InputError(f"input_values has {input_values.shape[1]} samples; wav2vec2 needs at least 400")
        conv = self.feature_extractor(input_values).transpose(1, 2)
        hidden, _ = self.feature_projection(conv)
        # Wav2Vec2Encoder.forward without a mask, run layer by layer: the same computation, minus the LayerDrop
        # draw that would advance the global torch RNG on every call (dropout is off in eval mode).
        encoder = self.encoder
        hidden = encoder.layer_norm(hidden + encoder.pos_conv_embed(hidden))
        hidden = encoder.dropout(hidden)
        for layer in encoder.layers:
            hidden = layer(hidden, attention_mask=None)[0]
        return hidden


def to_25fps(feat50: torch.Tensor) -> torch.Tensor:
    """50 Hz features [B, L, A] → 25 fps [B, L // 2, A]: linear interpolation, ``align_corners=True``."""
    if feat50.ndim != 3 or feat50.shape[1] < 2:
        raise InputError(f"features must be [batch, frames >= 2, dim], got shape {tuple(feat50.shape)}")
    out = F.interpolate(feat50.transpose(1, 2), scale_factor=0.5, mode="linear", align_corners=True)
    return out.transpose(1, 2)


def fuse_branches(
    audio_proj: nn.Linear,
    audio_other_proj: nn.Linear,
    fusion: nn.Linear,
    feat_self: torch.Tensor,
    feat_other: torch.Tensor,
    gates: Gates,
) -> torch.Tensor:
    """Fused audio tokens [B, T, H] for 25 fps features ``feat_self``, ``feat_other`` [T, A] and B branch gates.

    ``fusion(cat(audio_proj(f_self) * g_self, audio_other_proj(f_other) * g_other))``; the fusion bias is never
    gated, so the unconditional branch is that bias.
    """
    if feat_self.shape != feat_other.shape or feat_self.ndim != 2:
        raise InputError(
            f"self and other features must both be [frames, dim], got {tuple(feat_self.shape)} and "
            f"{tuple(feat_other.shape)}: pad the shorter stream with zeros"
        )
    proj_self = audio_proj(feat_self)
    proj_other = audio_other_proj(feat_other)
    gate_self = gates.audio_self.to(proj_self)[:, None, None]
    gate_other = gates.audio_other.to(proj_other)[:, None, None]
    both = torch.cat([proj_self[None] * gate_self, proj_other[None] * gate_other], dim=-1)
    return fusion(both)
