"""Voice activity detection on 16 kHz mono audio, in fixed windows: silero (default) or webrtcvad (light).

Both detectors take audio in chunks of any size, keep the remainder of an incomplete window, and return one
``VadWindow`` per complete window, in order, holding the window's own samples so a caller can pass them on.

- silero: the JIT model bundled with the ``silero-vad`` package (no download, no onnxruntime), 512-sample windows
  (32 ms), speech when its probability reaches ``settings.vad.threshold``. One model instance per detector: the
  model is stateful (it carries context across windows). About 0.15 ms per window on one CPU core.
- webrtc: ``webrtcvad`` with ``settings.vad.webrtc_aggressiveness``, 320-sample windows (20 ms), a yes/no answer.
"""

from __future__ import annotations

import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .pcm import SAMPLE_RATE, as_int16
from .settings import VadSettings

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class VadWindow:
    """One classified window of audio."""

    samples: np.ndarray  # int16, the window's real samples (a flushed last window may be shorter)
    probability: float
    speech: bool

    @property
    def duration_ms(self) -> float:
        return len(self.samples) * 1000.0 / SAMPLE_RATE


class WindowedVad(Protocol):
    """What ``SpeechGate`` uses of a detector: a ``VoiceActivityDetector``, or any object that windows and classifies
    audio the same way (e.g. a wrapper that measures or logs the detector it delegates to)."""

    def push(self, pcm: np.ndarray) -> list[VadWindow]: ...

    def completes_window(self, samples: int) -> bool: ...

    def flush(self) -> list[VadWindow]: ...

    def reset(self) -> None: ...


class VoiceActivityDetector(ABC):
    """Windows a stream and classifies each window as speech or not."""

    window_samples: int

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._pending = np.zeros(0, np.int16)

    def push(self, pcm: np.ndarray) -> list[VadWindow]:
        """Classify every window completed by ``pcm`` (int16, or float in [-1, 1])."""
        audio = np.concatenate([self._pending, as_int16(pcm, "VAD input")])
        count = len(audio) // self.window_samples
        windows = [self._window(audio[i * self.window_samples : (i + 1) * self.window_samples]) for i in range(count)]
        self._pending = audio[count * self.window_samples :]
        return windows

    def completes_window(self, samples: int) -> bool:
        """Whether pushing ``samples`` more samples completes at least one window."""
        return len(self._pending) + samples >= self.window_samples

    def flush(self) -> list[VadWindow]:
        """Classify the incomplete last window (zero-padded for the model; only its real samples are returned)."""
        if len(self._pending) == 0:
            return []
        samples = self._pending
        padded = np.zeros(self.window_samples, np.int16)
        padded[: len(samples)] = samples
        self._pending = np.zeros(0, np.int16)
        probability = self._probability(padded)
        return [VadWindow(samples, probability, probability >= self.threshold)]

    def reset(self) -> None:
        """Drop buffered audio and the model's context (a new, unrelated stretch of audio follows)."""
        self._pending = np.zeros(0, np.int16)

    def _window(self, samples: np.ndarray) -> VadWindow:
        probability = self._probability(samples)
        return VadWindow(samples, probability, probability >= self.threshold)

    @abstractmethod
    def _probability(self, window: np.ndarray) -> float:
        """Speech probability of exactly ``window_samples`` int16 samples."""


_silero_lock = threading.Lock()


def _load_silero_model() -> torch.jit.ScriptModule:
    """A fresh silero JIT model from the package's bundled file, leaving torch's thread count as it was.

    (Importing ``silero_vad`` calls ``torch.set_num_threads(1)`` for the whole process, which would slow the
    avatar model down; the previous value is restored.)
    """
    import torch

    with _silero_lock:
        threads = torch.get_num_threads()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                from silero_vad import load_silero_vad

                return load_silero_vad(onnx=False)
        finally:
            torch.set_num_threads(threads)


class SileroVad(VoiceActivityDetector):
    window_samples = 512

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        import torch

        self._torch = torch
        self._model = _load_silero_model()
        self._warm_up()

    def _warm_up(self) -> None:
        """TorchScript optimises the model on its first calls (about 100 ms): pay that here, at construction,
        rather than on the event loop in the middle of a call, where it would stall the published video."""
        silence = np.zeros(self.window_samples, dtype=np.int16)
        for _ in range(3):
            self._probability(silence)
        self._model.reset_states()

    def reset(self) -> None:
        super().reset()
        self._model.reset_states()

    def _probability(self, window: np.ndarray) -> float:
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.from_numpy(window.astype(np.float32) / 32768.0)
            return float(self._model(tensor, SAMPLE_RATE).item())


class WebRtcVad(VoiceActivityDetector):
    window_samples = 320

    def __init__(self, aggressiveness: int = 2) -> None:
        super().__init__(threshold=0.5)
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(
                f"webrtc VAD aggressiveness {aggressiveness!r} is out of range: use 0..3 "
                "(DYSTREAM_VAD__WEBRTC_AGGRESSIVENESS)"
            )
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)

    def _probability(self, window: np.ndarray) -> float:
        return 1.0 if self._vad.is_speech(window.tobytes(), SAMPLE_RATE) else 0.0


def create_vad(settings: VadSettings) -> VoiceActivityDetector:
    """The detector ``settings.backend`` names."""
    if settings.backend == "silero":
        return SileroVad(settings.threshold)
    if settings.backend == "webrtc":
        return WebRtcVad(settings.webrtc_aggressiveness)
    raise ValueError(f"unknown VAD backend {settings.backend!r}: use silero or webrtc (DYSTREAM_VAD__BACKEND)")
