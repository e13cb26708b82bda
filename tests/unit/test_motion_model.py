"""The motion transformer and MotionConfig: what each CFG branch sees, causality, windows, shape errors."""

from __future__ import annotations

import pytest
import torch

from avatar.errors import InputError
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.sampling.cfg import BRANCHES_5, branch_gates


@pytest.fixture(scope="module")
def tiny_model():
    return random_motion_generator(MotionConfig.tiny(), seed=0)


def window(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    past = torch.randn(c.context, c.face_dim, generator=g) * 0.35
    feat_self = torch.randn(c.context, c.audio_dim, generator=g)
    feat_other = torch.randn(c.context, c.audio_dim, generator=g)
    anchor = torch.randn(1, c.face_dim, generator=g) * 0.35
    return past, feat_self, feat_other, anchor


@torch.inference_mode()
def test_each_branch_sees_only_its_conditions(tiny_model) -> None:
    past, fs, fo, anchor = window(tiny_model)
    gate = branch_gates(BRANCHES_5).anchor

    def cn(feat_self, feat_other, anchor_latent):
        return tiny_model.condition(past, tiny_model.fuse(feat_self, feat_other), anchor_latent, gate)

    base = cn(fs, fo, anchor)
    other_anchor = cn(fs, fo, anchor + 1)
    other_self = cn(fs + 1, fo, anchor)
    other_listener = cn(fs, fo + 1, anchor)
    # rows: uncond, anchor, audio_self, audio_other, all
    assert torch.equal(base[[0, 2, 3]], other_anchor[[0, 2, 3]])
    assert not torch.allclose(base[[1, 4]], other_anchor[[1, 4]])
    assert torch.equal(base[[0, 1, 3]], other_self[[0, 1, 3]])
    assert not torch.allclose(base[[2, 4]], other_self[[2, 4]])
    assert torch.equal(base[[0, 1, 2]], other_listener[[0, 1, 2]])
    assert not torch.allclose(base[[3, 4]], other_listener[[3, 4]])


@torch.inference_mode()
def test_history_matters_and_attention_is_causal(tiny_model) -> None:
    past, fs, fo, anchor = window(tiny_model)
    gate = branch_gates(BRANCHES_5).anchor
    fused = tiny_model.fuse(fs, fo)
    base = tiny_model.condition(past, fused, anchor, gate)
    older = past.clone()
    older[0] += 1.0  # the oldest token is seen by the last one
    assert not torch.allclose(base, tiny_model.condition(older, fused, anchor, gate))
    # earlier tokens ignore later ones: a block on the first 10 tokens gives the same first 10 outputs
    x = tiny_model.face_embed(past)[None].expand(5, -1, -1)
    anchor_hidden = tiny_model.anchor_embed(anchor)[None] * gate[:, None, None]
    block = tiny_model.blocks[0]
    full = block(x, fused, anchor_hidden)
    prefix = block(x[:, :10], fused[:, :10], anchor_hidden)
    torch.testing.assert_close(full[:, :10], prefix, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_condition_shape_errors(tiny_model) -> None:
    past, fs, fo, anchor = window(tiny_model)
    fused = tiny_model.fuse(fs, fo)
    gate = branch_gates(BRANCHES_5).anchor
    with pytest.raises(InputError, match="past_motion must be"):
        tiny_model.condition(past[:-1], fused, anchor, gate)
    with pytest.raises(InputError, match="fused audio must be"):
        tiny_model.condition(past, fused[:, :-1], anchor, gate)
    with pytest.raises(InputError, match="anchor must be"):
        tiny_model.condition(past, fused, anchor[0], gate)
    with pytest.raises(InputError, match="anchor_gate must be"):
        tiny_model.condition(past, fused, anchor, gate[:4])


def test_config_round_trip_and_validation() -> None:
    tiny = MotionConfig.tiny()
    assert MotionConfig.from_dict(tiny.to_dict()) == tiny
    assert hash(MotionConfig.from_dict(tiny.to_dict())) == hash(tiny)
    assert MotionConfig().context == 94 and MotionConfig().mlp_hidden == 3072
    assert tiny.wav2vec2_config().num_hidden_layers == tiny.wav2vec_layers
    with pytest.raises(InputError, match="multiple of num_heads"):
        MotionConfig.from_dict({**tiny.to_dict(), "num_heads": 5})
    with pytest.raises(InputError, match="audio_dim must equal"):
        MotionConfig.from_dict({**tiny.to_dict(), "audio_dim": 48})
    with pytest.raises(InputError, match="unknown MotionConfig fields"):
        MotionConfig.from_dict({**tiny.to_dict(), "depth": 3})
    with pytest.raises(InputError, match="config.json"):
        MotionConfig.from_parity({"motion": {}})
