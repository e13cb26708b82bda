"""Which ticks get a latent of their own and a picture, on a rung that skips some (``Rung.motion_every``,
``Rung.render_every``; docs: README "Real time that holds").

A rung that renders every n-th tick shows each picture for n ticks. On a fixed cadence a sound would start up to
n - 1 ticks before the picture that shows it: the mouth would open up to 80 ms late at the lowest rung, differently
for every syllable. So the cadence follows the agent's voice. ``OnsetFinder`` marks the ticks where a sound starts
(a tick at least ``RISE`` times louder than the one before, and at least ``FLOOR`` loud), in the tick itself and in
the agent's speech queued behind it (``FORESIGHT``: further than the model's lookahead, as TTS delivers speech ahead
of time). ``Keyframes`` then:

- renders a tick where a sound starts, whatever the cadence;
- holds a picture that is due back for an onset it already sees coming, up to ``render_every`` ticks, so the onset's
  picture replaces it instead of adding one, and the render thread is free when the onset's latent comes: a picture
  rendered just before would hold it up, and on a slow machine make the onset's picture miss its slot;
- generates a latent for every picture, and otherwise every ``motion_every`` ticks;
- when the motion thread is behind (several ticks at once), works only on the newest tick, or on an onset among the
  last ``render_every`` ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.stream.ladder import Rung
from avatar.stream.queues import FRAME_SAMPLES

RISE = 2.0  # RMS ratio to the tick before (6 dB)
FLOOR = 0.02  # RMS, as a fraction of full scale
MIN_PART = FRAME_SAMPLES // 4  # the shortest piece of what is ahead judged on its own
FORESIGHT = 4 * FRAME_SAMPLES  # how far ahead onsets are looked for: past the slowest rung's cadence (3 ticks)


def loudness(pcm: np.ndarray) -> float:
    """RMS of float ``pcm`` (full scale 1.0)."""
    x = np.asarray(pcm, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def starts_sound(before: float, now: float) -> bool:
    return now >= FLOOR and now >= RISE * before


@dataclass(frozen=True)
class Onsets:
    now: bool  # a sound starts in this tick
    ahead: int | None  # ticks until the next onset seen ahead (1, 2, …), None when none is seen


class OnsetFinder:
    """Sound onsets in the agent's voice, one tick at a time (``step`` every tick, in order)."""

    def __init__(self) -> None:
        self._before = 0.0

    def step(self, audio: np.ndarray, queued: np.ndarray) -> Onsets:
        """The tick's own ``audio`` and what is ``queued`` to play after it."""
        level = loudness(audio)
        now, self._before = starts_sound(self._before, level), level
        for j, start in enumerate(range(0, len(queued) - MIN_PART + 1, FRAME_SAMPLES), start=1):
            part = loudness(queued[start : start + FRAME_SAMPLES])
            if starts_sound(level, part):
                return Onsets(now, j)
            level = part
        return Onsets(now, None)


@dataclass(frozen=True)
class Plan:
    generate: bool  # a latent of its own (else it is interpolated)
    render: bool  # a picture
    onset: bool  # a sound starts in this tick


class Keyframes:
    """The motion thread's choice, tick by tick (``plan`` for every tick, in order)."""

    def __init__(self) -> None:
        self.onsets = OnsetFinder()
        self.last_generated = -(10**9)
        self.last_rendered = -(10**9)

    def plan(self, index: int, rung: Rung, audio: np.ndarray, ahead: np.ndarray, *, behind: int = 0) -> Plan:
        """Tick ``index`` (its self audio and what is queued ahead of it), ``behind`` ticks older than the newest
        one waiting."""
        onsets = self.onsets.step(audio, ahead)
        every = rung.render_every
        since = index - self.last_rendered
        if behind and not (onsets.now and behind < every):
            return Plan(False, False, onsets.now)
        onset_soon = onsets.ahead is not None and onsets.ahead <= every and since < 2 * every
        render = onsets.now or (since >= every and not onset_soon)
        generate = render or (rung.motion_every < every and index - self.last_generated >= rung.motion_every)
        if generate:
            self.last_generated = index
        if render:
            self.last_rendered = index
        return Plan(generate, render, onsets.now)
