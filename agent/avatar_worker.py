"""The remote avatar worker: a LiveKit agent worker of its own (``settings.avatar.avatar_agent_name``) that agents
dispatch into their rooms to render their avatar.

GPU servers scale out by running more of these: LiveKit's agent dispatch sends each job to an available worker,
balancing by the load each one reports (``dystream.avatar_worker_load``: active avatars over
``settings.avatar.max_sessions_per_worker``, by default the avatars its device holds at the quality ladder's floor
rung, measured at start). Each job process loads the models once (prewarm); the job itself is the
plugin's :func:`livekit.plugins.dystream.run_avatar_job`, accepted under the identity the agent asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from livekit.agents import AgentServer, JobContext, JobProcess
from livekit.plugins import dystream
from livekit.plugins.dystream.capacity import calibrate_sessions
from livekit.plugins.dystream.models import build_engine

from agent.worker import log_through_worker, server_options
from config.log import get_logger
from config.settings import Settings, get_settings

log = get_logger(__name__)


def prewarm(proc: JobProcess) -> None:
    log_through_worker()
    proc.userdata["avatar_models"] = dystream.load_models()  # once per process: every avatar job here uses it
    log.info("avatar job process ready")


async def entrypoint(ctx: JobContext) -> None:
    build = partial(build_engine, models=ctx.proc.userdata.get("avatar_models"))
    await dystream.run_avatar_job(ctx, settings=get_settings(), build=build)


def build_avatar_server(
    settings: Settings, *, http_port: int | None = None, setup_fnc: Callable[[JobProcess], Any] = prewarm
) -> AgentServer:
    limit = settings.avatar.max_sessions_per_worker or calibrate_sessions(settings)
    server = AgentServer(
        setup_fnc=setup_fnc,
        load_fnc=partial(dystream.avatar_worker_load, limit=limit),
        **server_options(settings, http_port=http_port),
    )
    server.rtc_session(entrypoint, agent_name=settings.avatar.avatar_agent_name, on_request=dystream.accept_avatar_job)
    return server
