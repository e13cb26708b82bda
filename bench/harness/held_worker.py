"""``python -m bench.harness.held_worker --render-s S {start,avatar-worker}``: the project's worker with the avatar's
renderer held to at least ``S`` seconds a frame (``HeldRenderer``): the engine slower than the 40 ms clock, as on a
slow or shared GPU, to test and measure that the voice keeps time and the video degrades gracefully.

Only the job processes' prewarm differs from ``python -m agent start`` / ``avatar-worker``: it wraps the loaded
models' renderer, and the worker hands those models to the avatar through the plugin's API
(``AvatarSession(models=...)`` in-process, ``run_avatar_job(build=...)`` remotely). Never a production setting.
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial

from livekit.agents import JobProcess
from livekit.plugins.dystream.testing import HeldRenderer

from agent import avatar_worker, worker
from config.settings import get_settings


def held_prewarm(proc: JobProcess, *, render_s: float, base: str) -> None:
    (worker.prewarm if base == "start" else avatar_worker.prewarm)(proc)
    models = proc.userdata.get("avatar_models")
    if models is not None:
        proc.userdata["avatar_models"] = dataclasses.replace(models, renderer=HeldRenderer(models.renderer, render_s))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.harness.held_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--render-s", type=float, required=True, help="least seconds a rendered frame takes")
    parser.add_argument("command", choices=["start", "avatar-worker"])
    args = parser.parse_args(argv)
    settings = get_settings()
    setup = partial(held_prewarm, render_s=args.render_s, base=args.command)
    if args.command == "start":
        server = worker.build_server(settings, setup_fnc=setup)
    else:
        server = avatar_worker.build_avatar_server(settings, setup_fnc=setup)
    return worker.run_server(server, devmode=False)


if __name__ == "__main__":
    raise SystemExit(main())
