"""The diagnostic overlay flashes on beeps (a 1 kHz tone) and on nothing else, and the receiver reads it back."""

from __future__ import annotations

import numpy as np
import pytest
from livekit.plugins.dystream.diagnostics import BRIGHT, DARK, flash_patch, has_beep, patch_box, read_patch

from bench.harness.signals import read_wav, reply_clip
from config.settings import get_settings

SR = 16000


def tone(freq: float, n: int = 640, level: float = 0.5, start: int = 0) -> np.ndarray:
    t = np.arange(n) / SR
    x = np.zeros(n)
    x[start:] = level * np.sin(2 * np.pi * freq * t[start:])
    return (x * 32767).astype(np.int16)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    path = get_settings().samples_dir / "dyadic_self.wav"
    assert path.is_file(), f"sample {path} missing: set DYSTREAM_SAMPLES_DIR"
    return read_wav(path)


def test_a_full_frame_of_beep_is_detected_and_other_tones_are_not() -> None:
    assert has_beep(tone(1000.0))
    assert has_beep(tone(1000.0, level=0.06))
    assert not has_beep(tone(1000.0, level=0.02)), "too quiet to be a beep"
    assert not has_beep(tone(500.0)) and not has_beep(tone(2000.0)) and not has_beep(tone(1100.0))
    assert not has_beep(np.zeros(640, np.int16))


def test_a_frame_counts_as_beeping_when_the_beep_fills_most_of_it() -> None:
    assert has_beep(tone(1000.0, start=160)), "3/4 of the frame"
    assert not has_beep(tone(1000.0, start=480)), "1/4 of the frame"


def test_speech_never_flashes(speech: np.ndarray) -> None:
    frames = speech[: len(speech) // 640 * 640].reshape(-1, 640)
    flashes = sum(has_beep(frame) for frame in frames)
    assert flashes == 0, f"{flashes} of {len(frames)} speech frames taken for beeps"


def test_flashes_land_exactly_on_the_beep_frames_of_a_reply_clip(speech: np.ndarray) -> None:
    clip = reply_clip(speech, seconds=3.0)
    frames = clip.reshape(-1, 640)
    beeping = [i for i, frame in enumerate(frames) if has_beep(frame)]
    # beeps start at 0.4 s and 1.0 s ... (frames 10, 25, 40, ...), each 200 ms = 5 frames
    expected = [f for start in (10, 25, 40, 55) for f in range(start, start + 5) if f < len(frames) - 5]
    assert beeping == expected


def test_flash_patch_paints_the_square_and_read_patch_reads_it() -> None:
    rgb = np.full((128, 128, 3), 100, np.uint8)
    bright = flash_patch(rgb, tone(1000.0))
    dark = flash_patch(rgb, np.zeros(640, np.int16))
    top, bottom, left, right = patch_box(128, 128)
    assert (bottom - top, right - left) == (32, 32)
    assert (bright[top:bottom, left:right] == BRIGHT).all() and (dark[top:bottom, left:right] == DARK).all()
    assert (bright[bottom:, :] == 100).all(), "only the square changes"
    assert (rgb == 100).all(), "the input frame is not modified"
    assert read_patch(bright) == BRIGHT and read_patch(dark) == DARK


def test_flash_patch_rejects_a_frame_that_is_not_rgb_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        flash_patch(np.zeros((8, 8, 3), np.float32), np.zeros(640, np.int16))
