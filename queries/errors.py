"""Errors a caller of the queries service can cause, their stable codes and HTTP statuses.

Every error answers `{"error": {"code": ..., "message": ...}}`. A chat (or message) the
caller may not see answers exactly like one that does not exist: same status, same body.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import PoolTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response

from domain.errors import DomainError
from infra.web import error_response

log = logging.getLogger("parley.queries")

STATUS_BY_CODE = {
    "invalid_token": 401,
    "token_expired": 401,
    "not_sender": 403,
    "unknown_chat": 404,
    "unknown_message": 404,
    "unknown_media": 404,
    "unknown_user": 404,
    "media_expired": 410,
    "not_yet_projected": 425,
}
"""HTTP status of each error code; any other `DomainError` (bad_parameter, ...) is a 400."""


class BadParameter(DomainError):
    """A query or path parameter of the wrong type or out of its range."""

    code = "bad_parameter"
    default_message = "a parameter is malformed or out of range"


class BadCursor(DomainError):
    """A pagination cursor this service did not hand out."""

    code = "bad_cursor"
    default_message = "the cursor is malformed"


class BadPosition(DomainError):
    """An `X-Parley-Position` header that is not `<chat_id>:<position>`."""

    code = "bad_position"
    default_message = "X-Parley-Position must be '<chat_id>:<position>'"


class NotYetProjected(DomainError):
    """The read model had not reached the requested position by the deadline."""

    code = "not_yet_projected"
    default_message = "the read model has not caught up with that position yet; retry"


class UnknownMessage(DomainError):
    """No message with this seq that the caller may see."""

    code = "unknown_message"
    default_message = "no such message"


class NotSender(DomainError):
    """Receipts of a message are shown to its sender only."""

    code = "not_sender"
    default_message = "only the sender of a message sees its receipts"


BACKEND_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    PoolTimeout,
    RedisConnectionError,
    RedisTimeoutError,
)
"""PostgreSQL or Redis cannot be reached (down, restarting, overloaded): 503, retry."""


async def backend_unavailable(request: Request, exc: Exception) -> Response:
    """PostgreSQL or Redis failed under a request: logged by type, answered 503."""
    log.warning("event=backend_unavailable path=%s error=%s", request.url.path, type(exc).__name__)
    return error_response(
        "unavailable", "the read model cannot be reached; retry", 503, **{"Retry-After": "1"}
    )
