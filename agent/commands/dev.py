"""`dystream dev`: run the agent worker in development mode (debug-friendly defaults, no drain on exit)."""

from __future__ import annotations

import argparse

from agent.commands.connection import add_worker_args, check_connection_settings, settings_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dev",
        help="run the agent worker in development mode",
        description="Run the agent worker against a LiveKit server in development mode: job processes start on "
        "demand, the health endpoint picks a free port unless --http-port is given, Ctrl+C stops at once.",
    )
    add_worker_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    settings = settings_from(args)
    check_connection_settings(settings)
    from agent.dispatch_keeper import dispatch_keeper
    from agent.worker import build_server, run_server

    http_port = args.http_port if args.http_port is not None else 0
    return run_server(build_server(settings, http_port=http_port), devmode=True, keeper=dispatch_keeper(settings))
