"""Who is asking: the Bearer access token of a request, checked with `infra.auth.Tokens`."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from domain.account_errors import InvalidToken
from infra.auth import Identity
from queries.resources import read_side_of


async def caller_of(conn: HTTPConnection) -> Identity:
    """The caller of a request carrying `Authorization: Bearer <access token>`.

    Raises `invalid_token` (missing, malformed, forged or logged out) or `token_expired`.
    """
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("send 'Authorization: Bearer <access token>'")
    identity = await read_side_of(conn).tokens.authenticate(token.strip())
    conn.state.user_id = str(identity.user_id)
    return identity
