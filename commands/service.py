"""The commands service: a Starlette app with the accounts and access routes, under uvicorn.

`create_app(settings)` builds a new app each call (no module-level state); what it opens
lives on `app.state.access` for the app's lifetime, so more routes (the WebSocket
gateway) can be added to the app and share it. `run_commands_service` serves it on
`commands_host:commands_port` (port 0: any free port, logged).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from commands.access import access_of, open_access
from commands.auth_routes import auth_routes
from commands.gateway import Gateway
from commands.lookup import lookup_routes
from commands.me_routes import me_routes
from commands.media import MediaUploads
from commands.media_routes import media_routes
from commands.web import AccessLog, domain_error, error_response, http_error
from commands.web_client import web_client_routes
from commands.wsprotocol import LeanWebSocketProtocol
from domain.errors import DomainError
from infra.http import serve
from infra.objectstore import ObjectStore
from infra.settings import Settings

log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    """Alive, and Redis answers (PostgreSQL is checked by the first request that needs it)."""
    try:
        await access_of(request).redis.ping()
    except Exception as exc:  # any failure to reach Redis makes the service unready
        log.warning("event=healthz_failed error=%s", type(exc).__name__)
        return error_response("unavailable", "redis does not answer", 503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready to take commands: Redis answers and nothing this process listens with is down
    (its reply and delivery subscriptions, its heartbeat). 503 names what is degraded."""
    degraded = dict(request.app.state.gateway.health.degraded)
    try:
        await access_of(request).redis.ping()
    except Exception as exc:  # any failure to reach Redis makes the service unready
        degraded["redis"] = type(exc).__name__
    if degraded:
        log.warning("event=not_ready degraded=%s", ",".join(sorted(degraded)))
        return JSONResponse({"ready": False, "degraded": degraded}, status_code=503)
    return JSONResponse({"ready": True, "degraded": {}})


async def internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged by type only, answered without details."""
    log.error("event=internal_error path=%s error=%s", request.url.path, type(exc).__name__)
    return error_response("internal", "internal error", 500)


@asynccontextmanager
async def open_media(settings: Settings) -> AsyncIterator[MediaUploads]:
    """The upload flow with its own small pool and the object store."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_conninfo, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    try:
        media = MediaUploads(settings, ObjectStore(settings), pool)
        await media.create_table()
        yield media
    finally:
        await pool.close()


def create_app(settings: Settings) -> Starlette:
    """The commands service's app for these settings."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_access(settings) as access, open_media(settings) as media:
            app.state.access = access
            app.state.media = media
            gateway = Gateway(settings, access)
            await gateway.start()
            app.state.gateway = gateway
            collector = asyncio.create_task(media.collect_forever())
            log.info("event=commands_app_started")
            try:
                yield
            finally:
                collector.cancel()
                await gateway.stop()
        log.info("event=commands_app_stopped")

    async def websocket(ws: WebSocket) -> None:
        await ws.app.state.gateway.serve(ws)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            WebSocketRoute("/ws", websocket),
            *auth_routes(),
            *me_routes(),
            *media_routes(),
            *lookup_routes(),
            *web_client_routes(settings),
        ],
        middleware=[Middleware(AccessLog)],
        exception_handlers={
            DomainError: domain_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )


class DirectWebSocket:
    """The app, with `/ws` handed straight to the gateway.

    A WebSocket lives for hours, and every middleware it passes through (error
    handling, access log, routing) keeps a coroutine frame alive for all that time:
    about 4 KiB a connection. The gateway answers its own errors, so the socket skips
    them; everything else goes through the app as before.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = self.app
            await self.app.state.gateway.serve(WebSocket(scope, receive, send))
        else:
            await self.app(scope, receive, send)


def run_commands_service(settings: Settings, stop: threading.Event) -> None:
    """Serve the app until SIGTERM/SIGINT or `stop` is set; logs the bound address."""
    serve(
        DirectWebSocket(create_app(settings)),
        "commands",
        settings.commands_host,
        settings.commands_port,
        stop,
        trusted_proxies=settings.trusted_proxies,
        ws=LeanWebSocketProtocol,
        ws_max_size=settings.ws_max_frame_bytes,  # beyond it: close 1009
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_heartbeat_s,
        ws_ping_timeout=settings.ws_heartbeat_s,
    )
