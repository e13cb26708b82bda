"""How work passes between the engine's clock and its model threads (docs/architecture.md §9): the clock leaves every
tick in the motion thread's ``TickInbox``, the motion thread leaves the newest latent in the render thread's
``LatentMailbox``. Each thread takes what is waiting whole and works on the newest."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class TickInbox:
    """Ticks waiting for the motion thread (filled on the loop, emptied whole by the thread)."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def take_all(self) -> list[Any] | None:
        """Everything waiting (blocks until there is something); None once closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._closed)
            if self._closed:
                return None
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class LatentMailbox(TickInbox):
    """The newest latent to render: a new one replaces one not yet taken."""

    def __init__(self) -> None:
        super().__init__()
        self.replaced = 0

    def put(self, item: Any) -> bool:  # type: ignore[override]
        """Leave ``item`` for the render thread; True when it replaced one that was never rendered."""
        with self._ready:
            replaced = bool(self._items)
            self._items.clear()
            self._items.append(item)
            self._ready.notify()
        if replaced:
            self.replaced += 1
        return replaced
