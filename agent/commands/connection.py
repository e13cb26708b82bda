"""Command-line options shared by the commands that talk to a LiveKit server, and the settings they produce.

Flags win over the environment (``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``, ``DYSTREAM_*``),
which wins over ``.env``. The secret is better kept in the environment: flags show up in process listings.
"""

from __future__ import annotations

import argparse
import os

from pydantic import SecretStr

from agent.errors import UserError
from config.log import configure_logging
from config.settings import Settings, get_settings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_connection_args(parser: argparse.ArgumentParser, *, url: bool = True) -> None:
    group = parser.add_argument_group("LiveKit connection (default: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)")
    if url:
        group.add_argument("--url", help="server URL, e.g. ws://localhost:7880 or wss://<project>.livekit.cloud")
    group.add_argument("--api-key", help="API key")
    group.add_argument("--api-secret", help="API secret (prefer the LIVEKIT_API_SECRET variable)")


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    add_connection_args(parser)
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, help="log level (default: DYSTREAM_LOG_LEVEL or INFO)"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        help="port of the health endpoint, GET / answers OK (default: DYSTREAM_AGENT__HTTP_PORT)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The process settings with the command-line flags applied; logging configured from them.

    The log level is also exported (``DYSTREAM_LOG_LEVEL``) so the worker's job processes use it too.
    """
    settings = get_settings().model_copy(deep=True)
    livekit = settings.livekit
    if getattr(args, "url", None):
        livekit.url = args.url
    if getattr(args, "api_key", None):
        livekit.api_key = args.api_key
    if getattr(args, "api_secret", None):
        livekit.api_secret = SecretStr(args.api_secret)
    if getattr(args, "log_level", None):
        settings.log_level = args.log_level
        os.environ["DYSTREAM_LOG_LEVEL"] = args.log_level
    configure_logging(settings.log_format, settings.log_level)
    return settings


def check_connection_settings(settings: Settings) -> None:
    """LiveKit URL, key and secret must be set (env or flags): say which one is missing."""
    missing = [
        variable
        for variable, value in (
            ("LIVEKIT_URL (or --url)", settings.livekit.url),
            ("LIVEKIT_API_KEY (or --api-key)", settings.livekit.api_key),
            ("LIVEKIT_API_SECRET (or --api-secret)", settings.livekit.api_secret.get_secret_value()),
        )
        if not value
    ]
    if missing:
        raise UserError(f"missing LiveKit connection settings: set {', '.join(missing)}")
    if not settings.livekit.url.startswith(("ws://", "wss://", "http://", "https://")):
        raise UserError(f"LIVEKIT_URL {settings.livekit.url!r} is not a URL: use ws://host:7880 or wss://...")
