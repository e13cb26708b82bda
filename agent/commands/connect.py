"""`dystream connect --room R`: join one room now, without waiting for a dispatch (creates the room if needed)."""

from __future__ import annotations

import argparse
import uuid

from agent.commands.connection import add_worker_args, check_connection_settings, settings_from
from agent.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "connect",
        help="join one room now with the agent",
        description="Start the agent worker without registering for dispatches and run one job in ROOM right away "
        "(the room is created if it does not exist). Ctrl+C leaves.",
    )
    parser.add_argument("--room", required=True, help="room name")
    parser.add_argument("--participant-identity", help="identity of the agent in the room (default: agent-<random>)")
    add_worker_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from livekit import api

    settings = settings_from(args)
    check_connection_settings(settings)
    from agent.worker import build_server, run_server

    if not args.room.strip():
        raise UserError("--room must not be empty")
    server = build_server(settings, http_port=args.http_port if args.http_port is not None else 0)
    identity = args.participant_identity or f"agent-{uuid.uuid4().hex[:8]}"
    livekit = settings.livekit

    async def join_room() -> None:
        async with api.LiveKitAPI(livekit.url, livekit.api_key, livekit.api_secret.get_secret_value()) as lk:
            found = await lk.room.list_rooms(api.ListRoomsRequest(names=[args.room]))
            room = found.rooms[0] if found.rooms else await lk.room.create_room(api.CreateRoomRequest(name=args.room))
        await server.simulate_job(args.room, fake_job=False, room_info=room, agent_identity=identity)

    return run_server(server, devmode=True, unregistered=True, on_started=join_room)
