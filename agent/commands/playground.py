"""`dystream playground`: start a local LiveKit server, the agent worker and a web page, and print its URL.

Everything stops on Ctrl+C (or SIGTERM), and nothing is left running: the workers are stopped with the job
processes they started, then the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path

from agent.errors import UserError
from config.log import get_logger
from config.settings import Settings, get_settings

log = get_logger(__name__)

DEFAULT_PORT = 8090
WORKER_WATCH_S = 1.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "playground",
        help="talk to the avatar in a browser: local server, agent worker and web page",
        description="Start a LiveKit server on loopback (a fresh key, sync_streams on), the agent worker (with "
        "--remote also the avatar worker) and a web page on 127.0.0.1, and print the page's URL. Open it, click "
        "Join and speak. Without speech services configured (DYSTREAM_AGENT__STT/LLM/TTS) the agent greets and "
        "answers with --greeting / --reply clips, or only listens. Ctrl+C stops everything.",
    )
    parser.add_argument("--portrait", type=Path, help="reference portrait (default: DYSTREAM_AVATAR__PORTRAIT)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the page's port (default {DEFAULT_PORT})")
    parser.add_argument("--remote", action="store_true", help="render in a separate avatar worker (remote mode)")
    parser.add_argument("--greeting", type=Path, help="offline greeting clip (default: DYSTREAM_AGENT__GREETING_AUDIO)")
    parser.add_argument(
        "--reply", type=Path, action="append", default=[], help="offline reply clip (repeat for several)"
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="an untrained model even when the weights are downloaded (used anyway when they are not)",
    )
    parser.add_argument(
        "--size",
        choices=("full", "tiny"),
        help="model size (default: full with weights; tiny with random weights "
        "on the CPU, where the full size makes a picture every few seconds)",
    )
    parser.set_defaults(run=run)


def stack_options(args: argparse.Namespace, settings: Settings):
    from agent.playground.stack import StackOptions
    from avatar.models import weights_present

    portrait = args.portrait or settings.avatar.portrait
    if portrait is None:
        raise UserError("no portrait: give --portrait PATH (or set DYSTREAM_AVATAR__PORTRAIT)")
    if not Path(portrait).is_file():
        raise UserError(f"--portrait {portrait} does not exist: give the path of an image file")
    for flag, path in [("--greeting", args.greeting)] + [("--reply", p) for p in args.reply]:
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path} does not exist: give the path of an audio file")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is out of range: give a port from 1 to 65535")
    asked = args.random_weights or settings.avatar.random_weights
    random_weights = asked or not weights_present(settings.model)
    if random_weights and not asked:
        log.warning(
            "NO WEIGHTS: the avatar runs an UNTRAINED model (random weights) and will not look like a face; "
            "run `dystream download-files` for the real model",
            weights=str(settings.model.checkpoints_dir),
        )
    size = args.size or ("tiny" if random_weights and not settings.model.device.startswith("cuda") else "full")
    return StackOptions(
        portrait=Path(portrait),
        mode="remote" if args.remote else settings.avatar.mode,
        random_weights=random_weights,
        size=size,
        greeting=args.greeting or settings.agent.greeting_audio,
        replies=tuple(args.reply or settings.agent.reply_clips),
    )


async def serve(stack, port: int) -> int:
    """Serve the page until Ctrl+C / SIGTERM (0) or until a worker dies (1)."""
    from aiohttp import web

    from agent.playground.web import build_app

    runner = web.AppRunner(build_app(stack), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(f"--port {port} cannot be used ({exc.strerror}): give another port") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"dystream playground: open http://127.0.0.1:{port}/", flush=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WORKER_WATCH_S)
            dead = stack.failed()
            if dead is not None:
                print(f"dystream playground: {dead.name} exited, see {dead.log_path}", file=sys.stderr)
                return 1
        return 0
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    from agent.local.server import ServerBuildError
    from agent.playground.stack import LocalStack
    from agent.playground.web import missing_client_hint

    settings = get_settings()
    options = stack_options(args, settings)
    hint = missing_client_hint()
    if hint is not None:
        raise UserError(hint)
    workdir = Path(tempfile.mkdtemp(prefix="dystream-playground-"))
    stack = LocalStack(workdir, options)
    print(f"dystream playground: starting the LiveKit server and the workers (logs in {workdir})", flush=True)
    try:
        stack.start()
        return asyncio.run(serve(stack, args.port))
    except ServerBuildError as exc:
        raise UserError(str(exc)) from None
    finally:
        stack.stop()
