"""Reading path and query parameters: ids, seqs, page sizes and opaque cursors.

A malformed chat or user id in a path is a chat or user that does not exist (404 with
the usual body); a malformed query parameter is `bad_parameter`, a malformed cursor
`bad_cursor` (400).
"""

from __future__ import annotations

import base64
import binascii
from uuid import UUID

from starlette.requests import Request

from domain.account_errors import UnknownUser
from domain.errors import UnknownChat
from queries.errors import BadCursor, BadParameter, UnknownMessage

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_SEQ = 2**63 - 1
"""Seqs and positions are PostgreSQL bigints."""


def chat_id_param(request: Request) -> UUID:
    """The `{chat_id}` path parameter; `unknown_chat` if it cannot be a chat id."""
    try:
        return UUID(request.path_params["chat_id"])
    except ValueError:
        raise UnknownChat() from None


def user_id_param(request: Request) -> UUID:
    """The `{user_id}` path parameter; `unknown_user` if it cannot be a user id."""
    try:
        return UUID(request.path_params["user_id"])
    except ValueError:
        raise UnknownUser() from None


def seq_param(request: Request) -> int:
    """The `{seq}` path parameter; `unknown_message` if it cannot be a seq."""
    raw = request.path_params["seq"]
    if len(raw) > 19 or not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_SEQ:
        raise UnknownMessage()
    return int(raw)


def int_query(request: Request, name: str, low: int, high: int) -> int | None:
    """An optional integer query parameter within [low, high]."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    digits = raw[1:] if raw.startswith("-") else raw
    if len(raw) > 20 or not digits.isascii() or not digits.isdigit():
        raise BadParameter(f"'{name}' must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(f"'{name}' must be between {low} and {high}")
    return value


def limit_query(request: Request) -> int:
    """`limit`: a page size of 1-100, 50 when not given."""
    value = int_query(request, "limit", 1, MAX_LIMIT)
    return DEFAULT_LIMIT if value is None else value


def encode_cursor(*parts: object) -> str:
    """An opaque cursor (URL-safe) holding the keyset of the last item of a page."""
    text = "|".join(str(part) for part in parts)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(request: Request, name: str, count: int) -> list[str] | None:
    """The parts of the cursor in query parameter `name`, if given; `bad_cursor` if bad."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor() from None
    parts = text.split("|")
    if len(parts) != count:
        raise BadCursor()
    return parts


def cursor_int(part: str) -> int:
    """An integer part of a cursor."""
    try:
        value = int(part) if len(part) <= 20 else MAX_SEQ + 1
    except ValueError:
        raise BadCursor() from None
    if not -MAX_SEQ <= value <= MAX_SEQ:
        raise BadCursor()
    return value


def cursor_uuid(part: str) -> UUID:
    """A uuid part of a cursor."""
    try:
        return UUID(part)
    except ValueError:
        raise BadCursor() from None
