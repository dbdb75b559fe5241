"""`GET /v1/users/{user_id}`: a user's profile and, if the caller may see it, last seen.

The profile (username, display name, about) comes from the user directory read table
(`projections.directory`). Last seen is the Redis key `parley:user:<id>:last_seen` (unix
ms, stamped by the gateway), or when it has expired the time the gateway stored at the
user's last disconnect (table `last_seen`, if that table exists); the user is online
while `parley:presence:<id>` exists. Both are shown only when
`domain.visibility.can_see_last_seen(viewer, owner)` allows (privacy settings, contacts,
blocks either way); otherwise they are null, the same as for a user never seen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, sql
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from domain.account_errors import UnknownUser
from domain.visibility import can_see_last_seen
from infra.auth import Identity
from infra.routing import last_seen_key, presence_key
from projections.directory import DIRECTORY_SCHEMA
from queries.errors import log
from queries.params import user_id_param
from queries.position import read_your_writes
from queries.privacy import privacy_of
from queries.resources import ReadSide, read_side_of
from queries.responses import answer

_PROFILE = sql.SQL("SELECT username, display_name, about FROM {d}.users WHERE user_id = %s").format(
    d=sql.Identifier(DIRECTORY_SCHEMA)
)
_STORED_LAST_SEEN = "SELECT at FROM last_seen WHERE user_id = %s"


async def _stored_last_seen(conn: AsyncConnection[Any], user_id: UUID) -> int | None:
    """Last seen as the gateway stored it at the last disconnect, if it did."""
    try:
        row = await (await conn.execute(_STORED_LAST_SEEN, (user_id,))).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    if row is None:
        return None
    at: datetime = row[0]
    return int(at.astimezone(UTC).timestamp() * 1000)


async def _presence(read_side: ReadSide, user_id: UUID) -> tuple[int | None, bool]:
    """(last seen in unix ms or None, online) from Redis."""
    try:
        pipe = read_side.redis.pipeline(transaction=False)
        pipe.get(last_seen_key(user_id))
        pipe.exists(presence_key(user_id))
        seen, online = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("event=presence_unavailable user_id=%s error=%s", user_id, type(exc).__name__)
        return None, False
    try:
        return (int(seen) if seen is not None else None), bool(online)
    except ValueError:
        return None, bool(online)


async def profile(request: Request, identity: Identity) -> Response:
    user_id = user_id_param(request)
    await read_your_writes(request, identity.user_id)
    read_side = read_side_of(request)
    async with read_side.pool.connection() as conn:
        row = await (await conn.execute(_PROFILE, (user_id,))).fetchone()
        if row is None:
            raise UnknownUser()
        privacy = await privacy_of(conn, [identity.user_id, user_id])
        visible = can_see_last_seen(privacy[identity.user_id], privacy[user_id])
        last_seen, online = None, False
        if visible:
            last_seen, online = await _presence(read_side, user_id)
            if last_seen is None:
                last_seen = await _stored_last_seen(conn, user_id)
    username, display_name, about = row
    body: dict[str, Any] = {
        "user_id": str(user_id),
        "username": username,
        "display_name": display_name,
        "about": about,
        "last_seen": last_seen if visible else None,
        "online": online if visible else None,
    }
    return answer(body)
