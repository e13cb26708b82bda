"""The quality ladder of the streaming engine: how it keeps the 40 ms clock when the machine is too slow for full
quality (docs: README "Real time that holds").

A ``Rung`` says how much of DyStream's per-frame work runs (docs/architecture.md §1: audio tokens → transformer →
flow head with classifier-free guidance → renderer):

- ``steps``: flow-matching (Euler) steps of the sampler (the release samples with 5);
- ``guidance``: all guidance branches (``uncond``, ``audio_self``, ``audio_other``, ``all``), or the ``all`` branch
  alone (no guidance: a quarter of the transformer and flow-head batch);
- ``motion_every``: a latent is generated every n-th frame; the frames in between get latents interpolated between
  their generated neighbours (in the motion history too), their audio tokens are still computed;
- ``render_every``: every n-th frame is rendered; the publisher repeats the last picture in between.

The ladder goes from full quality (rung 0) down; ``QualityGovernor`` moves along it from measured busy time: each engine
thread (motion, render) reports how long it worked and how much of its due work it missed (ticks that came while the
motion thread was still busy with an earlier one, latents the render thread had no time to render); over a window of
about half a second, a thread that missed more than ``MISS_LIMIT`` of its work, or was busy more than ``SATURATED`` of
the wall time, cannot keep up, and the engine steps down (after ``DOWN_HOLD_S`` since the last change) to the first rung
that lightens that thread (a slow renderer gains nothing from fewer sampler steps). A thread that missed more than
``FAR_BEHIND`` of its work needs at least twice the time it has: it goes straight to the first rung that cuts its own
cadence (fewer sampler steps save a few percent), so a call that starts on a slow machine reaches a rung that holds
within a second instead of one rung every ``DOWN_HOLD_S``. A busy thread that still keeps up keeps its rung. A load
under ``LOW_LOAD`` with nothing missed for ``up_hold_s`` steps one rung up. A step up that has to be undone within
``RETRY_WINDOW_S`` doubles ``up_hold_s`` (up to ``MAX_UP_HOLD_S``), so a machine on the edge does not oscillate.
Settings: adaptation on or off, a floor (the lowest rung it may use), a pinned rung.

A call starts at the best rung its measured costs allow (``QualityGovernor.start_at``): the warm-up times each stage
once more (``StageCosts``), at the model threads' priority, and the governor begins at the first rung that leaves
each thread at most ``START_LOAD`` of the frame period. A call on a slow or busy machine then starts at a rung that
holds, instead of spending its first seconds above it with its pictures late, and climbs from there as the load
allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from avatar.errors import InputError

log = logging.getLogger(__name__)

MISS_LIMIT = 0.1
FAR_BEHIND = 0.5
SATURATED = 0.98
LOW_LOAD = 0.55
WINDOW_S = 0.5
DOWN_HOLD_S = 0.5
UP_HOLD_S = 3.0
MAX_UP_HOLD_S = 60.0
RETRY_WINDOW_S = 5.0
START_LOAD = 0.5  # the most of a frame period each thread may need at the rung a call starts at


@dataclass(frozen=True)
class Rung:
    name: str
    steps: int
    guidance: bool
    motion_every: int
    render_every: int


@dataclass(frozen=True)
class StageCosts:
    """Milliseconds one run of each stage takes, measured on this machine now (``avatar.stream.warm_up``)."""

    audio_ms: float  # the audio tokens of one frame (both streams' encoders)
    sampler_ms: dict[tuple[int, bool], float]  # transformer and flow head, per (steps, guidance)
    render_ms: float  # one picture (0 without a renderer)

    def loads(self, rung: Rung, period_ms: float) -> dict[str, float]:
        """The share of the frame period each thread needs at ``rung``."""
        motion_ms = self.audio_ms + self.sampler_ms[(rung.steps, rung.guidance)]
        return {
            "motion": motion_ms / (rung.motion_every * period_ms),
            "render": self.render_ms / (rung.render_every * period_ms),
        }


def ladder(full_steps: int) -> tuple[Rung, ...]:
    """The rungs, best first; rung 0 samples with the configured ``full_steps`` (the release's 5)."""
    reduced = min(full_steps, 3)
    rungs = (
        Rung("full", full_steps, True, 1, 1),
        Rung("steps-3", reduced, True, 1, 1),
        Rung("no-guidance", reduced, False, 1, 1),
        Rung("half-render", reduced, False, 1, 2),
        Rung("half-motion", reduced, False, 2, 2),
        Rung("third", min(full_steps, 2), False, 3, 3),
    )
    return rungs


def rung_names() -> tuple[str, ...]:
    return tuple(r.name for r in ladder(5))


def rung_index(name: str) -> int:
    names = rung_names()
    if name not in names:
        raise InputError(f"unknown quality rung {name!r}: use one of {', '.join(names)}")
    return names.index(name)


class QualityGovernor:
    """Picks the rung the engine runs at. The motion thread calls ``rung`` and ``update``; both threads ``report``."""

    def __init__(
        self,
        rungs: tuple[Rung, ...],
        *,
        adaptive: bool = True,
        floor: int | None = None,
        pinned: int | None = None,
        now: Callable[[], float] = time.perf_counter,
        on_change: Callable[[Rung, Rung, dict[str, float]], None] | None = None,
    ) -> None:
        self.rungs = rungs
        last = len(rungs) - 1
        self.floor = last if floor is None else floor
        if not 0 <= self.floor <= last or (pinned is not None and not 0 <= pinned <= last):
            raise InputError(f"quality rung out of range: floor {floor}, pinned {pinned} (0–{last})")
        self.adaptive = adaptive and pinned is None
        self.index = pinned if pinned is not None else 0
        self._now = now
        self._on_change = on_change
        self._lock = threading.Lock()
        self._busy_s = {"motion": 0.0, "render": 0.0}  # per thread, over the current window
        self._due = {"motion": 0.0, "render": 0.0}
        self._missed = {"motion": 0.0, "render": 0.0}
        self._window_start = now()
        self._last_change = -1e9
        self._last_up = -1e9
        self._calm_since: float | None = None
        self.up_hold_s = UP_HOLD_S
        self.changes = 0
        self.last_load: dict[str, float] = {"motion": 0.0, "render": 0.0}

    @property
    def rung(self) -> Rung:
        return self.rungs[self.index]

    def start_at(self, costs: StageCosts, period_ms: float) -> Rung:
        """Begin at the first rung (not past the floor) where each thread needs at most ``START_LOAD`` of the frame
        period by ``costs``. Without adaptation the configured rung stays."""
        if not self.adaptive:
            return self.rung
        fits = (i for i in range(self.floor + 1) if max(costs.loads(self.rungs[i], period_ms).values()) <= START_LOAD)
        index = next(fits, self.floor)
        if index != self.index:
            self._move(index, self._now(), costs.loads(self.rungs[index], period_ms))
        return self.rung

    def report(self, thread: str, busy_s: float, *, due: float = 0.0, missed: float = 0.0) -> None:
        """``thread`` ("motion" or "render") worked ``busy_s`` seconds, had ``due`` pieces of work and missed
        ``missed`` of them."""
        with self._lock:
            self._busy_s[thread] += busy_s
            self._due[thread] += due
            self._missed[thread] += missed

    def update(self) -> Rung:
        """Close the window when it is due; step down or up from its loads. Returns the rung to use now."""
        now = self._now()
        elapsed = now - self._window_start
        if elapsed < WINDOW_S:
            return self.rung
        with self._lock:
            load = {name: busy / elapsed for name, busy in self._busy_s.items()}
            misses = {name: self._missed[name] / max(self._due[name], 1.0) for name in self._due}
            self._busy_s, self._due, self._missed = ({name: 0.0 for name in load} for _ in range(3))
        self._window_start = now
        self.last_load = load
        if not self.adaptive:
            return self.rung
        behind = [name for name in load if misses[name] > MISS_LIMIT or load[name] > SATURATED]
        if behind:
            self._calm_since = None
            thread = max(behind, key=lambda name: (misses[name], load[name]))
            target = self._relief(thread, far=misses[thread] > FAR_BEHIND)
            if target is not None and now - self._last_change >= DOWN_HOLD_S:
                if now - self._last_up < RETRY_WINDOW_S:  # the last step up did not hold: wait longer next time
                    self.up_hold_s = min(2 * self.up_hold_s, MAX_UP_HOLD_S)
                self._move(target, now, load)
        elif max(load.values()) < LOW_LOAD and not any(misses.values()) and self.index > 0:
            self._calm_since = now if self._calm_since is None else self._calm_since
            if now - self._calm_since >= self.up_hold_s and now - self._last_change >= self.up_hold_s:
                self._last_up = now
                self._calm_since = None
                self._move(self.index - 1, now, load)
        else:
            self._calm_since = None
        return self.rung

    def _relief(self, thread: str, *, far: bool) -> int | None:
        """The next rung down (not past the floor) that lightens ``thread``: any rung lightens the motion thread;
        only one that renders fewer frames lightens the render thread. ``far`` behind, the motion thread goes to
        the first rung that generates fewer latents (or the floor)."""
        below = range(self.index + 1, self.floor + 1)
        if not below:
            return None
        if thread == "render":
            return next((i for i in below if self.rungs[i].render_every > self.rung.render_every), None)
        if far:
            return next((i for i in below if self.rungs[i].motion_every > self.rung.motion_every), self.floor)
        return below[0]

    def _move(self, index: int, now: float, load: dict[str, float]) -> None:
        before, self.index = self.rung, index
        self._last_change = now
        self.changes += 1
        rounded = {name: round(value, 2) for name, value in load.items()}
        log.info("quality rung changed", extra={"rung": self.rung.name, "previous": before.name, "load": rounded})
        if self._on_change is not None:
            self._on_change(before, self.rung, rounded)
