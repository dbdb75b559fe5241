"""Reactions counted per message, added to each message of a history page.

One reaction per user and message (`read.reactions`, kept by the messages projection):
a page's are read in one statement by (chat, seq), the table's key, and shown per
message as `[{emoji, count, mine}]`, most used first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql

from projections.schema import LIVE_SCHEMA

_COUNTS = sql.SQL(
    "SELECT seq, emoji, count(*), bool_or(user_id = %s) FROM {s}.reactions "
    "WHERE chat_id = %s AND seq = ANY(%s) GROUP BY seq, emoji"
).format(s=sql.Identifier(LIVE_SCHEMA))

Reactions = list[dict[str, Any]]


async def reactions_of(
    conn: AsyncConnection[Any], chat_id: UUID, seqs: Sequence[int], viewer: UUID
) -> dict[int, Reactions]:
    """seq -> its reactions, each emoji with its count and whether `viewer` chose it."""
    if not seqs:
        return {}
    cur = await conn.execute(_COUNTS, (viewer, chat_id, list(seqs)))
    found: dict[int, Reactions] = {}
    for seq, emoji, count, mine in await cur.fetchall():
        found.setdefault(seq, []).append({"emoji": emoji, "count": count, "mine": mine})
    for reactions in found.values():
        reactions.sort(key=lambda r: (-r["count"], r["emoji"]))
    return found
