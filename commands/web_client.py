"""The web client's routes: its page at `/`, its files under `/web/`, its settings.

The client itself is plain HTML, CSS and ES modules in `commands/static/` (no build
step). It speaks only the documented protocol and HTTP APIs; the one thing it learns
from the server is where the query API is (`/web/config.json`), since that is a
setting, not something a page can guess.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from infra.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"


class _Revalidated(StaticFiles):
    """Static files that browsers check for changes on every load (they are small)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def web_client_routes(settings: Settings) -> list[BaseRoute]:
    """`/` (the page), `/sw.js` (its service worker), `/web/config.json` and `/web/*`
    (its modules and styles)."""

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def service_worker(request: Request) -> FileResponse:
        # At the root, so that its scope is the whole app (docs/push.md).
        return FileResponse(
            STATIC / "sw.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    async def config(request: Request) -> JSONResponse:
        return JSONResponse({"queries_url": queries_url(settings)})

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/sw.js", service_worker, methods=["GET"]),
        Route("/web/config.json", config, methods=["GET"]),
        Mount("/web", _Revalidated(directory=STATIC), name="web"),
    ]


def queries_url(settings: Settings) -> str:
    """Where browsers reach the query API (the queries service's address in the settings)."""
    host = "127.0.0.1" if settings.queries_host in ("0.0.0.0", "") else settings.queries_host
    return f"http://{host}:{settings.queries_port}"
