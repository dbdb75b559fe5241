"""Disappearing messages: erase from the read model and the cache what has expired.

A message sent while its chat's timer was on has `expires_at` (its time plus the timer,
set by the messages projection). `erase_expired` turns every message whose time is up
into the tombstone a delete leaves (`Projector._on_delete`: no body, media or quote;
its edits and reactions lose their text, its versions and reactions go, replies show
their quote deleted) and empties the recent-messages cache of their chats. The workers
run it every `PARLEY_MESSAGE_EXPIRY_INTERVAL_S`, then erase the keys of what the event
log keeps of those messages (`infra.message_keys`, by their own `expires_at`). The
state both work from is in the tables, so a restart (or a rebuild, which projects
expired messages again) loses nothing, and an expired message is erased at most one
interval after its time. Clients and the query
API hide it from its time on (`expired`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from psycopg import AsyncConnection, sql

from projections.cache import PREFIX, recent_key
from projections.schema import LIVE_SCHEMA

_ERASE = (
    # The expired messages become tombstones; the rest follows from their (chat, seq).
    "WITH gone AS (UPDATE {s}.messages SET body = '', media = NULL, quote = NULL, "
    "  edited_at = NULL, deleted_at = expires_at "
    "  WHERE expires_at <= %(now)s AND deleted_at IS NULL RETURNING chat_id, seq), "
    "edits AS (UPDATE {s}.messages m SET body = '' FROM gone "
    "  WHERE m.chat_id = gone.chat_id AND m.ref = gone.seq AND m.kind IN ('edit', 'reaction')), "
    "quotes AS (UPDATE {s}.messages m "
    "  SET quote = jsonb_build_object('seq', gone.seq, 'deleted', true) FROM gone "
    "  WHERE m.chat_id = gone.chat_id AND m.ref = gone.seq "
    "  AND m.kind NOT IN ('reaction', 'edit', 'delete', 'timer')), "
    "versions AS (DELETE FROM {s}.message_versions v USING gone "
    "  WHERE v.chat_id = gone.chat_id AND v.seq = gone.seq), "
    "reactions AS (DELETE FROM {s}.reactions r USING gone "
    "  WHERE r.chat_id = gone.chat_id AND r.seq = gone.seq) "
    "SELECT chat_id, seq FROM gone"
)


def expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether a message's time is up (it then shows as deleted, whatever the table holds)."""
    return expires_at is not None and expires_at <= now


async def erase_expired(
    conn: AsyncConnection[Any],
    redis: aioredis.Redis,
    now: datetime,
    schema: str = LIVE_SCHEMA,
    prefix: str = PREFIX,
) -> list[tuple[UUID, int]]:
    """Erase the messages expired at `now`; return their (chat, seq)."""
    async with conn.transaction():
        cur = await conn.execute(sql.SQL(_ERASE).format(s=sql.Identifier(schema)), {"now": now})
        gone: list[tuple[UUID, int]] = list(await cur.fetchall())
    chats = {chat_id for chat_id, _ in gone}
    if chats:
        await redis.delete(*(recent_key(chat_id, prefix) for chat_id in chats))
    return gone
