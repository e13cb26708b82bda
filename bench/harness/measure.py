"""What the user received, measured the way broadcast sync testers do: beeps in the audio, flashes in the video.

All times are wall-clock seconds (``time.time()``) of arrival at the user's client.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from livekit.plugins.dystream.diagnostics import BEEP_HZ

from .client import AttributeChange, VideoSample
from .signals import SAMPLE_RATE

WINDOW = 160  # 10 ms
HOP = 40  # 2.5 ms
FLASH_LEVEL = 128.0
SILENCE_RMS = 0.01  # of full scale; the reply clips never go below their hum (0.03)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def video_rate(video: Sequence[VideoSample], start: float, seconds: float) -> tuple[float, float]:
    """(frames per second, largest gap between frames in ms) over ``seconds`` from ``start``."""
    times = np.array([v.t for v in video if start <= v.t < start + seconds])
    if times.size < 2:
        return 0.0, float("inf")
    return times.size / seconds, float(np.diff(times).max() * 1000.0)


def max_gap_ms(video: Sequence[VideoSample], start: float, end: float) -> float:
    times = np.array([v.t for v in video if start <= v.t <= end])
    return float(np.diff(times).max() * 1000.0) if times.size >= 2 else float("inf")


def _tone_windows(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 10 ms window, hop 2.5 ms: (tone amplitude at BEEP_HZ, tone share of the energy)."""
    x = pcm.astype(np.float64) / 32768.0
    if x.size < WINDOW:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::HOP]
    row = np.exp(-2j * np.pi * BEEP_HZ * np.arange(WINDOW) / SAMPLE_RATE)
    amplitude = 2.0 * np.abs(frames @ row) / WINDOW
    energy = (frames * frames).mean(axis=1)
    share = np.where(energy > 0, amplitude**2 / 2.0 / np.maximum(energy, 1e-12), 0.0)
    return amplitude, share


def audio_beep_onsets(times: np.ndarray, pcm: np.ndarray, *, min_gap_s: float = 0.15) -> list[float]:
    """Arrival times of beep onsets in the received audio (the centre of the first window the beep dominates)."""
    amplitude, share = _tone_windows(pcm)
    beep = (amplitude > 0.1) & (share > 0.5)
    onsets: list[float] = []
    last_beep_t = -np.inf
    for i in np.flatnonzero(beep):
        t = float(times[i * HOP + WINDOW // 2])
        if t - last_beep_t > min_gap_s:
            # a real beep lasts: require the next 20 ms to be beep too
            if beep[i : i + 8].all():
                onsets.append(t)
            else:
                continue
        last_beep_t = t
    return onsets


def video_flash_onsets(video: Sequence[VideoSample], *, min_dark: int = 2) -> list[float]:
    """Arrival times of the first bright frame of every flash of the diagnostic square."""
    onsets, dark_run = [], 0
    for sample in video:
        if sample.patch >= FLASH_LEVEL:
            if dark_run >= min_dark:
                onsets.append(sample.t)
            dark_run = 0
        else:
            dark_run += 1
    return onsets


def av_pairs(audio_onsets: Sequence[float], video_onsets: Sequence[float], *, window_s: float = 0.3) -> list:
    """(flash time, video minus audio in ms) for each flash with a beep within ``window_s`` (positive: video late)."""
    if not audio_onsets:
        return []
    audio = np.asarray(audio_onsets)
    pairs = []
    for t in video_onsets:
        nearest = audio[np.argmin(np.abs(audio - t))]
        if abs(nearest - t) <= window_s:
            pairs.append((float(t), float((t - nearest) * 1000.0)))
    return pairs


def av_offsets_ms(audio_onsets: Sequence[float], video_onsets: Sequence[float], *, window_s: float = 0.3) -> list:
    """Video onset minus audio onset (ms, positive: video late) for each flash with a beep within ``window_s``."""
    return [offset for _, offset in av_pairs(audio_onsets, video_onsets, window_s=window_s)]


def speech_stop(times: np.ndarray, pcm: np.ndarray, after: float, *, hold_s: float = 0.3) -> float | None:
    """Arrival time of the end of the last sound before a silence of at least ``hold_s`` that ends after ``after``."""
    n = pcm.size // WINDOW * WINDOW
    if n == 0:
        return None
    x = pcm[:n].astype(np.float64).reshape(-1, WINDOW) / 32768.0
    loud = np.sqrt((x * x).mean(axis=1)) > SILENCE_RMS
    starts = times[:n:WINDOW]
    hold = int(hold_s * SAMPLE_RATE / WINDOW)
    for i in range(len(loud) - hold):
        if starts[i] < after - 0.5 or not loud[i] or loud[i + 1 : i + 1 + hold].any():
            continue
        end = float(starts[i] + WINDOW / SAMPLE_RATE)
        if end >= after - 0.2:
            return end
    return None


def loud_between(times: np.ndarray, pcm: np.ndarray, start: float, end: float) -> float:
    """RMS (fraction of full scale) of the received audio between two arrival times."""
    mask = (times >= start) & (times < end)
    if not mask.any():
        return 0.0
    x = pcm[mask].astype(np.float64) / 32768.0
    return float(np.sqrt((x * x).mean()))


def first_state_after(states: Sequence[AttributeChange], t: float, values: set[str]) -> float | None:
    for change in states:
        if change.t >= t and change.value in values:
            return change.t
    return None


def state_at(states: Sequence[AttributeChange], t: float) -> str | None:
    value = None
    for change in states:
        if change.t > t:
            break
        value = change.value
    return value


def beep_runs(onsets: Sequence[float], every_s: float, *, tolerance_s: float = 0.2) -> list[list[float]]:
    """Beep onsets grouped into the replies they came in: consecutive beeps ``every_s`` (± ``tolerance_s``) apart."""
    runs: list[list[float]] = []
    for t in onsets:
        if runs and abs(t - runs[-1][-1] - every_s) <= tolerance_s:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def stretch(run: Sequence[float], every_s: float) -> float:
    """How long a reply took to be heard over how long it is: the heard span of its beeps over their span in the
    clip (1.0: real time; above: the voice was slowed or had holes; below: squeezed)."""
    return (run[-1] - run[0]) / (every_s * (len(run) - 1))


def largest_hole_ms(times: np.ndarray, pcm: np.ndarray, start: float, end: float) -> float:
    """The longest silence between two sounds from ``start`` to ``end`` (under ``SILENCE_RMS`` in 5 ms windows, or
    samples that never arrived): the reply clips are never silent, so any is a hole in the avatar's voice. A silence
    the window ends in is not a hole: the voice stopped there (a barge-in cut the reply, mid-beep at times)."""
    mask = (times >= start) & (times < end)
    t, x = times[mask], pcm[mask].astype(np.float64) / 32768.0
    if t.size == 0:
        return (end - start) * 1000.0
    win = SAMPLE_RATE // 200
    n = x.size // win * win
    quiet = np.sqrt((x[:n].reshape(-1, win) ** 2).mean(axis=1)) < SILENCE_RMS
    longest = run = 0
    for q in quiet:
        if q:
            run += 1
        else:
            longest, run = max(longest, run), 0
    gaps = np.diff(t) - 1.0 / SAMPLE_RATE  # samples that never arrived
    return max(longest * win * 1000.0 / SAMPLE_RATE, float(gaps.max(initial=0.0)) * 1000.0)
