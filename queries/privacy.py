"""Users' privacy settings, contacts and blocks, from the user directory read table.

`projections.directory` keeps `directory.users` up to date from the accounts store; a user
with no row there (never registered through the accounts service) has the defaults:
last seen shown to everyone, no contacts, no blocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql

from domain.visibility import LastSeenPrivacy, Privacy
from projections.directory import DIRECTORY_SCHEMA

_PRIVACY = sql.SQL(
    "SELECT user_id, last_seen_privacy, contacts, blocks FROM {d}.users WHERE user_id = ANY(%s)"
).format(d=sql.Identifier(DIRECTORY_SCHEMA))

# What matters for receipts between one viewer and many readers: only blocks between
# them, without loading every reader's whole block list.
_BLOCKS_BETWEEN = sql.SQL(
    "SELECT user_id, ARRAY(SELECT unnest(blocks) INTERSECT SELECT unnest(%(others)s::uuid[])) "
    "FROM {d}.users WHERE user_id = %(viewer)s "
    "UNION ALL "
    "SELECT user_id, CASE WHEN %(viewer)s = ANY(blocks) THEN ARRAY[%(viewer)s::uuid] "
    "ELSE '{{}}'::uuid[] END FROM {d}.users WHERE user_id = ANY(%(others)s::uuid[])"
).format(d=sql.Identifier(DIRECTORY_SCHEMA))

_BLOCKED_BY = sql.SQL("SELECT blocks FROM {d}.users WHERE user_id = %s").format(
    d=sql.Identifier(DIRECTORY_SCHEMA)
)


async def blocked_by(conn: AsyncConnection[Any], user_id: UUID) -> frozenset[UUID]:
    """The users `user_id` blocked."""
    row = await (await conn.execute(_BLOCKED_BY, (user_id,))).fetchone()
    return frozenset(row[0]) if row is not None else frozenset()


async def privacy_of(conn: AsyncConnection[Any], user_ids: Iterable[UUID]) -> dict[UUID, Privacy]:
    """Each user's full `Privacy` (defaults for users without a directory row)."""
    ids = list(dict.fromkeys(user_ids))
    cur = await conn.execute(_PRIVACY, (ids,))
    found = {
        row[0]: Privacy(row[0], LastSeenPrivacy(row[1]), frozenset(row[2]), frozenset(row[3]))
        for row in await cur.fetchall()
    }
    return {user_id: found.get(user_id, Privacy(user_id)) for user_id in ids}


async def blocks_between(
    conn: AsyncConnection[Any], viewer: UUID, others: Iterable[UUID]
) -> dict[UUID, Privacy]:
    """`Privacy` of the viewer and of each other user holding only the blocks among
    them: enough for `domain.visibility.can_see_receipts` and `blocked_either_way`."""
    ids = [user_id for user_id in dict.fromkeys(others) if user_id != viewer]
    cur = await conn.execute(_BLOCKS_BETWEEN, {"viewer": viewer, "others": ids})
    found = {row[0]: Privacy(row[0], blocked=frozenset(row[1])) for row in await cur.fetchall()}
    return {user_id: found.get(user_id, Privacy(user_id)) for user_id in [viewer, *ids]}
