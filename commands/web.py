"""JSON over HTTP for the commands service: bodies read with a size limit, typed errors
answered as `{"error": {"code", "message"}}` with their HTTP status, one log line a request.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any
from uuid import UUID

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.account_errors import RateLimited
from domain.errors import DomainError, TooLarge
from infra.json_bounds import MAX_JSON_DEPTH, JsonTooDeep, loads_bounded

log = logging.getLogger("commands.http")

STATUS_BY_CODE = {
    "invalid_credentials": 401,
    "invalid_token": 401,
    "token_expired": 401,
    "unknown_user": 404,
    "username_taken": 409,
    "phone_taken": 409,
    "too_large": 413,
    "rate_limited": 429,
    "bad_upload": 400,
    "unknown_media": 404,
    "media_not_uploaded": 409,
    "media_not_confirmed": 409,
    "media_too_large": 413,
    "media_type_not_allowed": 415,
    "size_mismatch": 422,
    "hash_mismatch": 422,
    "type_mismatch": 422,
    "media_bomb": 422,
    "media_too_long": 422,
    "media_unreadable": 422,
}
"""HTTP status of each error code; any other `DomainError` is a 400."""


class BadRequest(DomainError):
    """A body that is not a JSON object, or a field missing or of the wrong type."""

    code = "bad_request"
    default_message = "the request body is malformed"


def error_response(code: str, message: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def domain_error(request: Request, exc: Exception) -> Response:
    """The answer to a typed error a user caused."""
    assert isinstance(exc, DomainError)
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return error_response(exc.code, exc.message, STATUS_BY_CODE.get(exc.code, 400), **headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(codes.get(exc.status_code, "http_error"), exc.detail, exc.status_code)


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
    """One structured line per HTTP request: method, path, status, time, user if known."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            user_id = scope.get("state", {}).get("user_id", "-")
            log.info(
                "event=http_request method=%s path=%s status=%d ms=%.1f user_id=%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                user_id,
            )
