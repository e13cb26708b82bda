"""Rooms whose agent is gone get one again.

LiveKit sends a dispatch's job to a worker once: when the room (or the dispatch) is created. If no worker has room
for it then ("no workers with sufficient capacity"), or the worker serving it dies, the room keeps its dispatch and
its user, and never gets an agent; the server does not try again. ``DispatchKeeper`` runs in every agent worker with
an agent name (explicit dispatch) and looks at the rooms every ``agent.redispatch_every_s``. A dispatch of its agent
name is *orphaned* when a user is in the room, none of its jobs' agents is, and its newest job (or the dispatch,
if it never got one) is older than ``agent.redispatch_after_s``, the time an agent has to join. The keeper then
deletes the dispatch (which ends what is left of its jobs) and creates the same one again, so LiveKit sends a new job
to a worker with room, this one or another.

Several workers may look at the same room at once: only the one whose delete succeeds creates the new dispatch (the
server deletes a dispatch once), so a room never gets two agents from this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from livekit import api

from config.log import get_logger
from config.settings import Settings

log = get_logger(__name__)

NS = 1e-9  # LiveKit's job and dispatch times are in nanoseconds


def newest_start_s(dispatch: api.AgentDispatch) -> float:
    """When the dispatch last sent a job (or was created, if it never did), in seconds since the epoch."""
    starts = [job.state.started_at for job in dispatch.state.jobs if job.state.started_at]
    return max(starts, default=dispatch.state.created_at) * NS


def is_orphaned(dispatch: api.AgentDispatch, present: set[str], *, now: float, after_s: float) -> bool:
    """No agent of the dispatch's jobs is among the ``present`` identities, and it has had ``after_s`` to join."""
    agents = {job.state.participant_identity for job in dispatch.state.jobs} - {""}
    return not agents & present and now - newest_start_s(dispatch) >= after_s


class DispatchKeeper:
    def __init__(
        self,
        connect: Callable[[], api.LiveKitAPI],
        agent_name: str,
        *,
        every_s: float,
        after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connect = connect  # called on the running loop (aiohttp's session needs one)
        self.agent_name = agent_name
        self.every_s = every_s
        self.after_s = after_s
        self._clock = clock

    async def run(self) -> None:
        """Sweep every ``every_s`` until cancelled; a failed sweep is logged and the next one tries again."""
        lkapi = self._connect()
        try:
            while True:
                try:
                    await self.sweep(lkapi)
                except Exception as exc:  # the server restarting, a network hiccup: the next sweep tries again
                    log.warning("could not look for rooms without their agent", error=str(exc))
                await asyncio.sleep(self.every_s)
        finally:
            await lkapi.aclose()

    async def sweep(self, lkapi: api.LiveKitAPI) -> list[str]:
        """Dispatch again every orphaned dispatch of this agent name; returns the rooms that got one."""
        redispatched = []
        for room in (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms:
            dispatches = [d for d in await lkapi.agent_dispatch.list_dispatch(room.name) if self._ours(d)]
            if not dispatches:
                continue
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room.name))
            participants = listed.participants
            if not any(p.kind == api.ParticipantInfo.Kind.STANDARD for p in participants):
                continue  # nobody to talk to: the room closes by itself
            present = {p.identity for p in participants}
            now = self._clock()
            for dispatch in dispatches:
                if not is_orphaned(dispatch, present, now=now, after_s=self.after_s):
                    continue
                if await self._redispatch(lkapi, dispatch):
                    redispatched.append(room.name)
        return redispatched

    def _ours(self, dispatch: api.AgentDispatch) -> bool:
        return dispatch.agent_name == self.agent_name and not dispatch.state.deleted_at

    async def _redispatch(self, lkapi: api.LiveKitAPI, dispatch: api.AgentDispatch) -> bool:
        try:
            await lkapi.agent_dispatch.delete_dispatch(dispatch.id, dispatch.room)
        except api.TwirpError as exc:
            log.debug("dispatch already replaced", room=dispatch.room, dispatch=dispatch.id, error=str(exc))
            return False
        again = api.CreateAgentDispatchRequest(
            agent_name=dispatch.agent_name, room=dispatch.room, metadata=dispatch.metadata
        )
        created = await lkapi.agent_dispatch.create_dispatch(again)
        log.warning(
            "room had no agent: dispatched again",
            room=dispatch.room,
            dispatch=created.id,
            replaced=dispatch.id,
            waited_s=round(self._clock() - newest_start_s(dispatch), 1),
        )
        return True


def dispatch_keeper(settings: Settings) -> DispatchKeeper | None:
    """The keeper of this worker's rooms: only with explicit dispatch (an agent name) and a sweep period."""
    agent = settings.agent
    if not agent.agent_name or not agent.redispatch_every_s:
        return None
    livekit = settings.livekit

    def connect() -> api.LiveKitAPI:
        return api.LiveKitAPI(livekit.url, livekit.api_key, livekit.api_secret.get_secret_value())

    return DispatchKeeper(connect, agent.agent_name, every_s=agent.redispatch_every_s, after_s=agent.redispatch_after_s)
