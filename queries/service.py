"""The queries service: the read side's HTTP API, a Starlette app under uvicorn.

`create_app(settings)` builds a new app each call (no module-level state); its lifespan
opens the read side (`queries.resources`) and keeps it on `app.state.read_side`.
`run_queries_service` serves it on `queries_host:queries_port` (port 0: any free port;
the bound one is logged as `event=queries_listening`). Read-only: it reads the
projections (PostgreSQL schema `read`, Redis) and the user directory, never the event
store. Routes, parameters and answers: docs/queries.md and `/openapi.json`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from domain.errors import DomainError
from infra.http import serve
from infra.settings import Settings
from queries.access_log import AccessLog
from queries.errors import (
    BACKEND_ERRORS,
    backend_unavailable,
    domain_error,
    http_error,
    internal_error,
)
from queries.health import LagGauge
from queries.resources import open_read_side
from queries.routes import routes

log = logging.getLogger("parley.queries")


def create_app(settings: Settings) -> Starlette:
    """The queries service's app for these settings."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_read_side(settings) as read_side:
            app.state.read_side = read_side
            app.state.lag_gauge = LagGauge(settings)
            log.info("event=queries_app_started")
            yield
        log.info("event=queries_app_stopped")

    return Starlette(
        routes=routes(),
        middleware=[
            Middleware(AccessLog),
            # The web client is served by the commands service: another origin reads here.
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_methods=["GET"],
                allow_headers=["Authorization", "X-Parley-Position"],
            ),
        ],
        exception_handlers={
            DomainError: domain_error,
            HTTPException: http_error,
            **dict.fromkeys(BACKEND_ERRORS, backend_unavailable),
            Exception: internal_error,
        },
        lifespan=lifespan,
    )


def run_queries_service(settings: Settings, stop: threading.Event) -> None:
    """Serve the app until SIGTERM/SIGINT or `stop` is set; logs the bound address."""
    serve(
        create_app(settings),
        "queries",
        settings.queries_host,
        settings.queries_port,
        stop,
        trusted_proxies=settings.trusted_proxies,
    )
