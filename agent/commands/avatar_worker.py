"""`dystream avatar-worker`: run the remote avatar worker that agents in remote mode dispatch into their rooms."""

from __future__ import annotations

import argparse

from agent.commands.connection import add_worker_args, check_connection_settings, settings_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "avatar-worker",
        help="run the remote avatar worker (renders avatars for agents in remote mode)",
        description="Run the avatar worker: a LiveKit agent worker named DYSTREAM_AVATAR__AVATAR_AGENT_NAME "
        "(default dystream-avatar). Agents with DYSTREAM_AVATAR__MODE=remote dispatch it into their room; it "
        "receives their speech over LiveKit data streams and publishes the avatar's video and audio for them. "
        "Run several (one per GPU) to scale out: LiveKit balances jobs by the load each reports.",
    )
    add_worker_args(parser)
    parser.add_argument("--dev", action="store_true", help="development mode (no drain on exit)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    settings = settings_from(args)
    check_connection_settings(settings)
    from agent.avatar_worker import build_avatar_server
    from agent.worker import run_server

    return run_server(build_avatar_server(settings, http_port=args.http_port), devmode=args.dev)
