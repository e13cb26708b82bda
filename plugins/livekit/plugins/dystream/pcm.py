"""16 kHz mono int16 PCM: conversions between numpy arrays and livekit audio frames, and resampling to 16 kHz."""

from __future__ import annotations

import numpy as np
from livekit import rtc

SAMPLE_RATE = 16000


def as_int16(pcm: np.ndarray, what: str) -> np.ndarray:
    """A 1-D int16 copy of mono ``pcm``: int16 as is, floats in [-1, 1] scaled (and clipped)."""
    array = np.asarray(pcm)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected mono 1-D audio, got shape {array.shape}; downmix to one channel first")
    if array.dtype == np.int16:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, -1.0, 1.0) * 32767.0).astype(np.int16)
    raise ValueError(f"{what}: expected int16 or float audio, got {array.dtype}; convert to int16 PCM")


def frame_samples(frame: rtc.AudioFrame) -> np.ndarray:
    """The frame's samples as mono int16 (channels averaged)."""
    data = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels == 1:
        return data.copy()
    interleaved = data.reshape(-1, frame.num_channels).astype(np.int32)
    return interleaved.mean(axis=1).astype(np.int16)


def to_audio_frame(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> rtc.AudioFrame:
    """A mono livekit frame holding ``samples`` (int16)."""
    samples = as_int16(samples, "audio frame")
    return rtc.AudioFrame(samples.tobytes(), sample_rate, 1, len(samples))


class To16kMono:
    """Turns frames of any rate and channel count into 16 kHz mono int16 samples (a resampler per input rate)."""

    def __init__(self) -> None:
        self._resampler: rtc.AudioResampler | None = None
        self._input_rate = SAMPLE_RATE

    def push(self, frame: rtc.AudioFrame) -> np.ndarray:
        mono = frame_samples(frame)
        if frame.sample_rate != self._input_rate:
            tail = self.flush()
            if frame.sample_rate != SAMPLE_RATE:
                self._input_rate = frame.sample_rate
                self._resampler = rtc.AudioResampler(
                    input_rate=frame.sample_rate, output_rate=SAMPLE_RATE, num_channels=1
                )
            return np.concatenate([tail, self._convert(mono)])
        return self._convert(mono)

    def flush(self) -> np.ndarray:
        """The samples the resampler still holds; the next frame at 16 kHz passes straight through again."""
        if self._resampler is None:
            return np.zeros(0, np.int16)
        out = [frame_samples(f) for f in self._resampler.flush()]
        self._resampler = None
        self._input_rate = SAMPLE_RATE
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    def reset(self) -> None:
        """Forget buffered samples (interruption)."""
        self._resampler = None
        self._input_rate = SAMPLE_RATE

    def _convert(self, mono: np.ndarray) -> np.ndarray:
        if self._resampler is None:
            return mono
        frame = rtc.AudioFrame(mono.tobytes(), self._input_rate, 1, len(mono))
        out = [frame_samples(f) for f in self._resampler.push(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)
