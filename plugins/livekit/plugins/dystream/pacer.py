"""``FrameSlots``: which picture the avatar's video track shows, on the clock of its audio.

Every 40 ms tick of the engine's timeline puts its audio into the audio source at once; that audio leaves at a
known time, and the tick's picture is due then, plus ``video_delay``: its *slot*. Pictures come from the engine
whenever they are rendered. At each slot the video shows the tick's picture if it is there; otherwise it repeats
the last picture, so the track keeps its frame rate whatever the engine does. A picture that arrives after its slot
is dropped, never shown late: the video follows the audio, never the other way round. An interruption drops the
queued audio and with it the slots it had (``clear``).

No clock of its own: the runner asks ``next_at`` when to capture next and ``take`` what to capture then (tests drive
it with made-up times).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

Picture = TypeVar("Picture")


class FrameSlots(Generic[Picture]):
    def __init__(self, period_s: float) -> None:
        self.period = period_s
        self._slots: deque[tuple[float, int]] = deque()  # (show at, tick), in tick order
        self._pictures: dict[int, Picture] = {}
        self._last: Picture | None = None
        self._shown = -1  # newest tick whose slot has come
        self.shown = 0  # slots that showed their own picture
        self.repeated = 0  # slots that repeated the last picture
        self.dropped = 0  # pictures that came after their slot (or whose slot a newer one overtook)

    def add_slot(self, tick: int, at: float) -> None:
        """Tick ``tick``'s picture is due at ``at``."""
        self._slots.append((at, tick))

    def add_picture(self, tick: int, picture: Picture) -> None:
        if tick <= self._shown:
            self.dropped += 1  # too late: its audio has been heard
            return
        self._pictures[tick] = picture

    def clear(self) -> None:
        """The audio of every pending slot was dropped (interruption): those slots will not come."""
        self._slots.clear()

    def next_at(self, last: float | None, now: float) -> float:
        """When to capture next, given the last capture. Slots come one period apart; after a jump in the audio
        (a segment start, an interruption) the video keeps its period until the next slot is within one and a half
        periods, then meets it in one step of between half a period and one and a half: a single longer or shorter
        frame interval, never a gap or a burst."""
        if last is None:
            return self._slots[0][0] if self._slots else now + self.period
        if not self._slots or self._slots[0][0] > last + 1.5 * self.period:
            return last + self.period
        return max(self._slots[0][0], last + 0.5 * self.period)

    def take(self, at: float) -> Picture | None:
        """The picture to capture at ``at``: the newest due tick's, else the last one again (None before any)."""
        due = None
        while self._slots and self._slots[0][0] <= at + 1e-3:
            due = self._slots.popleft()[1]
        if due is not None:
            self._shown = max(self._shown, due)
            picture = self._pictures.pop(due, None)
            stale = [tick for tick in self._pictures if tick < due]
            for tick in stale:
                del self._pictures[tick]
            self.dropped += len(stale)
            if picture is not None:
                self._last = picture
                self.shown += 1
                return picture
        if self._last is not None:
            self.repeated += 1
        return self._last
