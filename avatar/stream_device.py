"""One engine per device: the live conversations of a process that share a motion generator and a renderer,
stepped together (README, "Many avatars on one device").

Each conversation keeps its own ``AvatarStream`` (its clock, queues, quality ladder and threads) and its own
``StreamCore`` state; what it hands to a ``DeviceEngine`` is the expensive part of a tick: the motion step (the
transformer and the flow head) and the render. The engine gathers the requests of its members and runs them as one
``SessionBatch`` call per stage: a batch closes when every member has asked, or ``gather_ms`` after its first
request (a member that is late or has nothing to do this tick does not hold the others). Members' clocks tick on one
grid (``origin``), so their requests arrive together. A member joins after its warm-up and leaves when it closes,
between ticks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avatar.stream_batch import SessionBatch, group_by_rung
from avatar.stream_core import StreamCore
from avatar.stream_ladder import Rung
from avatar.thread_priority import lower_priority

GATHER_MS = 5.0


@dataclass
class _Request:
    core: StreamCore
    argument: Any  # the rung to generate at, or the latent to render
    result: Future


class _Gather:
    """Requests from the members' threads, run together on one thread of its own."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[_Request]], None],
        members: Callable[[], int],
        gather_s: float,
        nice: int,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._nice = nice
        self._members = members
        self._gather_s = gather_s
        self._now = now
        self._ready = threading.Condition()
        self._pending: list[_Request] = []
        self._closed = False
        self.batch_sizes: list[int] = []  # of every batch run (for stats and tests)
        self._thread = threading.Thread(target=self._loop, name=f"dystream-device-{name}", daemon=True)
        self._thread.start()

    def submit(self, core: StreamCore, argument: Any) -> Any:
        """Queue one member's request and wait for its result (raises what the batch raised)."""
        request = _Request(core, argument, Future())
        with self._ready:
            if self._closed:
                raise RuntimeError("the device engine is closed")
            self._pending.append(request)
            self._ready.notify_all()
        return request.result.result()

    def wake(self) -> None:
        """Membership changed: a batch waiting for a member that left can run."""
        with self._ready:
            self._ready.notify_all()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        lower_priority(self._nice)
        while (taken := self._take()) is not None:
            self.batch_sizes.append(len(taken))
            try:
                self._run(taken)
            except BaseException as exc:  # noqa: BLE001 - every waiting member gets the failure
                for request in taken:
                    if not request.result.done():
                        request.result.set_exception(exc)

    def _take(self) -> list[_Request] | None:
        """The next batch: once every member has asked or the gather window after the first request closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._pending or self._closed)
            if not self._closed:
                closes = self._now() + self._gather_s
                while not self._closed and len(self._pending) < self._members() and self._now() < closes:
                    self._ready.wait(closes - self._now())
            taken, self._pending = self._pending, []
            if self._closed:
                for request in taken:
                    request.result.set_exception(RuntimeError("the device engine is closed"))
                return None
            return taken


class DeviceEngine:
    """The live conversations of one motion generator and renderer in this process, stepped together."""

    def __init__(
        self,
        batch: SessionBatch,
        gather_ms: float = GATHER_MS,
        fps: float = 25.0,
        *,
        render_nice: int = 0,
        motion_nice: int = 0,
    ) -> None:
        """``render_nice`` / ``motion_nice``: the CPU priority of its threads below the process, as a stream's own
        (``stream.worker_nice``, plus ``stream.motion_extra_nice`` for the motion thread)."""
        self.batch = batch
        self.origin = time.perf_counter()  # the members' clocks tick at origin + k / fps
        self.period = 1.0 / fps
        self._members = 0
        self._lock = threading.Lock()
        gather_s = gather_ms / 1000.0
        self._motion = _Gather("motion", self._generate, self.members, gather_s, motion_nice)
        self._render = _Gather("render", self._draw, self.members, gather_s, render_nice)

    def members(self) -> int:
        return self._members

    def join(self) -> None:
        with self._lock:
            self._members += 1

    def leave(self) -> None:
        with self._lock:
            self._members -= 1
        self._motion.wake()
        self._render.wake()

    def generate(self, core: StreamCore, rung: Rung) -> torch.Tensor:
        """``core.generate(rung)``, in the batch of this tick's motion steps."""
        return self._motion.submit(core, rung)

    def render(self, core: StreamCore, latent: torch.Tensor) -> np.ndarray:
        """``core.render(latent)``, in the batch of this tick's renders."""
        return self._render.submit(core, latent)

    def next_tick_at(self, now: float) -> float:
        """The first time on the members' grid at or after ``now`` (``time.perf_counter``)."""
        ticks = max(0, -int(-(now - self.origin) // self.period))  # ceil
        return self.origin + ticks * self.period

    @property
    def batch_sizes(self) -> dict[str, list[int]]:
        return {"motion": self._motion.batch_sizes, "render": self._render.batch_sizes}

    def close(self) -> None:
        self._motion.close()
        self._render.close()

    def _generate(self, requests: Sequence[_Request]) -> None:
        futures = {id(r.core): r.result for r in requests}
        for cores, rung in group_by_rung([(r.core, r.argument) for r in requests]):
            for core, latent in zip(cores, self.batch.generate(cores, rung), strict=True):
                futures[id(core)].set_result(latent)

    def _draw(self, requests: Sequence[_Request]) -> None:
        frames = self.batch.render([r.core for r in requests], [r.argument for r in requests])
        for request, frame in zip(requests, frames, strict=True):
            request.result.set_result(frame)
