"""`dystream start`: run the agent worker in production mode."""

from __future__ import annotations

import argparse

from agent.commands.connection import add_worker_args, check_connection_settings, settings_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "start",
        help="run the agent worker (production)",
        description="Run the agent worker: it registers with the LiveKit server and joins rooms as they are "
        "dispatched to it (every new room, or only explicit dispatches when DYSTREAM_AGENT__AGENT_NAME is set). "
        "SIGTERM drains running conversations before exiting.",
    )
    add_worker_args(parser)
    parser.add_argument("--drain-timeout", type=int, help="seconds to wait for running jobs on SIGTERM (default 1800)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    settings = settings_from(args)
    check_connection_settings(settings)
    from agent.dispatch_keeper import dispatch_keeper
    from agent.worker import build_server, run_server

    server = build_server(settings, http_port=args.http_port)
    if args.drain_timeout is not None:
        server.update_options(drain_timeout=args.drain_timeout)
    return run_server(server, devmode=False, keeper=dispatch_keeper(settings))
