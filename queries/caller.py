"""Who is asking: the Bearer access token of a request, checked with `infra.auth.Tokens`."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from infra.auth import Identity
from infra.web import authenticated_caller
from queries.resources import read_side_of


async def caller_of(conn: HTTPConnection) -> Identity:
    """The caller of a request (`infra.web.authenticated_caller`)."""
    return await authenticated_caller(conn, read_side_of(conn).tokens)
