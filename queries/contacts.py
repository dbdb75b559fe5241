"""`GET /v1/contacts`: the caller's contacts with their names, from the user directory.

The contacts are the caller's own list (`POST /v1/me/contacts` on the commands
service changes it, and writes the directory before it answers, so a read after that
answer sees the change). Each contact shows what their profile shows of them
(`GET /v1/users/{user_id}`): user id, username, display name. Sorted by display name.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response

from infra.auth import Identity
from projections.directory import DIRECTORY_SCHEMA
from queries.position import read_your_writes
from queries.resources import read_side_of
from queries.responses import answer

_CONTACTS = sql.SQL(
    "SELECT c.user_id, c.username, c.display_name FROM {d}.users me "
    "JOIN {d}.users c ON c.user_id = ANY(me.contacts) WHERE me.user_id = %s "
    "ORDER BY lower(c.display_name), c.username"
).format(d=sql.Identifier(DIRECTORY_SCHEMA))


async def contacts(request: Request, identity: Identity) -> Response:
    await read_your_writes(request, identity.user_id)
    async with read_side_of(request).pool.connection() as conn:
        rows = await (await conn.execute(_CONTACTS, (identity.user_id,))).fetchall()
    body: dict[str, Any] = {
        "contacts": [
            {"user_id": str(user_id), "username": username, "display_name": display_name}
            for user_id, username, display_name in rows
        ]
    }
    return answer(body)
