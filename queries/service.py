"""The queries service: the read side's HTTP API, a Starlette app under uvicorn.

`create_app(settings, open_read_side)` builds a new app each call (no module-level
state); its lifespan opens the read side with what the composition root hands it and
keeps it on `app.state.read_side`. `run_queries_service` serves it on
`queries_host:queries_port` (port 0: any free port; the bound one is logged as
`event=queries_listening`). Read-only: it reads the projections (PostgreSQL schema
`read`, Redis) and the user directory, never the event store. Routes, parameters and
answers: docs/queries.md and `/openapi.json`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from infra.http import serve
from infra.metrics import metrics_routes
from infra.settings import Settings
from infra.web import AccessLog, error_handlers
from queries.errors import BACKEND_ERRORS, STATUS_BY_CODE, backend_unavailable
from queries.health import LagGauge
from queries.resources import ReadSide
from queries.routes import routes

log = logging.getLogger("parley.queries")


OpenReadSide = Callable[[Settings], AbstractAsyncContextManager[ReadSide]]
"""Opens what the service reads with (`parley.wiring.open_read_side`, or a test's)."""


def create_app(settings: Settings, open_read_side: OpenReadSide) -> Starlette:
    """The queries service's app for these settings, reading with `open_read_side`'s."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_read_side(settings) as read_side:
            app.state.read_side = read_side
            app.state.lag_gauge = LagGauge(settings)
            log.info("event=queries_app_started")
            yield
        log.info("event=queries_app_stopped")

    return Starlette(
        routes=[*routes(), *metrics_routes()],
        middleware=[
            Middleware(AccessLog, logger="parley.queries.http", by_route=True),
            # The web client is served by the commands service: another origin reads here.
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_methods=["GET"],
                allow_headers=["Authorization", "X-Parley-Position"],
            ),
        ],
        exception_handlers=error_handlers(
            STATUS_BY_CODE, log, more=dict.fromkeys(BACKEND_ERRORS, backend_unavailable)
        ),
        lifespan=lifespan,
    )


def run_queries_service(
    settings: Settings, stop: threading.Event, open_read_side: OpenReadSide
) -> None:
    """Serve the app until SIGTERM/SIGINT or `stop` is set; logs the bound address."""
    serve(
        create_app(settings, open_read_side),
        "queries",
        settings.queries_host,
        settings.queries_port,
        stop,
        trusted_proxies=settings.trusted_proxies,
    )
