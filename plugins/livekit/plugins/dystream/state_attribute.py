"""Publishes the conversation state and the engine's quality rung as the avatar participant's attributes
``dystream.state`` and ``dystream.rung``.

Writes are serialised and coalesced: while one ``set_attributes`` call is in flight, only the latest value of each
attribute is kept and written next (those that changed, in one call), so a burst of changes never queues up stale
writes. A failed write (room not connected yet, no permission) is retried every second for half a minute, logged, and
never stops the avatar. A write the server has not acknowledged within a second is given up and written again with
the newest values, so one lost request cannot freeze the attributes for the rest of the call.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .log import logger
from .state import ConversationState, StateChangedEvent

ATTRIBUTE_STATE = "dystream.state"
ATTRIBUTE_RUNG = "dystream.rung"
RETRY_S = 1.0
RETRIES = 30
WRITE_TIMEOUT_S = 1.0


class _Participant(Protocol):
    async def set_attributes(self, attributes: dict[str, str]) -> None: ...


async def write_attributes(participant: _Participant, attributes: dict[str, str]) -> None:
    """``set_attributes``, given up with ``TimeoutError`` when the server has not acknowledged it within
    ``WRITE_TIMEOUT_S`` (the SDK itself waits for ever), so a caller that writes again is never held by a lost write."""
    await asyncio.wait_for(participant.set_attributes(attributes), WRITE_TIMEOUT_S)


class StateAttributePublisher:
    def __init__(self, state: ConversationState, participant: _Participant) -> None:
        self._state = state
        self._participant = participant
        self._wanted: dict[str, str] = {ATTRIBUTE_STATE: state.state.value}
        self._written: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        state.on("state_changed", self._on_change)
        self._kick()

    def _on_change(self, event: StateChangedEvent) -> None:
        self._wanted[ATTRIBUTE_STATE] = event.new_state.value
        self._kick()

    def set_rung(self, rung: str) -> None:
        """The quality rung the engine makes its pictures at now."""
        self._wanted[ATTRIBUTE_RUNG] = rung
        self._kick()

    def _changed(self) -> dict[str, str]:
        return {key: value for key, value in self._wanted.items() if self._written.get(key) != value}

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        failures = 0
        while changed := self._changed():
            try:
                await write_attributes(self._participant, changed)
                self._written.update(changed)
            except Exception as error:  # noqa: BLE001 - a failed attribute write must not stop the avatar
                # typically the room is not connected yet (the avatar may start before the agent connects), or the
                # server never acknowledged the write (TimeoutError): that one is written again at once
                failures += 1
                if failures == 1 or failures == RETRIES:
                    logger.warning(
                        "could not publish the avatar state attribute", extra={**changed, "error": repr(error)}
                    )
                if failures >= RETRIES:
                    return
                if not isinstance(error, TimeoutError):
                    await asyncio.sleep(RETRY_S)

    async def aclose(self) -> None:
        self._state.off("state_changed", self._on_change)
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=1.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
