"""`dystream token --room R`: print a user token for a room, for quick tests (e.g. with meet.livekit.io).

A user token only: it never carries an agent's identity (LiveKit names agent participants ``agent-...``) or the
avatar's (``avatar.identity`` and the dispatch's random part), whose holder would disconnect the real one and take
its place, nor a wildcard room. It is short-lived: one hour by default, at most ``MAX_TTL_H``. A token is needed to
join; a participant in the room stays connected after it expires (LiveKit refreshes it).
"""

from __future__ import annotations

import argparse
import datetime
import sys

from agent.commands.connection import add_connection_args, settings_from
from agent.errors import UserError

DEFAULT_TTL_H = 1.0
MAX_TTL_H = 12.0
AGENT_IDENTITY_PREFIX = "agent-"  # the identity LiveKit gives an agent's job participant


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "token",
        help="print a user access token for a room",
        description="Print a JWT that lets a user join ROOM (publish, subscribe, data). Signed with the API key "
        "and secret. A room the token creates has sync_streams on (receivers lip-sync the avatar); with --agent, "
        "joining it also dispatches that agent (for workers with an agent name).",
    )
    parser.add_argument("--room", required=True, help="room name")
    parser.add_argument("--identity", default="user", help="participant identity (default: user)")
    parser.add_argument("--name", help="display name")
    parser.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL_H,
        help=f"validity in hours for joining (default: {DEFAULT_TTL_H:g}, at most {MAX_TTL_H:g})",
    )
    parser.add_argument("--agent", help="agent name to dispatch into the room when it is created")
    add_connection_args(parser, url=False)
    parser.set_defaults(run=run)


def make_token(
    api_key: str, api_secret: str, *, room: str, identity: str, name: str | None, ttl_hours: float, agent: str | None
) -> str:
    from livekit import api

    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_ttl(datetime.timedelta(hours=ttl_hours))
        .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True))
    )
    if name:
        token = token.with_name(name)
    # a room this token creates has sync_streams on (the avatar's audio and video reach the receivers in one media
    # stream, which they lip-sync), and with ``agent`` that agent dispatched into it
    agents = [api.RoomAgentDispatch(agent_name=agent)] if agent else []
    return token.with_room_config(api.RoomConfiguration(sync_streams=True, agents=agents)).to_jwt()


def check_user_identity(identity: str, *, avatar_prefix: str) -> None:
    if not identity.strip():
        raise UserError("--identity must not be empty")
    for prefix, whose in ((AGENT_IDENTITY_PREFIX, "an agent's"), (avatar_prefix, "the avatar's")):
        if identity.startswith(prefix):
            raise UserError(
                f"--identity {identity!r} looks like {whose} identity ({prefix}...): a user with it would replace "
                "that participant; choose a user name that does not start with it"
            )


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    key, secret = settings.livekit.api_key, settings.livekit.api_secret.get_secret_value()
    if not key or not secret:
        raise UserError("signing a token needs LIVEKIT_API_KEY and LIVEKIT_API_SECRET (or --api-key/--api-secret)")
    if not args.room.strip():
        raise UserError("--room must not be empty")
    if "*" in args.room:
        raise UserError(f"--room {args.room!r} is a wildcard: a user token is for one room, give its exact name")
    check_user_identity(args.identity, avatar_prefix=settings.avatar.identity)
    if not 0 < args.ttl <= MAX_TTL_H:
        raise UserError(f"--ttl {args.ttl:g} is out of range: give hours above 0 and at most {MAX_TTL_H:g}")
    token = make_token(
        key, secret, room=args.room, identity=args.identity, name=args.name, ttl_hours=args.ttl, agent=args.agent
    )
    sys.stdout.write(token + "\n")
    return 0
