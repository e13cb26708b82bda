"""Loading the motion generator's weights (docs/architecture.md §10): the official Lightning checkpoint or our
safetensors file.

The official ``last.ckpt`` holds ``state_dict`` (keys prefixed ``model.``, parameters *and* buffers) and
``ema_state`` (torch-ema: ``shadow_params``, one tensor per parameter in ``model.parameters()`` order). Inference
uses the EMA weights: parameter names are the state-dict keys with the buffers left out, in order, and the buffers
come from the state dict. Loading is strict: a missing, unexpected or misshaped key is an error naming the key and
the file. ``convert_to_safetensors`` writes the EMA-applied weights once, with the config as metadata, so that
production loads without unpickling.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.weights.reader import GET_WEIGHTS, CheckpointError, read_weights, save_safetensors, state_dict_of

log = logging.getLogger(__name__)

WHAT = "motion checkpoint"
PREFIX = "model."
METADATA_FORMAT = "dystream-motion/1"
_WEIGHT_NORM_OLD = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}


def _canonical_key(key: str) -> str:
    """Strip ``model.`` and map the old weight-norm names (``weight_g``/``weight_v``) to the parametrization form."""
    if key.startswith(PREFIX):
        key = key[len(PREFIX) :]
    for old, new in _WEIGHT_NORM_OLD.items():
        if key.endswith("pos_conv_embed.conv" + old):
            key = key[: -len(old)] + new
    return key


def _is_buffer(key: str) -> bool:
    return key.endswith((".rope.cos_angles", ".rope.sin_angles", ".pe.pe"))


def apply_ema(state: dict[str, torch.Tensor], ckpt: Mapping[str, Any], path: Path | str) -> dict[str, torch.Tensor]:
    """Replace the parameters of ``state`` (canonical keys, checkpoint order) by the EMA shadow parameters."""
    ema = ckpt.get("ema_state")
    if ema is None:
        log.warning("motion checkpoint has no ema_state: using the raw (non-EMA) weights", extra={"path": str(path)})
        return state
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if not isinstance(shadow, (list, tuple)):
        raise CheckpointError(f"{WHAT} at {path} has an ema_state without a shadow_params list: is it the right file?")
    names = [k for k in state if not _is_buffer(k)]
    if len(shadow) != len(names):
        raise CheckpointError(
            f"{WHAT} at {path}: ema_state has {len(shadow)} shadow parameters but the state_dict has {len(names)} "
            f"parameters: the file is inconsistent; {GET_WEIGHTS}"
        )
    out = dict(state)
    for name, value in zip(names, shadow, strict=True):
        if tuple(value.shape) != tuple(state[name].shape):
            raise CheckpointError(
                f"{WHAT} at {path}: EMA parameter for {name} has shape {tuple(value.shape)}, the state_dict has "
                f"{tuple(state[name].shape)}: the EMA list is not in parameter order; {GET_WEIGHTS}"
            )
        out[name] = value
    return out


def _first(state: Mapping[str, torch.Tensor], key: str, path: Path | str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{WHAT} at {path} has no key {key!r}: it is not a DyStream motion checkpoint")
    return state[key]


def _indices(state: Mapping[str, torch.Tensor], prefix: str) -> set[int]:
    """The numbers N of keys ``prefix + "N." + ...``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return {int(m.group(1)) for k in state if (m := pattern.match(k))}


def infer_motion_config(
    state: Mapping[str, torch.Tensor],
    path: Path | str = "<state_dict>",
    num_heads: int | None = None,
    wav2vec_heads: int | None = None,
) -> MotionConfig:
    """The sizes of a motion generator from its weights (canonical keys).

    Everything but the attention head counts follows from tensor shapes. The head counts default to the official
    head width of 64 (768 → 12 heads for both the transformer and wav2vec2); pass them for other models.
    """
    enc = "audio_encoder_face."
    audio_proj = _first(state, "audio_proj.weight", path)
    hidden, audio_dim = audio_proj.shape
    face_dim = _first(state, "face_embed.weight", path).shape[1]
    layer_ids = _indices(state, "blocks.")
    head_ids = _indices(state, "diffusion_head.blocks.")
    mlp_hidden = _first(state, "blocks.0.mlp.fc1.weight", path).shape[0]
    max_seq_len = _first(state, "blocks.0.self_attn_rope.rope.cos_angles", path).shape[0]

    conv_ids = sorted(_indices(state, f"{enc}feature_extractor.conv_layers."))
    conv_weights = [_first(state, f"{enc}feature_extractor.conv_layers.{i}.conv.weight", path) for i in conv_ids]
    w2v_layer_ids = _indices(state, f"{enc}encoder.layers.")
    pos_g = _first(state, f"{enc}encoder.pos_conv_embed.conv.parametrizations.weight.original0", path)
    pos_v = _first(state, f"{enc}encoder.pos_conv_embed.conv.parametrizations.weight.original1", path)
    w2v_ffn = _first(state, f"{enc}encoder.layers.0.feed_forward.intermediate_dense.weight", path).shape[0]

    def heads_for(width: int, given: int | None, what: str) -> int:
        if given is not None:
            return given
        if width % 64:
            raise CheckpointError(
                f"{WHAT} at {path}: cannot infer the {what} head count of width {width} (not a multiple of 64): "
                f"pass a MotionConfig"
            )
        return width // 64

    wav2vec2 = {
        **MotionConfig().wav2vec2,
        "hidden_size": audio_dim,
        "num_hidden_layers": len(w2v_layer_ids),
        "num_attention_heads": heads_for(audio_dim, wav2vec_heads, "wav2vec2"),
        "intermediate_size": w2v_ffn,
        "conv_dim": [int(w.shape[0]) for w in conv_weights],
        "conv_kernel": [int(w.shape[2]) for w in conv_weights],
        "conv_bias": f"{enc}feature_extractor.conv_layers.0.conv.bias" in state,
        "num_conv_pos_embeddings": int(pos_g.shape[2]),
        "num_conv_pos_embedding_groups": int(audio_dim // pos_v.shape[1]),
    }
    if len(conv_weights) != len(wav2vec2["conv_stride"]):
        raise CheckpointError(f"{WHAT} at {path}: {len(conv_weights)} wav2vec2 conv layers, expected 7: pass a config")
    return MotionConfig(
        audio_dim=audio_dim,
        face_dim=face_dim,
        hidden_size=hidden,
        num_layers=len(layer_ids),
        num_heads=heads_for(hidden, num_heads, "transformer"),
        mlp_ratio=mlp_hidden / hidden,
        max_seq_len=max_seq_len,
        head_blocks=len(head_ids),
        wav2vec2=wav2vec2,
        wav2vec_layers=len(w2v_layer_ids),
    )


def _read_motion_state(path: Path) -> tuple[dict[str, torch.Tensor], MotionConfig | None]:
    """Canonical EMA-applied state dict of a ``.ckpt`` or our ``.safetensors``, and the config stored with it."""
    ckpt = read_weights(path, WHAT)
    raw = state_dict_of(ckpt, path, WHAT)
    state = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{WHAT} at {path}: state_dict entry {key!r} is not a tensor")
        state[_canonical_key(key)] = value
    stored_config = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != METADATA_FORMAT:
            log.warning(
                "safetensors motion checkpoint without our metadata: EMA assumed applied", extra={"path": str(path)}
            )
        if "config" in meta:
            stored_config = MotionConfig.from_dict(json.loads(meta["config"]))
    else:
        state = apply_ema(state, ckpt, path)
    return state, stored_config


def _check_keys(model: MotionGenerator, state: Mapping[str, torch.Tensor], path: Path | str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(
            f"{WHAT} at {path} lacks {len(missing)} key(s), first {missing[0]!r}: wrong model size or a damaged "
            f"file; {GET_WEIGHTS}"
        )
    if unexpected:
        raise CheckpointError(
            f"{WHAT} at {path} has {len(unexpected)} unexpected key(s), first {unexpected[0]!r}: it is not a "
            f"DyStream motion checkpoint of this size; {GET_WEIGHTS}"
        )
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{WHAT} at {path}: {key!r} has shape {tuple(state[key].shape)} but the model "
                f"({model.config.describe()}) expects {tuple(ref.shape)}: pass the matching MotionConfig"
            )


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise CheckpointError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16") from None


def _ready(model: MotionGenerator, device: torch.device | str, dtype: torch.dtype | str) -> MotionGenerator:
    model = model.to(device=device, dtype=_resolve_dtype(dtype))
    model.eval()
    model.requires_grad_(False)
    return model


def load_motion_generator(
    path: str | os.PathLike[str],
    config: MotionConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> MotionGenerator:
    """A ready (eval, no grad) motion generator with the EMA weights of ``path`` (``.ckpt`` or ``.safetensors``).

    ``config`` None: sizes from the file's metadata, else inferred from its shapes (``infer_motion_config``).
    """
    path = Path(path).expanduser()
    dtype = _resolve_dtype(dtype)
    state, stored = _read_motion_state(path)
    if config is None:
        config = stored or infer_motion_config(state, path)
    with torch.device("meta"):
        model = MotionGenerator(config)
    _check_keys(model, state, path)
    model.load_state_dict(state, strict=True, assign=True)
    log.info("motion generator loaded", extra={"path": str(path), "config": config.describe(), "device": str(device)})
    return _ready(model, device, dtype)


def random_motion_generator(
    config: MotionConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> MotionGenerator:
    """An untrained motion generator (default PyTorch initialisation, seeded), for tests and demos."""
    config = config or MotionConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MotionGenerator(config)
    return _ready(model, device, dtype)


def convert_to_safetensors(
    ckpt_path: str | os.PathLike[str], out_path: str | os.PathLike[str], config: MotionConfig | None = None
) -> Path:
    """Write the EMA-applied weights of an official checkpoint as safetensors, with the config as metadata.

    A one-time step: the result loads with ``load_motion_generator(out_path)``, no unpickling, no config needed.
    """
    ckpt_path = Path(ckpt_path).expanduser()
    model = load_motion_generator(ckpt_path, config)
    metadata = {"format": METADATA_FORMAT, "config": model.config.to_json(), "source": ckpt_path.name}
    out = save_safetensors(model.state_dict(), out_path, metadata=metadata)
    log.info("motion checkpoint converted", extra={"source": str(ckpt_path), "out": str(out)})
    return out
