"""JSON over HTTP for both services: typed errors answered as `{"error": {"code",
"message"}}` with their HTTP status, one log line a request, bodies read with a limit.

Each service passes its own map of error code to status (`error_handlers`); everything
else (the JSON shape, the headers, the log lines) is the same for both.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.account_errors import InvalidToken, RateLimited
from domain.errors import DomainError, TooLarge
from infra.auth import Identity, Tokens
from infra.json_bounds import MAX_JSON_DEPTH, JsonTooDeep, loads_bounded
from infra.metrics import HTTP_ERRORS, HTTP_REQUESTS, HTTP_SECONDS

Handler = Callable[[Request, Exception], Awaitable[Response]]


class BadRequest(DomainError):
    """A body that is not a JSON object, or a field missing or of the wrong type."""

    code = "bad_request"
    default_message = "the request body is malformed"


def error_response(code: str, message: str, status: int, **headers: str) -> JSONResponse:
    HTTP_ERRORS.inc(code)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def error_handlers(
    status_by_code: Mapping[str, int],
    log: logging.Logger,
    *,
    more: Mapping[type[Exception], Handler] | None = None,
) -> dict[Any, Handler]:
    """A service's exception handlers: typed errors (`DomainError`, any other is a 400),
    Starlette's own (unknown route, wrong method), `more` of the service's, and anything
    unexpected (logged by type only, answered 500 without details)."""

    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        status = status_by_code.get(exc.code, 400)
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        elif status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif status == 425:
            headers["Retry-After"] = "1"
        return error_response(exc.code, exc.message, status, **headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return error_response(code, exc.detail, exc.status_code, **(exc.headers or {}))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("event=internal_error path=%s error=%s", request.url.path, type(exc).__name__)
        return error_response("internal", "internal error", 500)

    return {
        DomainError: domain_error,
        HTTPException: http_error,
        **(more or {}),
        Exception: internal_error,
    }


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object body; `too_large` beyond `max_bytes`, else `bad_request`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"a request body has at most {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise TooLarge(f"a request body has at most {max_bytes} bytes")
    return parse_json_object(bytes(body))


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; `bad_request` if it is not one (not JSON, not
    UTF-8, nested deeper than `MAX_JSON_DEPTH`, or not an object)."""
    try:
        value = loads_bounded(body)
    except JsonTooDeep:
        raise BadRequest(f"the body nests at most {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def text_field(body: dict[str, Any], name: str, default: str | None = None) -> str:
    """A string field; `bad_request` if missing (with no default) or not a string."""
    value = body.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string")
    return value


def optional_text(body: dict[str, Any], name: str) -> str | None:
    if body.get(name) is None:
        return None
    return text_field(body, name)


def bool_field(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value


def choice_field(body: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = text_field(body, name)
    if value not in choices:
        raise BadRequest(f"'{name}' must be one of {', '.join(choices)}")
    return value


def uuid_field(body: dict[str, Any], name: str) -> UUID:
    try:
        return UUID(text_field(body, name))
    except ValueError:
        raise BadRequest(f"'{name}' must be a user id") from None


class AccessLog:
    """One structured line per HTTP request, never a body or a query string.

    `event=http_request method=GET path=/v1/me status=200 ms=1.4 user_id=<uuid>`; with
    `by_route`, the route template instead of the path (ids stay out of it; the user id
    is logged on its own) and the read source and wait the queries service reports:
    `route=/v1/chats/{chat_id}/messages ... source=cache waited_ms=-`.
    """

    def __init__(self, app: ASGIApp, logger: str = "parley.http", by_route: bool = False) -> None:
        self.app = app
        self.log = logging.getLogger(logger)
        self.by_route = by_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        source = "-"

        async def send_status(message: Message) -> None:
            nonlocal status, source
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name == b"x-parley-read-source":
                        source = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = (time.perf_counter() - started) * 1000
            HTTP_REQUESTS.inc(str(status))
            HTTP_SECONDS.observe(ms / 1000)
            state = scope.get("state", {})
            user_id = state.get("user_id", "-")
            if self.by_route:
                self.log.info(
                    "event=http_request method=%s route=%s status=%d ms=%.1f user_id=%s "
                    "source=%s waited_ms=%s",
                    scope["method"],
                    getattr(scope.get("route"), "path", "-"),
                    status,
                    ms,
                    user_id,
                    source,
                    state.get("waited_ms", "-"),
                )
            else:
                self.log.info(
                    "event=http_request method=%s path=%s status=%d ms=%.1f user_id=%s",
                    scope["method"],
                    scope["path"],
                    status,
                    ms,
                    user_id,
                )


async def authenticated_caller(conn: HTTPConnection, tokens: Tokens) -> Identity:
    """The caller of a request or WebSocket carrying `Authorization: Bearer <access token>`,
    checked with `tokens`; their id is kept for the access log.

    Raises `invalid_token` (missing, malformed, forged or logged out) or `token_expired`.
    """
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("send 'Authorization: Bearer <access token>'")
    identity = await tokens.authenticate(token.strip())
    conn.state.user_id = str(identity.user_id)
    return identity
