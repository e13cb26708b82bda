"""The model threads of the engine, for one conversation or for every conversation of a process on one device
(README, "Many avatars on one device"; docs/architecture.md §9).

A ``DeviceEngine`` runs one motion thread and one render thread for the sessions (``AvatarStream``) that join it.
Each round the motion thread takes the ticks waiting for every session; each session hears all of its ticks and
generates the latents of the ticks before its newest on its own (only a session that fell behind has such ticks);
the newest ticks that get a latent are generated together, one ``SessionBatch`` call per sampler setting (steps and
guidance), since the sessions may be on different rungs. The render thread takes the newest latent of every session
and renders them in one renderer call. A session alone in its round is stepped as a session by itself is
(``StreamCore.generate`` / ``render``), so an engine of one conversation, the default, is exactly that. Sessions
join and leave between rounds; each keeps its own clock, audio, keyframes, quality ladder and output, and every
session of a round is told the round's time (a slow round is slow for all of them, and they step down together).

``stream.batch_sessions`` makes the conversations of a process share one engine per (motion generator, renderer):
the worker then runs its jobs in one process (README, "Many avatars on one device").
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from avatar.settings import StreamSettings
from avatar.stream.batch import SessionBatch
from avatar.stream.core import StreamCore
from avatar.stream.cuda import MotionStream, receive
from avatar.stream.frames import AudioTick
from avatar.stream.handoff import LatentMailbox, TickInbox
from avatar.stream.ladder import QualityGovernor, Rung
from avatar.stream.threads import lower_priority
from avatar.stream.timing import StageTimer

log = logging.getLogger(__name__)

GATHER_S = 0.005  # the motion thread waits this long for the other sessions' ticks of a round (in phase)


@dataclass
class Pending:
    """A session's newest tick, heard, waiting for its latent."""

    tick: AudioTick
    render: bool  # the latent is also rendered (it gets a picture of its own)
    timer: StageTimer


# what the render thread gets from the motion thread: (tick, latent, its CUDA event, rung, stage times so far)
Latent = tuple[AudioTick, torch.Tensor, Any, Rung, dict[str, float]]


class Session(Protocol):
    """What the engine uses of a conversation (``AvatarStream``)."""

    core: StreamCore
    governor: QualityGovernor
    inbox: TickInbox
    mailbox: LatentMailbox

    def open_boxes(self, motion_ready: threading.Condition, render_ready: threading.Condition) -> None: ...
    def hear_ticks(self, ticks: list[Any], rung: Rung, motion_stream: MotionStream) -> Pending | None: ...
    def take_latent(self, pending: Pending, latent: torch.Tensor, rung: Rung, ready: Any) -> None: ...
    def show(self, latent: Latent, rgb: np.ndarray, render_s: float) -> None: ...
    def fail(self, error: BaseException) -> None: ...


class DeviceEngine:
    """The motion and render threads of the sessions that join it."""

    _shared: ClassVar[dict[tuple[Any, ...], DeviceEngine]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, core: StreamCore, settings: StreamSettings) -> None:
        self.batch = SessionBatch.of(core)
        self.device = core.device
        self.settings = settings
        self.epoch = time.perf_counter()  # the sessions' clocks tick in phase with it
        self.motion_ready = threading.Condition()
        self.render_ready = threading.Condition()
        self.batched_rounds = 0  # calls that generated or rendered more than one session
        self._sessions: list[Session] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._key: tuple[Any, ...] | None = None

    @classmethod
    def for_session(cls, core: StreamCore, settings: StreamSettings, *, shared: bool) -> DeviceEngine:
        """The engine a session of ``core`` joins: the process's engine for its networks, guidance and precision
        when ``shared``, else one of its own."""
        if not shared:
            return cls(core, settings)
        key = (id(core.motion), id(core.renderer), repr(core.cfg), core.precision.name)
        with cls._shared_lock:
            engine = cls._shared.get(key)
            if engine is None:
                engine = cls._shared[key] = cls(core, settings)
                engine._key = key
            return engine

    def join(self, session: Session) -> DeviceEngine:
        """``session`` joins; returns the engine it joined: this one, or a new one when this one closed meanwhile
        (its last session left between ``for_session`` and now)."""
        with self._shared_lock:
            if not self._closed:
                self._join(session)
                return self
        engine = DeviceEngine.for_session(session.core, self.settings, shared=self._key is not None)
        return engine.join(session)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def _join(self, session: Session) -> None:
        session.open_boxes(self.motion_ready, self.render_ready)
        with self.motion_ready, self.render_ready:
            self._sessions.append(session)
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._run_motion, name="dystream-motion", daemon=True),
                threading.Thread(target=self._run_render, name="dystream-render", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    async def leave(self, session: Session) -> None:
        """``session`` leaves; the last one to leave stops the threads."""
        with self._shared_lock, self.motion_ready, self.render_ready:
            if session in self._sessions:
                self._sessions.remove(session)
            last = not self._sessions
            if last:
                self._closed = True
                self.motion_ready.notify_all()
                self.render_ready.notify_all()
                if self._key is not None and self._shared.get(self._key) is self:
                    del self._shared[self._key]
        if last:
            threads, self._threads = self._threads, []
            for thread in threads:
                await asyncio.to_thread(thread.join)

    def _take(
        self, ready: threading.Condition, box: Callable[[Session], TickInbox], gather_s: float = 0.0
    ) -> list[tuple[Session, list]]:
        """Every session's waiting items (blocks until one has some, then up to ``gather_s`` for every session to
        have some); [] once the engine is closed."""
        with ready:
            ready.wait_for(lambda: self._closed or any(box(s).waiting for s in self._sessions))
            if gather_s and len(self._sessions) > 1:
                ready.wait_for(lambda: self._closed or all(box(s).waiting for s in self._sessions), gather_s)
            if self._closed:
                return []
            return [(s, items) for s in self._sessions if (items := box(s).take_waiting())]

    # -- the motion thread: every session's newest tick, batched

    def _run_motion(self) -> None:
        torch.set_grad_enabled(False)
        lower_priority(self.settings.worker_nice + self.settings.motion_extra_nice)
        own_stream = MotionStream(self.device)  # the render waits for a latent, not for what came after it
        with own_stream.active():
            while work := self._take(self.motion_ready, lambda s: s.inbox, GATHER_S):
                started = time.perf_counter()
                waiting: list[tuple[Session, Rung, Pending]] = []
                for session, ticks in work:
                    try:
                        rung = session.governor.update()
                        pending = session.hear_ticks(ticks, rung, own_stream)
                    except Exception as exc:  # noqa: BLE001 - the session's consumer gets it; the others go on
                        self._fail(session, exc, "motion")
                        continue
                    if pending is not None:
                        waiting.append((session, rung, pending))
                self._generate(waiting, own_stream)
                # every tick is due once; the ticks that came while this thread was busy with an earlier round are
                # late, whatever the rung does with them (one it interpolates on time is not a miss)
                busy = time.perf_counter() - started
                for session, ticks in work:
                    session.governor.report("motion", busy, due=len(ticks), missed=len(ticks) - 1)

    def _generate(self, waiting: list[tuple[Session, Rung, Pending]], own_stream: MotionStream) -> None:
        groups: dict[tuple[int, bool], list[tuple[Session, Rung, Pending]]] = {}
        for member in waiting:
            groups.setdefault((member[1].steps, member[1].guidance), []).append(member)
        for members in groups.values():
            rung = members[0][1]
            try:
                if len(members) == 1:
                    latents = [members[0][0].core.generate(rung, members[0][2].timer)]
                else:
                    cores, timers = [m[0].core for m in members], [m[2].timer for m in members]
                    latents = self.batch.generate(cores, rung, timers)
                    self.batched_rounds += 1
            except Exception as exc:  # noqa: BLE001 - the sessions' consumers get it; the others go on
                for session, _, _ in members:
                    self._fail(session, exc, "motion")
                continue
            ready = own_stream.mark()
            with self.render_ready:  # the render thread takes the round's latents together
                for (session, own_rung, pending), latent in zip(members, latents, strict=True):
                    session.take_latent(pending, latent, own_rung, ready)

    # -- the render thread: every session's newest latent, in one call

    def _run_render(self) -> None:
        torch.set_grad_enabled(False)
        lower_priority(self.settings.worker_nice)
        while work := self._take(self.render_ready, lambda s: s.mailbox):
            newest: list[tuple[Session, Latent]] = [(session, items[-1]) for session, items in work]
            started = time.perf_counter()
            try:
                if len(newest) == 1:
                    session, (_, latent, ready, _, _) = newest[0]
                    frames = [session.core.render(latent, ready)]
                else:
                    for _, (_, latent, ready, _, _) in newest:
                        receive(latent, ready)
                    frames = self.batch.render([s.core for s, _ in newest], [item[1] for _, item in newest])
                    self.batched_rounds += 1
            except Exception as exc:  # noqa: BLE001 - the sessions' consumers get it; the others go on
                for session, _ in newest:
                    self._fail(session, exc, "render")
                continue
            render_s = time.perf_counter() - started
            for (session, item), rgb in zip(newest, frames, strict=True):
                session.governor.report("render", render_s)
                session.show(item, rgb, render_s)

    def _fail(self, session: Session, error: BaseException, thread: str) -> None:
        log.error(f"stream {thread} worker failed", exc_info=error)
        session.fail(error)
