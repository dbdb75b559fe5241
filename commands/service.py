"""The commands service: a Starlette app with the accounts and access routes, under uvicorn.

`create_app(settings, open_access, gateway_adapters)` builds a new app each call (no
module-level state) with the adapters the composition root (`parley.wiring`) hands
it; what they open lives on `app.state.access` for the app's lifetime, so more routes (the WebSocket
gateway) can be added to the app and share it. `run_commands_service` serves it on
`commands_host:commands_port` (port 0: any free port, logged).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from commands.accounts.access import Access, access_of
from commands.accounts.auth_routes import auth_routes
from commands.accounts.key_routes import key_routes
from commands.accounts.lookup import lookup_routes
from commands.accounts.me_routes import me_routes
from commands.accounts.push_routes import push_routes
from commands.gateway.assign import assign_routes
from commands.gateway.gateway import Gateway, GatewayAdapters
from commands.gateway.wire import Options, upgrade_slot
from commands.media.routes import media_routes
from commands.media.uploads import MediaUploads
from commands.web_client import web_client_routes
from infra.http import serve
from infra.metrics import metrics_routes
from infra.settings import Settings
from infra.web import AccessLog, error_handlers, error_response

log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    """Alive, not draining, and Redis answers (PostgreSQL is checked by the first request
    that needs it). The balancer routes to a gateway only while this answers 200."""
    if not request.app.state.gateway.checked():
        return error_response("draining", "this gateway is shutting down", 503)
    try:
        await access_of(request).redis.ping()
    except Exception as exc:  # any failure to reach Redis makes the service unready
        log.warning("event=healthz_failed error=%s", type(exc).__name__)
        return error_response("unavailable", "redis does not answer", 503)
    return JSONResponse({"status": "ok"})


STATUS_BY_CODE = {
    "invalid_credentials": 401,
    "invalid_token": 401,
    "token_expired": 401,
    "unknown_user": 404,
    "username_taken": 409,
    "phone_taken": 409,
    "too_large": 413,
    "rate_limited": 429,
    "bad_signature": 422,
    "prekey_pool_full": 409,
    "bad_upload": 400,
    "unknown_media": 404,
    "media_not_uploaded": 409,
    "media_not_confirmed": 409,
    "media_expired": 410,
    "media_sent": 409,
    "bad_part_number": 400,
    "too_many_parts": 413,
    "part_mismatch": 409,
    "upload_expired": 410,
    "media_too_large": 413,
    "media_type_not_allowed": 415,
    "size_mismatch": 422,
    "hash_mismatch": 422,
    "type_mismatch": 422,
    "media_bomb": 422,
    "media_too_long": 422,
    "media_unreadable": 422,
}
"""HTTP status of each error code of the service's routes; any other `DomainError` is a 400."""


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


OpenAccess = Callable[[Settings], AbstractAsyncContextManager[Access]]
"""Opens what the accounts routes work with (`parley.wiring.open_access`, or a test's)."""
NewGatewayAdapters = Callable[[Settings], GatewayAdapters]
"""Builds a gateway's id, bus and pool (`parley.wiring.gateway_adapters`, or a test's)."""


OpenMedia = Callable[[Settings], AbstractAsyncContextManager[MediaUploads]]
"""Opens the upload flow (`parley.wiring.open_media`, or a test's)."""


def create_app(
    settings: Settings,
    open_access: OpenAccess,
    gateway_adapters: NewGatewayAdapters,
    open_media: OpenMedia,
) -> Starlette:
    """The commands service's app for these settings, with the adapters handed in."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_access(settings) as access, open_media(settings) as media:
            app.state.access = access
            app.state.media = media
            gateway = Gateway(settings, access, gateway_adapters(settings))
            await gateway.start(gateway_url(settings, app))
            app.state.gateway = gateway
            collector = asyncio.create_task(media.collect_forever())
            eraser = asyncio.create_task(media.erase_forever())
            log.info("event=commands_app_started")
            try:
                yield
            finally:
                collector.cancel()
                eraser.cancel()
                await gateway.stop()
        log.info("event=commands_app_stopped")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *auth_routes(),
            *me_routes(),
            *push_routes(),
            *key_routes(),
            *media_routes(),
            *lookup_routes(),
            *assign_routes(),
            *metrics_routes(),
            *web_client_routes(settings),
        ],
        middleware=[Middleware(AccessLog, logger="commands.http")],
        exception_handlers=error_handlers(STATUS_BY_CODE, log),
        lifespan=lifespan,
    )


def gateway_url(settings: Settings, app: Starlette) -> str:
    """Where clients reach this gateway: `gateway_public_url`, or the socket it listens on
    (`app.state.listening`, set by `run_commands_service` once bound), or the settings'."""
    if settings.gateway_public_url:
        return settings.gateway_public_url
    host, port = getattr(app.state, "listening", (settings.commands_host, settings.commands_port))
    return f"ws://{host}:{port}/ws"


def run_commands_service(
    settings: Settings,
    stop: threading.Event,
    open_access: OpenAccess,
    gateway_adapters: NewGatewayAdapters,
    open_media: OpenMedia,
) -> None:
    """Serve the app until SIGTERM/SIGINT or `stop` is set; logs the bound address."""
    app = create_app(settings, open_access, gateway_adapters, open_media)

    async def drain() -> None:
        await app.state.gateway.drain()

    def listening(host: str, port: int) -> None:
        app.state.listening = (host, port)

    serve(
        app,
        "commands",
        settings.commands_host,
        settings.commands_port,
        stop,
        drain,
        trusted_proxies=settings.trusted_proxies,
        bound=listening,
        # after the drain, what is left gets this long to close
        timeout_graceful_shutdown=max(1, round(settings.gateway_drain_s)),
        # `/ws` goes to the gateway on picows (`commands.gateway.wire`), past the app
        ws=upgrade_slot(
            lambda: app.state.gateway.serve,
            Options(settings.ws_max_frame_bytes, settings.ws_heartbeat_s, settings.ws_send_queue),
        ),
    )
