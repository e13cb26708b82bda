"""``DispatchKeeper`` dispatches again exactly the rooms whose agent is gone, once, against an in-memory server."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from livekit import api

from agent.dispatch_keeper import DispatchKeeper, is_orphaned

NOW = 1_000.0
AGENT = "helper"
NS = 10**9


def dispatch(room: str, *, agent: str = AGENT, started_s: float | None, identity: str = "", created_s: float = 0.0):
    jobs = []
    if started_s is not None:
        state = api.JobState(
            status=api.JobStatus.JS_RUNNING, started_at=int(started_s * NS), participant_identity=identity
        )
        jobs.append(api.Job(id=f"AJ_{room}", room=api.Room(name=room), state=state))
    return api.AgentDispatch(
        id=f"AD_{room}_{agent}",
        agent_name=agent,
        room=room,
        metadata=f"meta-{room}",
        state=api.AgentDispatchState(jobs=jobs, created_at=int(created_s * NS)),
    )


class FakeServer:
    """The three LiveKit services the keeper uses, over rooms held in memory. ``lost_deletes``: dispatch ids another
    worker deletes first (their delete fails here)."""

    def __init__(self, rooms: dict[str, tuple[list[api.ParticipantInfo], list[api.AgentDispatch]]]) -> None:
        self.rooms = rooms
        self.lost_deletes: set[str] = set()
        self.deleted: list[str] = []
        self.created: list[api.CreateAgentDispatchRequest] = []
        self.room = SimpleNamespace(list_rooms=self._list_rooms, list_participants=self._list_participants)
        self.agent_dispatch = SimpleNamespace(
            list_dispatch=self._list_dispatch, delete_dispatch=self._delete, create_dispatch=self._create
        )

    async def _list_rooms(self, request: api.ListRoomsRequest) -> api.ListRoomsResponse:
        return api.ListRoomsResponse(rooms=[api.Room(name=name) for name in self.rooms])

    async def _list_participants(self, request: api.ListParticipantsRequest) -> api.ListParticipantsResponse:
        return api.ListParticipantsResponse(participants=self.rooms[request.room][0])

    async def _list_dispatch(self, room: str) -> list[api.AgentDispatch]:
        return list(self.rooms[room][1])

    async def _delete(self, dispatch_id: str, room: str) -> api.AgentDispatch:
        if dispatch_id in self.lost_deletes:
            raise api.TwirpError("not_found", "dispatch ID not found", status=404)
        self.deleted.append(dispatch_id)
        return api.AgentDispatch(id=dispatch_id)

    async def _create(self, request: api.CreateAgentDispatchRequest) -> api.AgentDispatch:
        self.created.append(request)
        return api.AgentDispatch(id=f"AD_new_{request.room}", agent_name=request.agent_name, room=request.room)


def user(identity: str = "alice") -> api.ParticipantInfo:
    return api.ParticipantInfo(identity=identity, kind=api.ParticipantInfo.Kind.STANDARD)


def agent(identity: str) -> api.ParticipantInfo:
    return api.ParticipantInfo(identity=identity, kind=api.ParticipantInfo.Kind.AGENT)


def sweep(server: FakeServer) -> list[str]:
    keeper = DispatchKeeper(lambda: server, AGENT, every_s=1.0, after_s=20.0, clock=lambda: NOW)
    return asyncio.run(keeper.sweep(server))


def test_only_the_rooms_whose_agent_is_gone_are_dispatched_again() -> None:
    server = FakeServer(
        {
            # the worker died: its agent left, the user stayed
            "dead": ([user()], [dispatch("dead", started_s=NOW - 60, identity="agent-AJ_dead")]),
            # no worker had room: the dispatch never got a job
            "refused": ([user()], [dispatch("refused", started_s=None, created_s=NOW - 30)]),
            # served: its agent is in the room
            "served": (
                [user(), agent("agent-AJ_served")],
                [dispatch("served", started_s=NOW - 60, identity="agent-AJ_served")],
            ),
            # the agent is still on its way
            "joining": ([user()], [dispatch("joining", started_s=NOW - 5, identity="agent-AJ_joining")]),
            # nobody to talk to
            "empty": ([], [dispatch("empty", started_s=NOW - 60, identity="agent-AJ_empty")]),
            # another agent's dispatch
            "other": ([user()], [dispatch("other", agent="someone-else", started_s=NOW - 60)]),
        }
    )
    assert sorted(sweep(server)) == ["dead", "refused"]
    assert sorted(server.deleted) == ["AD_dead_helper", "AD_refused_helper"]
    assert sorted((r.room, r.agent_name, r.metadata) for r in server.created) == [
        ("dead", AGENT, "meta-dead"),
        ("refused", AGENT, "meta-refused"),
    ]


def test_a_room_another_worker_dispatched_first_is_left_to_it() -> None:
    server = FakeServer({"dead": ([user()], [dispatch("dead", started_s=NOW - 60, identity="agent-AJ_dead")])})
    server.lost_deletes.add("AD_dead_helper")
    assert sweep(server) == []
    assert server.created == []


def test_a_job_counts_from_its_own_start_not_the_dispatch() -> None:
    again = dispatch("room", started_s=NOW - 5, identity="agent-new", created_s=NOW - 600)
    assert not is_orphaned(again, {"alice"}, now=NOW, after_s=20.0)
    assert is_orphaned(again, {"alice"}, now=NOW + 20.0, after_s=20.0)
    assert not is_orphaned(again, {"alice", "agent-new"}, now=NOW + 600.0, after_s=20.0)
