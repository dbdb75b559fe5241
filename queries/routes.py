"""The queries service's routes: one table, read by the app and by the OpenAPI test.

Every `/v1` route is guarded: the caller must present a valid access token, and the
query may hold only the parameters the route knows. Each handler then reads its
parameters and, if the request carries `X-Parley-Position`, waits until that chat's
projections have reached the position (`queries.position`) before reading anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.auth import Identity
from queries.caller import caller_of
from queries.chat_info import chat_info
from queries.chat_list import chat_list
from queries.contacts import contacts
from queries.errors import BadParameter, log
from queries.health import healthz, readyz
from queries.history import history
from queries.inbox import inbox
from queries.media import media_download
from queries.openapi import openapi_json
from queries.profiles import profile
from queries.receipts import receipts
from queries.resources import read_side_of
from queries.versions import versions

Handler = Callable[[Request, Identity], Awaitable[Response]]

QUERY_PARAMETERS: dict[str, tuple[str, ...]] = {
    "/v1/chats": ("limit", "cursor"),
    "/v1/chats/{chat_id}": (),
    "/v1/chats/{chat_id}/messages": ("after_seq", "before_seq", "limit"),
    "/v1/chats/{chat_id}/messages/{seq}/receipts": (),
    "/v1/chats/{chat_id}/messages/{seq}/versions": (),
    "/v1/chats/{chat_id}/media/{media_id}": (),
    "/v1/inbox": ("limit", "after"),
    "/v1/users/{user_id}": (),
    "/v1/contacts": (),
}
"""The query parameters each guarded route knows; any other is `bad_parameter`."""


def guarded(path: str, handler: Handler) -> Route:
    """The GET route of a handler behind authentication and the query parameter check;
    a read that met a dead pooled connection is tried once more (then 503)."""
    known = frozenset(QUERY_PARAMETERS[path])

    async def endpoint(request: Request) -> Response:
        identity = await caller_of(request)
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise BadParameter(f"unknown query parameter '{unknown[0][:64]}'")
        try:
            return await handler(request, identity)
        except psycopg.OperationalError as exc:
            # Pooled connections that died with their server (a restart, a failover):
            # drop every broken one, then try the read (safe to repeat) once more.
            log.info("event=read_retried route=%s error=%s", path, type(exc).__name__)
            await read_side_of(request).pool.check()
            return await handler(request, identity)

    endpoint.__name__ = handler.__name__
    return Route(path, endpoint, methods=["GET"])


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        guarded("/v1/chats", chat_list),
        guarded("/v1/chats/{chat_id}", chat_info),
        guarded("/v1/chats/{chat_id}/messages", history),
        guarded("/v1/chats/{chat_id}/messages/{seq}/receipts", receipts),
        guarded("/v1/chats/{chat_id}/messages/{seq}/versions", versions),
        guarded("/v1/chats/{chat_id}/media/{media_id}", media_download),
        guarded("/v1/inbox", inbox),
        guarded("/v1/users/{user_id}", profile),
        guarded("/v1/contacts", contacts),
    ]
