"""A speech gate on one audio stream: VAD per window, reported to the state, audio handed on (zeros outside speech).

A window is handed on unchanged when gating is off, when the window itself is speech, or while the stream's
hysteresis still holds it on (the pauses inside an utterance, up to ``stop_ms``). Otherwise it is replaced by exact
zeros of the same length, so the model hears true silence rather than room noise. A window is classified before it
is handed on, so a gate adds at most one VAD window of delay (32 ms with silero, 20 ms with webrtc).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from .vad import VadWindow, WindowedVad

Report = Callable[[bool, float], bool]  # (window is speech, window duration ms) -> the stream is on


class SpeechGate:
    def __init__(self, vad: WindowedVad, report: Report, *, gate: bool) -> None:
        self.vad = vad
        self._report = report
        self.gate = gate
        self.windows = 0
        self.gated_windows = 0

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """The audio to hand on for the windows ``pcm`` completes, in order (the remainder waits for more)."""
        return [self._pass(window) for window in self.vad.push(pcm)]

    async def push_on(self, executor: Executor, pcm: np.ndarray) -> list[np.ndarray]:
        """``push``, with the VAD model run on ``executor`` (give it one thread: windows stay in order) so that
        the event loop only hands the result on. A chunk that completes no window is buffered without a hop."""
        if not self.vad.completes_window(len(pcm)):
            return self.push(pcm)
        windows = await asyncio.get_running_loop().run_in_executor(executor, self.vad.push, pcm)
        return [self._pass(window) for window in windows]

    def flush(self) -> list[np.ndarray]:
        """Classify and hand on the incomplete last window (end of a segment)."""
        return [self._pass(window) for window in self.vad.flush()]

    def reset(self) -> None:
        """Drop what is buffered (interruption, new speaker)."""
        self.vad.reset()

    def _pass(self, window: VadWindow) -> np.ndarray:
        active = self._report(window.speech, window.duration_ms)
        self.windows += 1
        if not self.gate or window.speech or active:
            return window.samples
        self.gated_windows += 1
        return np.zeros_like(window.samples)
