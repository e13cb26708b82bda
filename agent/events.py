"""The agent's side of a conversation as JSON lines (``settings.agent.events_file``), for tests and diagnostics.

One line per event, stamped with ``time.time()``: the session's start and close, the user's and the agent's state
changes, each speech the agent starts (handed to the avatar) and each it interrupted, every playback the audio output
reports (started; finished with its position and whether it was interrupted), and the avatar metrics. The end-to-end
tests read it to check that ``playback_finished(interrupted=True)`` really reached the agent. Nothing secret is
written. Lines are appended with one ``write`` each, so several job processes can share the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    MetricsCollectedEvent,
    SpeechCreatedEvent,
    UserStateChangedEvent,
)
from livekit.agents.voice.io import PlaybackFinishedEvent, PlaybackStartedEvent


class EventLog:
    """Appends events to ``path`` (nothing when ``path`` is None)."""

    def __init__(self, path: Path | None, *, room: str) -> None:
        self._path = Path(path) if path else None
        self._room = room
        self._tasks: set[asyncio.Task[None]] = set()
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        if self._path is None:
            return
        line = json.dumps({"t": time.time(), "room": self._room, "event": event, **fields}, default=str) + "\n"
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def watch_session(self, session: AgentSession) -> None:
        """Log the session's state changes, speeches and metrics."""
        if self._path is None:
            return

        @session.on("user_state_changed")
        def _user(ev: UserStateChangedEvent) -> None:
            self.write("user_state", old=ev.old_state, new=ev.new_state)

        @session.on("agent_state_changed")
        def _agent(ev: AgentStateChangedEvent) -> None:
            self.write("agent_state", old=ev.old_state, new=ev.new_state)

        @session.on("speech_created")
        def _speech(ev: SpeechCreatedEvent) -> None:
            self.write("speech_created", speech_id=ev.speech_handle.id, source=ev.source)
            self._watch_speech(ev.speech_handle)

        @session.on("close")
        def _closed(ev: CloseEvent) -> None:
            self.write("session_closed", reason=str(ev.reason))

        @session.on("metrics_collected")
        def _metrics(ev: MetricsCollectedEvent) -> None:
            metrics = ev.metrics
            if getattr(metrics, "type", "") == "avatar_metrics":
                self.write(
                    "avatar_metrics",
                    playback_latency=getattr(metrics, "playback_latency", None),
                    avatar_joined_time=getattr(metrics, "avatar_joined_time", None),
                    session_started_time=getattr(metrics, "session_started_time", None),
                )

    def watch_audio_output(self, session: AgentSession) -> None:
        """Log what the agent's audio output (the avatar, at the end of the chain) reports back."""
        output = session.output.audio
        if self._path is None or output is None:
            return

        @output.on("playback_started")
        def _started(ev: PlaybackStartedEvent) -> None:
            self.write("playback_started", created_at=ev.created_at)

        @output.on("playback_finished")
        def _finished(ev: PlaybackFinishedEvent) -> None:
            self.write("playback_finished", position=ev.playback_position, interrupted=ev.interrupted)

    def _watch_speech(self, handle: SpeechHandle) -> None:
        done = asyncio.get_running_loop().create_future()
        handle.add_done_callback(lambda _: done.done() or done.set_result(None))

        async def _wait() -> None:
            await handle.wait_if_not_interrupted([done])
            if handle.interrupted:
                self.write("speech_interrupted", speech_id=handle.id)

        task = asyncio.create_task(_wait())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def read_events(path: Path, *, room: str | None = None) -> list[dict[str, Any]]:
    """The events in ``path`` (those of ``room`` only, if given), in order."""
    if not Path(path).exists():
        return []
    events = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [e for e in events if room is None or e.get("room") == room]
