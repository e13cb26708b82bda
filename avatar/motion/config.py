"""Sizes of the DyStream motion generator (the audio encoders, the autoregressive transformer and the flow head).

The defaults are the official model as ``app.py`` builds it: ``Audio2FaceGPT(cfg)`` with its constructor defaults
(the yaml's ``hidden_size``/``heads``/``layers`` are ignored by that code) and two wav2vec2-base-960h encoders cut
to their first 8 layers. The wav2vec2 configuration is written out here, so nothing is downloaded to build a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from avatar.errors import InputError

# `Wav2Vec2Config` keyword arguments of facebook/wav2vec2-base-960h (the values that shape or drive the encoder).
WAV2VEC2_BASE_960H: dict[str, Any] = {
    "vocab_size": 32,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout": 0.1,
    "activation_dropout": 0.1,
    "attention_dropout": 0.1,
    "feat_proj_dropout": 0.1,
    "final_dropout": 0.1,
    "layerdrop": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": [512, 512, 512, 512, 512, 512, 512],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "apply_spec_augment": True,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
    "mask_feature_prob": 0.0,
    "mask_feature_length": 10,
    "ctc_loss_reduction": "sum",
    "ctc_zero_infinity": False,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


@dataclass(frozen=True)
class MotionConfig:
    """Every size of the motion generator. ``window`` frames of audio per step, ``window - 2`` motion tokens."""

    audio_dim: int = 768
    face_dim: int = 512
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    max_seq_len: int = 1024
    head_blocks: int = 6
    window: int = 96
    wav2vec2: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(WAV2VEC2_BASE_960H)))
    wav2vec_layers: int = 8

    def __post_init__(self) -> None:
        checks = [
            (self.hidden_size % self.num_heads == 0, "hidden_size must be a multiple of num_heads"),
            (self.hidden_size % 2 == 0, "hidden_size must be even (the rotary embedding rotates pairs)"),
            (self.window >= 3, "window must be at least 3 frames"),
            (self.max_seq_len >= self.context, "max_seq_len must cover the window - 2 motion tokens"),
            (self.num_layers >= 1 and self.head_blocks >= 1, "num_layers and head_blocks must be at least 1"),
            (self.wav2vec_layers >= 1, "wav2vec_layers must be at least 1"),
            (self.wav2vec2.get("hidden_size") == self.audio_dim, "audio_dim must equal wav2vec2 hidden_size"),
            (self.wav2vec2.get("feat_extract_norm") == "group", "only the 'group' wav2vec2 feature extractor is used"),
            (not self.wav2vec2.get("do_stable_layer_norm"), "DyStream's wav2vec2 is post-LN (do_stable_layer_norm)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"invalid MotionConfig: {message} (got {self.describe()})")

    @property
    def context(self) -> int:
        """Motion tokens per transformer step (94 in the official model)."""
        return self.window - 2

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def wav2vec2_config(self):
        """The ``Wav2Vec2Config`` of one audio encoder: ``wav2vec_layers`` layers, SDPA attention."""
        from transformers import Wav2Vec2Config

        kwargs = {**self.wav2vec2, "num_hidden_layers": self.wav2vec_layers}
        config = Wav2Vec2Config(**kwargs)
        config._attn_implementation = "sdpa"
        return config

    def describe(self) -> str:
        return (
            f"audio_dim={self.audio_dim} hidden={self.hidden_size} layers={self.num_layers} heads={self.num_heads} "
            f"mlp_ratio={self.mlp_ratio} wav2vec2 hidden={self.wav2vec2.get('hidden_size')} "
            f"layers={self.wav2vec_layers}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MotionConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown MotionConfig fields {unknown}: expected a subset of {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_parity(cls, config_json: Mapping[str, Any]) -> MotionConfig:
        """Read the ``motion`` section of a parity golden set's ``config.json``."""
        try:
            motion = config_json["motion"]
            ctor = motion["constructor"]
            return cls(
                audio_dim=int(ctor["audio_dim"]),
                face_dim=int(ctor["face_dim"]),
                hidden_size=int(ctor["hidden_size"]),
                num_layers=int(ctor["num_layers"]),
                num_heads=int(ctor["num_heads"]),
                mlp_ratio=float(ctor["mlp_ratio"]),
                max_seq_len=int(ctor["max_seq_len"]),
                head_blocks=int(motion.get("diffusion_head_blocks", 6)),
                window=int(motion.get("cbh_window_length", 96)),
                wav2vec2=dict(motion["wav2vec2_config"]),
                wav2vec_layers=int(motion["wav2vec2_truncated_layers"]),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(
                f"parity config.json has no motion.constructor / wav2vec2_config / wav2vec2_truncated_layers "
                f"({exc!r}): is it the config.json of a DyStream parity set?"
            ) from exc

    @classmethod
    def tiny(cls) -> MotionConfig:
        """A small model for tests and demos without weights (random weights, same structure as the real one)."""
        wav2vec2 = {
            **WAV2VEC2_BASE_960H,
            "hidden_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "conv_dim": [32] * 7,
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 4,
        }
        return cls(audio_dim=32, hidden_size=64, num_layers=2, num_heads=4, wav2vec2=wav2vec2, wav2vec_layers=2)

    def __hash__(self) -> int:
        return hash(self.to_json())
