"""The agent worker: a livekit-agents ``AgentServer`` whose jobs talk through the DyStream avatar.

- prewarm (once per job process): the silero VAD, the offline clips, and in the in-process mode the avatar models,
  so a job starts without loading anything;
- entrypoint (one per room): the voice pipeline from ``settings.agent`` (``agent.pipeline``), the avatar from
  ``settings.avatar`` (in-process, or a remote avatar worker dispatched into the room), then the greeting;
- :func:`run_server` runs a server until SIGINT/SIGTERM (then drains its jobs, except in dev mode).

The user may leave and come back: the session stays in the room (``close_on_disconnect=False``) and follows whoever
joins; the job ends when the room does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType, JobProcess, inference
from livekit.plugins import dystream  # registered here, so the worker's forkserver preloads it
from livekit.plugins.dystream.capacity import calibrate_sessions

from agent import pipeline
from agent.dispatch_keeper import DispatchKeeper
from agent.errors import UserError
from agent.events import EventLog
from config.log import get_logger
from config.settings import Settings, get_settings

log = get_logger(__name__)


def log_through_worker() -> None:
    """In a job process, livekit-agents forwards every log record to the worker process, which prints it; drop the
    handler that would print it a second time from here."""
    from livekit.agents.ipc.log_queue import LogQueueHandler

    root = logging.getLogger()
    forwarding = [handler for handler in root.handlers if isinstance(handler, LogQueueHandler)]
    if forwarding:
        root.handlers = forwarding


def prewarm(proc: JobProcess) -> None:
    """Load once per job process what every job needs."""
    log_through_worker()
    settings = get_settings()
    proc.userdata["vad"] = inference.VAD(model="silero")
    proc.userdata["clips"] = pipeline.load_clips(settings.agent)
    if settings.avatar.mode == "in-process":
        proc.userdata["avatar_models"] = dystream.load_models()  # once per process: every AvatarSession here uses it
    log.info("job process ready", avatar_mode=settings.avatar.mode)


async def entrypoint(ctx: JobContext) -> None:
    settings = get_settings()
    # the agent listens; it never needs the pictures (the remote avatar's video would be decoded for nothing)
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    events = EventLog(settings.agent.events_file, room=ctx.room.name)
    vad = ctx.proc.userdata.get("vad") or inference.VAD(model="silero")
    session = pipeline.build_session(settings.agent, vad=vad)
    events.watch_session(session)

    avatar = dystream.AvatarSession(settings=settings, models=ctx.proc.userdata.get("avatar_models"))
    await avatar.start(session, room=ctx.room)
    await session.start(
        pipeline.build_agent(settings.agent),
        room=ctx.room,
        room_options=pipeline.room_options(settings.agent),
        record=False,
    )
    events.watch_audio_output(session)
    events.write("session_started", avatar_mode=settings.avatar.mode)

    clips = ctx.proc.userdata.get("clips") or pipeline.load_clips(settings.agent)
    if not pipeline.uses_speech_services(settings.agent):
        pipeline.OfflineReplies(session, clips.replies, delay_s=settings.agent.reply_delay_s)
    pipeline.greet(session, settings.agent, clips.greeting)


def server_options(settings: Settings, *, http_port: int | None = None) -> dict[str, Any]:
    """The ``AgentServer`` arguments every worker of this project shares."""
    options: dict[str, Any] = {
        "ws_url": settings.livekit.url,
        "api_key": settings.livekit.api_key,
        "api_secret": settings.livekit.api_secret.get_secret_value(),
        "host": settings.agent.http_host,
        "port": settings.agent.http_port if http_port is None else http_port,
        "initialize_process_timeout": settings.agent.initialize_timeout_s,
        "log_level": settings.log_level.upper(),
        # the engine (and torch) imported once in the forkserver, not in each job process
        "preload_modules": ["avatar.stream.engine"],
    }
    if settings.stream.batch_sessions:
        # the avatars of every job step together on one engine (avatar.stream.device): the jobs share one process
        options["job_executor_type"] = JobExecutorType.THREAD
    if settings.agent.idle_processes is not None:
        options["num_idle_processes"] = settings.agent.idle_processes
    if settings.agent.prometheus_port is not None:
        options["prometheus_port"] = settings.agent.prometheus_port
        if not settings.stream.batch_sessions:  # (with it, the jobs run in this process and count here)
            # the avatars run in the job processes: each writes its metrics to files here, the endpoint adds them up
            options["prometheus_multiproc_dir"] = tempfile.mkdtemp(prefix="dystream-prometheus-")
    return options


FULL_LOAD = 0.7  # livekit-server's agents.target_load and the worker's production load_threshold


def jobs_load(max_jobs: int) -> Callable[[AgentServer], float]:
    """A worker load that reaches "full" (0.7 for LiveKit) at ``max_jobs`` running jobs.

    LiveKit sends a job only to workers below 0.7 and prefers the least loaded one, so a worker then runs at most
    ``max_jobs`` conversations whatever the CPU does. In-process, ``max_jobs`` defaults to the avatars the machine
    holds at the quality ladder's floor rung, measured at start (``calibrate_sessions``).
    """

    def load(server: AgentServer) -> float:
        return min(1.0, FULL_LOAD * len(server.active_jobs) / max_jobs)

    return load


def build_server(
    settings: Settings, *, http_port: int | None = None, setup_fnc: Callable[[JobProcess], Any] = prewarm
) -> AgentServer:
    """The agent worker; explicit dispatch when ``settings.agent.agent_name`` is set. ``setup_fnc``: the job
    processes' prewarm (``prewarm``, or one that builds on it)."""
    pipeline.check_settings(settings.agent)
    max_jobs = settings.agent.max_jobs
    if max_jobs is None and settings.avatar.mode == "in-process":
        max_jobs = calibrate_sessions(settings)  # the avatars this machine holds at the quality floor
    load_fnc = jobs_load(max_jobs) if max_jobs else None
    server = AgentServer(setup_fnc=setup_fnc, load_fnc=load_fnc, **server_options(settings, http_port=http_port))
    server.rtc_session(entrypoint, agent_name=settings.agent.agent_name)
    return server


def run_server(
    server: AgentServer,
    *,
    devmode: bool,
    unregistered: bool = False,
    on_started: Callable[[], Awaitable[None]] | None = None,
    keeper: DispatchKeeper | None = None,
) -> int:
    """Run ``server`` until SIGINT or SIGTERM; then drain its jobs (not in dev mode) and stop. A second signal
    exits at once. ``on_started`` runs once the server is up; if it fails, the server stops with its error.
    ``keeper`` looks after the server's rooms while it runs (``agent.dispatch_keeper``)."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        failure: list[BaseException] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        if on_started is not None:

            async def _started() -> None:
                try:
                    await on_started()
                except Exception as exc:  # reported by main() below
                    failure.append(exc)
                    stop.set()

            server.once("worker_started", lambda: asyncio.ensure_future(_started()))

        running = asyncio.create_task(server.run(devmode=devmode, unregistered=unregistered))
        keeping: list[asyncio.Task[None]] = []
        if keeper is not None:  # from registration on: a room dispatched again before would find no worker
            server.once("worker_registered", lambda *_: keeping.append(asyncio.ensure_future(keeper.run())))
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in keeping:
            task.cancel()  # a stopped or draining worker takes no new job: the rooms it finds go to the others
        if running in done:
            stopping.cancel()
            exc = running.exception()
            if exc is not None:
                raise UserError(f"the worker stopped: {exc}") from None
            return 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, os._exit, 1)
        log.info("stopping worker", drain=not devmode)
        if not devmode:
            with contextlib.suppress(asyncio.TimeoutError):
                await server.drain()
        await server.aclose()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await running
        if failure:
            raise UserError(str(failure[0])) from None
        return 0

    return asyncio.run(main())
