"""Loading motion checkpoints: EMA mapping, strictness, clear errors on real bad files, safetensors round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from avatar.motion.checkpoints import (
    convert_to_safetensors,
    infer_motion_config,
    load_motion_generator,
    random_motion_generator,
)
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.weights.reader import CheckpointError, read_weights, save_safetensors
from config.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def golden_ckpt() -> Path:
    """The parity set's tiny motion checkpoint in the official format (a missing set fails, never skips)."""
    root = Path(get_settings().parity_dir).expanduser()
    path = (root if root.is_absolute() else REPO_ROOT / root) / "motion_ckpt.ckpt"
    if not path.is_file():
        pytest.fail(f"{path} not found: set DYSTREAM_PARITY_DIR to the parity golden set")
    return path


@pytest.fixture(scope="module")
def golden_config() -> MotionConfig:
    import json

    root = Path(get_settings().parity_dir).expanduser()
    path = (root if root.is_absolute() else REPO_ROOT / root) / "config.json"
    if not path.is_file():
        pytest.fail(f"{path} not found: set DYSTREAM_PARITY_DIR to the parity golden set")
    return MotionConfig.from_parity(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def golden_raw(golden_ckpt: Path) -> dict:
    return read_weights(golden_ckpt)


@pytest.fixture(scope="module")
def reference(golden_ckpt: Path, golden_config: MotionConfig) -> MotionGenerator:
    return load_motion_generator(golden_ckpt, golden_config)


def save_ckpt(ckpt: dict, path: Path) -> Path:
    torch.save(ckpt, path)
    return path


def copy_ckpt(raw: dict) -> dict:
    return {
        **raw,
        "state_dict": dict(raw["state_dict"]),
        "ema_state": {**raw["ema_state"], "shadow_params": list(raw["ema_state"]["shadow_params"])},
    }


def param_index(raw: dict, key: str) -> int:
    params = [k for k in raw["state_dict"] if not k.endswith(("_angles", ".pe.pe"))]
    return params.index(key)


def test_loads_ema_weights_not_raw_state_dict(golden_raw: dict, reference: MotionGenerator) -> None:
    shadow = golden_raw["ema_state"]["shadow_params"]
    names = [n for n, _ in reference.named_parameters()]
    assert len(shadow) == len(names)
    for name, value in zip(names, shadow, strict=True):
        assert torch.equal(reference.state_dict()[name], value), name
    raw = golden_raw["state_dict"]["model.face_embed.weight"]
    assert not torch.equal(reference.face_embed.weight, raw), "the state_dict weights are EMA + noise in this set"
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())


def test_without_ema_state_the_raw_weights_are_used(
    tmp_path: Path, golden_raw: dict, golden_config: MotionConfig
) -> None:
    ckpt = {"state_dict": golden_raw["state_dict"]}
    model = load_motion_generator(save_ckpt(ckpt, tmp_path / "raw.ckpt"), golden_config)
    assert torch.equal(model.face_embed.weight, golden_raw["state_dict"]["model.face_embed.weight"])


def test_git_lfs_pointer_is_named(tmp_path: Path, golden_config: MotionConfig) -> None:
    pointer = tmp_path / "last.ckpt"
    pointer.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 6980000000\n"
    )
    with pytest.raises(CheckpointError, match="Git-LFS pointer") as err:
        load_motion_generator(pointer, golden_config)
    assert str(pointer) in str(err.value)


def test_truncated_checkpoint_is_named(tmp_path: Path, golden_ckpt: Path, golden_config: MotionConfig) -> None:
    data = golden_ckpt.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|not a PyTorch checkpoint") as err:
        load_motion_generator(cut, golden_config)
    assert str(cut) in str(err.value)


def test_wrong_shape_key_is_named(tmp_path: Path, golden_raw: dict, golden_config: MotionConfig) -> None:
    ckpt = copy_ckpt(golden_raw)
    key = "model.output_proj.bias"
    bad = torch.zeros(ckpt["state_dict"][key].shape[0] + 1)
    ckpt["state_dict"][key] = bad
    ckpt["ema_state"]["shadow_params"][param_index(golden_raw, key)] = bad
    path = save_ckpt(ckpt, tmp_path / "shape.ckpt")
    with pytest.raises(CheckpointError, match=r"'output_proj\.bias' has shape") as err:
        load_motion_generator(path, golden_config)
    assert str(path) in str(err.value)


def test_ema_list_out_of_order_is_named(tmp_path: Path, golden_raw: dict, golden_config: MotionConfig) -> None:
    ckpt = copy_ckpt(golden_raw)
    shadow = ckpt["ema_state"]["shadow_params"]
    shadow[0], shadow[1] = shadow[1], shadow[0]
    path = save_ckpt(ckpt, tmp_path / "ema.ckpt")
    with pytest.raises(CheckpointError, match="EMA parameter for .* has shape"):
        load_motion_generator(path, golden_config)


def test_missing_key_is_named(tmp_path: Path, golden_raw: dict, golden_config: MotionConfig) -> None:
    ckpt = copy_ckpt(golden_raw)
    del ckpt["state_dict"]["model.blocks.0.self_attn_pos.pe.pe"]
    path = save_ckpt(ckpt, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"lacks 1 key\(s\), first 'blocks\.0\.self_attn_pos\.pe\.pe'") as err:
        load_motion_generator(path, golden_config)
    assert str(path) in str(err.value)


def test_missing_parameter_breaks_the_ema_count(tmp_path: Path, golden_raw: dict, golden_config: MotionConfig) -> None:
    ckpt = copy_ckpt(golden_raw)
    del ckpt["state_dict"]["model.output_proj.bias"]
    path = save_ckpt(ckpt, tmp_path / "missing_param.ckpt")
    with pytest.raises(CheckpointError, match="shadow parameters but the state_dict has"):
        load_motion_generator(path, golden_config)


def test_unexpected_key_is_named(tmp_path: Path, golden_raw: dict, golden_config: MotionConfig) -> None:
    ckpt = {"state_dict": {**golden_raw["state_dict"], "model.extra_head.weight": torch.zeros(2)}}
    path = save_ckpt(ckpt, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match="unexpected key.*'extra_head.weight'"):
        load_motion_generator(path, golden_config)


def test_wrong_model_size_is_a_clear_error(golden_ckpt: Path, golden_config: MotionConfig) -> None:
    with pytest.raises(CheckpointError, match="expects"):
        load_motion_generator(golden_ckpt, MotionConfig.from_dict({**golden_config.to_dict(), "hidden_size": 128}))


def test_old_weight_norm_names_are_accepted(
    tmp_path: Path, golden_raw: dict, golden_config: MotionConfig, reference: MotionGenerator
) -> None:
    renamed = {}
    for key, value in golden_raw["state_dict"].items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        renamed[key.replace("parametrizations.weight.original1", "weight_v")] = value
    assert any(k.endswith("weight_g") for k in renamed)
    path = save_ckpt({**golden_raw, "state_dict": renamed}, tmp_path / "old.ckpt")
    model = load_motion_generator(path, golden_config)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_safetensors_round_trip(tmp_path: Path, golden_ckpt: Path, reference: MotionGenerator) -> None:
    out = tmp_path / "motion.safetensors"
    ckpt_copy = tmp_path / "motion_ckpt.ckpt"
    ckpt_copy.write_bytes(golden_ckpt.read_bytes())
    written = convert_to_safetensors(ckpt_copy, out, config=reference.config)
    assert written == out and out.is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    loaded = load_motion_generator(out)  # config from the file's metadata
    assert loaded.config == reference.config
    assert list(loaded.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_random_model_in_official_format_loads(tmp_path: Path) -> None:
    config = MotionConfig.tiny()
    model = random_motion_generator(config, seed=3)
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    shadow = [p.detach().clone() + 1.0 for p in model.parameters()]
    ckpt = {"state_dict": state, "ema_state": {"decay": 0.999, "num_updates": 1, "shadow_params": shadow}}
    path = save_ckpt(ckpt, tmp_path / "tiny.ckpt")
    loaded = load_motion_generator(path, config)
    for (name, param), ema in zip(loaded.named_parameters(), shadow, strict=True):
        assert torch.equal(param, ema), name
    assert torch.equal(loaded.blocks[0].self_attn_pos.pe.pe, model.blocks[0].self_attn_pos.pe.pe)


def test_random_model_is_seeded_and_keeps_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    a = random_motion_generator(MotionConfig.tiny(), seed=1)
    b = random_motion_generator(MotionConfig.tiny(), seed=1)
    c = random_motion_generator(MotionConfig.tiny(), seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.face_embed.weight, b.face_embed.weight)
    assert not torch.equal(a.face_embed.weight, c.face_embed.weight)


def test_official_size_config_is_inferred_from_shapes() -> None:
    with torch.device("meta"):
        model = MotionGenerator(MotionConfig())
    inferred = infer_motion_config(model.state_dict())
    expected = MotionConfig()
    for name in ("audio_dim", "hidden_size", "num_layers", "num_heads", "mlp_ratio", "max_seq_len", "wav2vec_layers"):
        assert getattr(inferred, name) == getattr(expected, name), name
    w2v = {k: v for k, v in inferred.wav2vec2.items() if k != "num_hidden_layers"}
    assert w2v == {k: v for k, v in expected.wav2vec2.items() if k != "num_hidden_layers"}


def test_head_counts_of_odd_widths_are_not_guessed() -> None:
    with torch.device("meta"):
        state = MotionGenerator(MotionConfig.tiny()).state_dict()  # wav2vec2 width 32
    with pytest.raises(CheckpointError, match="wav2vec2 head count of width 32"):
        infer_motion_config(state)
    inferred = infer_motion_config(state, num_heads=4, wav2vec_heads=2)
    assert inferred.num_heads == 4 and inferred.wav2vec2["num_attention_heads"] == 2


def test_truncated_safetensors_is_named(tmp_path: Path, golden_config: MotionConfig) -> None:
    out = tmp_path / "motion.safetensors"
    save_safetensors(random_motion_generator(golden_config, seed=0).state_dict(), out)
    out.write_bytes(out.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors") as err:
        load_motion_generator(out, golden_config)
    assert str(out) in str(err.value)


def test_unknown_dtype_is_rejected(golden_ckpt: Path, golden_config: MotionConfig) -> None:
    with pytest.raises(CheckpointError, match="unknown dtype"):
        load_motion_generator(golden_ckpt, golden_config, dtype="float8")


def test_directory_and_missing_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_motion_generator(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="directory"):
        load_motion_generator(tmp_path)
    assert not os.listdir(tmp_path)
