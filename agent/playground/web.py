"""The playground's web page, served on 127.0.0.1: the page, its script, ``livekit-client`` from npm, and a token
for a fresh room each time the page joins (the token's room configuration dispatches the playground's agent)."""

from __future__ import annotations

import secrets
from pathlib import Path

from aiohttp import web

from agent.commands.token import make_token

from .stack import AGENT_NAME, LocalStack

STATIC = Path(__file__).parent / "static"
LIVEKIT_CLIENT = Path(__file__).parent / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"
TOKEN_TTL_H = 1.0


def missing_client_hint() -> str | None:
    """What to run when the npm package is not installed, else None."""
    if LIVEKIT_CLIENT.is_file():
        return None
    return (
        f"the page's livekit-client is not installed ({LIVEKIT_CLIENT} is missing): run `bash scripts/install.sh`, "
        "or `npm ci --prefix agent/playground`"
    )


def build_app(stack: LocalStack) -> web.Application:
    async def session(_: web.Request) -> web.Response:
        room = f"playground-{secrets.token_hex(4)}"
        token = make_token(
            stack.server.api_key,
            stack.server.api_secret,
            room=room,
            identity=f"user-{secrets.token_hex(3)}",
            name="you",
            ttl_hours=TOKEN_TTL_H,
            agent=AGENT_NAME,
        )
        body = {"url": stack.server.url, "token": token, "room": room, "mode": stack.options.mode}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def file(path: Path, content_type: str):
        async def handler(_: web.Request) -> web.FileResponse:
            return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

        return handler

    app = web.Application()
    app.router.add_get("/", file(STATIC / "index.html", "text/html; charset=utf-8"))
    for script in ("playground.js", "tap-worklet.js"):
        app.router.add_get(f"/{script}", file(STATIC / script, "text/javascript; charset=utf-8"))
    app.router.add_get("/livekit-client.umd.js", file(LIVEKIT_CLIENT, "text/javascript; charset=utf-8"))
    app.router.add_get("/api/session", session)
    return app
