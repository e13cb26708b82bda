"""The diagnostic overlay: a patch that flashes on every frame whose audio carries a beep.

Broadcast A/V sync testers play a test signal with beeps and flashes and time both where they arrive. This module is
the avatar's half of that: with ``settings.avatar.diagnostic_overlay`` on, the generator passes each frame and its
40 ms of audio through :func:`flash_patch`, which paints a square in the top-left corner bright when that audio
carries a beep (a 1 kHz tone) and dark otherwise. A receiver reads the square back with :func:`read_patch` and
compares when the flashes and the beeps arrive.

A beep is found with a single-bin DFT at the beep frequency (what the Goertzel recursion computes): the frame carries
a beep when the tone is loud enough and holds at least half of the frame's energy, so speech and silence never flash.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BEEP_HZ = 1000.0
SAMPLE_RATE = 16000
MIN_TONE_LEVEL = 0.05  # tone amplitude, as a fraction of full scale
MIN_TONE_SHARE = 0.5  # the tone's share of the frame's energy
BRIGHT = 255
DARK = 0


@lru_cache(maxsize=16)
def _dft_row(n: int, freq: float, sample_rate: int) -> np.ndarray:
    t = np.arange(n) / sample_rate
    return np.exp(-2j * np.pi * freq * t)


def tone_level(audio: np.ndarray, *, freq: float = BEEP_HZ, sample_rate: int = SAMPLE_RATE) -> tuple[float, float]:
    """(amplitude of the tone as a fraction of full scale, the tone's share of the energy) in ``audio``.

    ``audio`` is mono int16, or float in [-1, 1].
    """
    x = np.asarray(audio).reshape(-1)
    if x.size == 0:
        return 0.0, 0.0
    x = x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)
    amplitude = 2.0 * abs(np.dot(x, _dft_row(x.size, freq, sample_rate))) / x.size
    energy = float(np.mean(x * x))
    share = (amplitude * amplitude / 2.0) / energy if energy > 0 else 0.0
    return float(amplitude), float(min(share, 1.0))


def has_beep(audio: np.ndarray, *, freq: float = BEEP_HZ, sample_rate: int = SAMPLE_RATE) -> bool:
    """True when ``audio`` carries a beep: a loud tone at ``freq`` holding at least half of its energy."""
    amplitude, share = tone_level(audio, freq=freq, sample_rate=sample_rate)
    return amplitude >= MIN_TONE_LEVEL and share >= MIN_TONE_SHARE


def patch_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the diagnostic square: a quarter of the shorter side, at least 8 px."""
    side = max(8, min(height, width) // 4)
    return 0, min(side, height), 0, min(side, width)


def flash_patch(rgb: np.ndarray, audio_int16: np.ndarray) -> np.ndarray:
    """``rgb`` [H, W, 3] uint8 with the square painted bright if ``audio_int16`` (the frame's 16 kHz audio) beeps.

    Returns a new array; the input is left untouched.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"flash_patch needs an [H, W, 3] uint8 frame, got {rgb.shape} {rgb.dtype}")
    out = rgb.copy()
    top, bottom, left, right = patch_box(*rgb.shape[:2])
    out[top:bottom, left:right] = BRIGHT if has_beep(audio_int16) else DARK
    return out


def read_patch(rgb: np.ndarray) -> float:
    """Mean brightness (0..255) of the diagnostic square in a received [H, W, 3] frame."""
    top, bottom, left, right = patch_box(*rgb.shape[:2])
    # stay clear of the edges, where video coding blurs the square into the picture
    inset_y, inset_x = (bottom - top) // 4, (right - left) // 4
    region = rgb[top + inset_y : bottom - inset_y, left + inset_x : right - inset_x]
    return float(region.mean())
