"""Test audio: the user's utterances and the agent's reply clips with beeps, as 16 kHz mono int16.

A reply clip is speech over a faint continuous hum (so "the avatar stopped talking" is plain silence at the
receiver), with 1 kHz beeps laid over it at 40 ms frame boundaries: the engine takes each frame's audio from the
segment in 640-sample steps, so a frame-aligned beep fills whole frames and the diagnostic overlay flashes exactly
on them.
"""

from __future__ import annotations

import os
import tempfile
import wave
from pathlib import Path

import numpy as np
from livekit.plugins.dystream.diagnostics import BEEP_HZ

SAMPLE_RATE = 16000
FRAME_SAMPLES = 640  # 40 ms at 25 fps
BEEP_LEVEL = 0.5
HUM_HZ = 150.0
HUM_LEVEL = 0.03


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV file as mono int16 at 16 kHz (the samples are 16 kHz; others are refused)."""
    with wave.open(str(path)) as wav:
        if wav.getsampwidth() != 2 or wav.getframerate() != SAMPLE_RATE:
            raise ValueError(f"{path}: expected 16-bit PCM at {SAMPLE_RATE} Hz")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, wav.getnchannels())
    return pcm[:, 0].copy()


def write_wav(path: Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono int16 ``pcm`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".wav.tmp")
    os.close(fd)
    try:
        with wave.open(tmp, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def tone(freq: float, seconds: float, level: float) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return level * np.sin(2 * np.pi * freq * t)


def reply_clip(speech: np.ndarray, *, seconds: float, beep_every_s: float = 0.6, beep_s: float = 0.2) -> np.ndarray:
    """Speech + hum with a beep every ``beep_every_s`` (first at 0.4 s), all beeps on frame boundaries."""
    n = int(round(seconds * SAMPLE_RATE)) // FRAME_SAMPLES * FRAME_SAMPLES
    voice = np.resize(speech.astype(np.float64) / 32768.0, n) * 0.5
    out = voice + tone(HUM_HZ, n / SAMPLE_RATE, HUM_LEVEL)
    beep_len = int(round(beep_s * SAMPLE_RATE / FRAME_SAMPLES)) * FRAME_SAMPLES
    for start_s in beep_starts(n / SAMPLE_RATE, beep_every_s=beep_every_s, beep_s=beep_s):
        start = int(round(start_s * SAMPLE_RATE))
        out[start : start + beep_len] = tone(BEEP_HZ, beep_len / SAMPLE_RATE, BEEP_LEVEL)
    return np.clip(out * 32767, -32768, 32767).astype(np.int16)


def beep_starts(seconds: float, *, beep_every_s: float = 0.6, beep_s: float = 0.2) -> list[float]:
    """Where :func:`reply_clip` puts its beeps (seconds from the clip start, on 40 ms boundaries)."""
    frame_s = FRAME_SAMPLES / SAMPLE_RATE
    starts, t = [], 0.4
    while t + beep_s + 0.2 <= seconds:
        starts.append(round(t / frame_s) * frame_s)
        t += beep_every_s
    return starts


def _loud_windows(pcm: np.ndarray, window_s: float, level: float) -> tuple[int, np.ndarray]:
    """(window length, indices of the windows whose RMS exceeds ``level``, a fraction of full scale)."""
    win = int(window_s * SAMPLE_RATE)
    x = pcm[: len(pcm) // win * win].astype(np.float64).reshape(-1, win) / 32768.0
    loud = np.flatnonzero(np.sqrt((x * x).mean(axis=1)) > level)
    if loud.size == 0:
        raise ValueError("no speech in the utterance")
    return win, loud


def speech_onset(pcm: np.ndarray, *, window_s: float = 0.01, level: float = 0.02) -> int:
    """Index of the first sample of the first 10 ms window whose RMS exceeds ``level`` (fraction of full scale)."""
    win, loud = _loud_windows(pcm, window_s, level)
    return int(loud[0] * win)


def speech_end(pcm: np.ndarray, *, window_s: float = 0.01, level: float = 0.02) -> int:
    """Index just past the last 10 ms window whose RMS exceeds ``level``."""
    win, loud = _loud_windows(pcm, window_s, level)
    return int((loud[-1] + 1) * win)
