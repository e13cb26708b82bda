"""Loading renderer weights from official-format .ckpt files and converted .safetensors (tiny renderer files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avatar.renderer import RendererConfig, convert_renderer_to_safetensors, load_renderer, random_renderer
from avatar.weights.reader import CheckpointError

TINY = RendererConfig.tiny()
JUNK = {"discriminator.convs.0.0.weight": torch.zeros(4, 3, 1, 1), "criterion_vgg.vgg_net.lin0.weight": torch.ones(2)}


def _save_official_format(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save({"state_dict": {**state, **JUNK}, "epoch": 0, "global_step": 312000}, path)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = random_renderer(TINY, seed=11).state_dict()
    return _save_official_format(state, tmp_path_factory.mktemp("renderer") / "tiny.ckpt")


def _render(renderer: torch.nn.Module) -> torch.Tensor:
    image = torch.linspace(-1, 1, 3 * 128 * 128).view(1, 3, 128, 128)
    m0, f_app = renderer.encode_portrait(image)
    return renderer.render(m0, m0 * 0.5, f_app)


def test_official_format_loads_and_renders_like_the_original(tiny_ckpt: Path) -> None:
    loaded = load_renderer(tiny_ckpt, TINY)
    original = random_renderer(TINY, seed=11)
    assert not loaded.training and all(not p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(_render(loaded), _render(original), atol=0, rtol=0)


def test_safetensors_conversion_round_trips(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = convert_renderer_to_safetensors(tiny_ckpt, tmp_path / "tiny.safetensors", TINY)
    assert out.is_file() and not list(tmp_path.glob("*.tmp"))
    from safetensors.torch import load_file

    stored = load_file(str(out))
    assert not any(k.startswith(("discriminator.", "criterion_vgg.")) for k in stored)
    a, b = load_renderer(tiny_ckpt, TINY).state_dict(), load_renderer(out, TINY).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_dtype_and_counters(tiny_ckpt: Path) -> None:
    renderer = load_renderer(tiny_ckpt, TINY, dtype=torch.bfloat16)
    assert renderer.dtype == torch.bfloat16
    assert renderer.face_encoder.first.norm.num_batches_tracked.dtype == torch.int64
    frames = _render(renderer)
    assert frames.dtype == torch.bfloat16 and torch.isfinite(frames.float()).all()


def test_missing_key_is_named_with_the_file(tiny_ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    del state["face_generator.occlusion.bias"]
    path = _save_official_format(state, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"face_generator\.occlusion\.bias") as err:
        load_renderer(path, TINY)
    assert str(path) in str(err.value)


def test_misshaped_key_is_named_with_both_shapes(tiny_ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    state["motion_encoder.convs.0.1.bias"] = torch.zeros(16)
    path = _save_official_format(state, tmp_path / "misshaped.ckpt")
    with pytest.raises(CheckpointError, match=r"motion_encoder\.convs\.0\.1\.bias has shape \(16,\)") as err:
        load_renderer(path, TINY)
    assert "(1, 16, 1, 1)" in str(err.value) and str(path) in str(err.value)


def test_tiny_file_with_the_official_config_points_at_the_config(tiny_ckpt: Path) -> None:
    with pytest.raises(CheckpointError, match="RendererConfig"):
        load_renderer(tiny_ckpt)


def test_unusable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_renderer(tmp_path / "absent.ckpt", TINY)
    motion_like = _save_official_format({"model.face_embed.weight": torch.zeros(2, 2)}, tmp_path / "motion.ckpt")
    with pytest.raises(CheckpointError, match="lacks"):
        load_renderer(motion_like, TINY)
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        convert_renderer_to_safetensors(motion_like, tmp_path / "out.bin", TINY)


def test_dtype_by_name_and_unknown_dtype(tiny_ckpt: Path) -> None:
    assert load_renderer(tiny_ckpt, TINY, dtype="float16").dtype == torch.float16
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        load_renderer(tiny_ckpt, TINY, dtype="int8")


def test_extra_keys_inside_renderer_modules_are_ignored(tiny_ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    state["face_generator.identity_grid"] = torch.zeros(1, 16, 16, 16, 3)
    path = _save_official_format(state, tmp_path / "extra.ckpt")
    loaded = load_renderer(path, TINY)
    assert "face_generator.identity_grid" not in loaded.state_dict()
