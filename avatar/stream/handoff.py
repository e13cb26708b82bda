"""How work passes between the engine's clock and its model threads (docs/architecture.md §9): the clock leaves every
tick in the motion thread's ``TickInbox``, the motion thread leaves the newest latent in the render thread's
``LatentMailbox``. Each thread takes what is waiting whole and works on the newest. The boxes of every session a
device engine steps share that engine's conditions, so one thread waits for all of them (``avatar.stream.device``)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class TickInbox:
    """Ticks waiting for the motion thread (filled on the loop, emptied whole by the thread). ``ready``: the
    condition the thread waits on, shared by the boxes it serves."""

    def __init__(self, ready: threading.Condition | None = None) -> None:
        self._items: deque[Any] = deque()
        self._ready = ready or threading.Condition()

    @property
    def waiting(self) -> bool:
        """Something is waiting (read under ``ready``)."""
        return bool(self._items)

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify_all()

    def take_waiting(self) -> list[Any]:
        """Everything waiting, maybe nothing (the caller holds ``ready``)."""
        items = list(self._items)
        self._items.clear()
        return items


class LatentMailbox(TickInbox):
    """The newest latent to render: a new one replaces one not yet taken."""

    def __init__(self, ready: threading.Condition | None = None) -> None:
        super().__init__(ready)
        self.replaced = 0

    def put(self, item: Any) -> bool:  # type: ignore[override]
        """Leave ``item`` for the render thread; True when it replaced one that was never rendered."""
        with self._ready:
            replaced = bool(self._items)
            self._items.clear()
            self._items.append(item)
            self._ready.notify_all()
        if replaced:
            self.replaced += 1
        return replaced
