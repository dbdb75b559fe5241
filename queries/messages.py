"""Messages as the query API shows them, read by seq from the recent cache or PostgreSQL.

The recent-messages cache (`parley:chat:<id>:recent`, a sorted set scored by seq, the
last 50 messages) answers a page when it holds every seq of the page; otherwise
PostgreSQL does. A message changes once stored only by an edit or a delete, and those
empty the chat's cached set (`projections.cache.REWRITING_KINDS`), so any message found
in the cache is the same as the row; both are turned into the same JSON here.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection, sql
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra.timestamps import utc_iso
from projections.cache import recent_key
from projections.message_view import hidden_view, message_columns, message_view, view_of_row
from projections.schema import LIVE_SCHEMA

log = logging.getLogger("parley.queries")

Message = dict[str, Any]

MESSAGE_COLUMNS = message_columns()
"""The columns `message_from_row` reads, in its order."""

_BY_SEQ = sql.SQL(
    "SELECT " + MESSAGE_COLUMNS + " FROM {s}.messages WHERE chat_id = %s AND seq = ANY(%s) "
    "ORDER BY seq"
).format(s=sql.Identifier(LIVE_SCHEMA))

message_from_row = view_of_row
"""A message from a row of `MESSAGE_COLUMNS`."""


def hidden(message: Message) -> Message:
    """A message from a user the reader blocked, as the reader is shown it: its seq (seqs
    are gapless), id and time, but neither sender nor content (`hidden_view`)."""
    return hidden_view(
        message["chat_id"], message["seq"], message["message_id"], message["sent_at"]
    )


def message_from_cache(raw: bytes) -> Message:
    """A message from its JSON in the recent cache (`projections.cache.message_json`)."""
    c = orjson.loads(raw)
    body_text = base64.b64encode(base64.b64decode(c["body"])).decode("ascii")
    sent_at = utc_iso(datetime.fromisoformat(c["sent_at"]))
    return message_view(
        c["chat_id"],
        c["seq"],
        c["message_id"],
        c["sender"],
        c["kind"],
        body_text,
        c["media"],
        sent_at,
        ref=c.get("ref"),
        quote=c.get("quote"),
        edited=c.get("edited", False),
        deleted=c.get("deleted", False),
        expires_at=c.get("expires_at"),
        forwarded=c.get("forwarded", 0),
    )


def pick_cached(raw_members: Sequence[bytes], seqs: Sequence[int]) -> list[Message] | None:
    """The messages of `seqs` among cached JSON members, or None if any is missing."""
    wanted = set(seqs)
    found: dict[int, Message] = {}
    for raw in raw_members:
        message = message_from_cache(raw)
        if message["seq"] in wanted:
            found[message["seq"]] = message
    if len(found) != len(wanted):
        return None
    return [found[seq] for seq in seqs]


async def cached_range(redis: Redis, chat_id: UUID, low: int, high: int) -> list[bytes]:
    """The cached messages with `low <= seq <= high` (none if Redis fails)."""
    try:
        members: Any = await redis.zrangebyscore(recent_key(chat_id), low, high)
    except (RedisError, OSError) as exc:
        log.warning("event=cache_unavailable chat_id=%s error=%s", chat_id, type(exc).__name__)
        return []
    return list(members)


async def likely_page(
    redis: Redis, chat_id: UUID, after: int | None, before: int | None, limit: int
) -> list[bytes]:
    """What the cache holds of the page asked for, before the membership is known: the
    `limit` oldest after `after`, or the `limit` newest before `before` (or at all).
    None if Redis fails: the database answers then."""
    top: int | str = "+inf" if before is None else before - 1
    key = recent_key(chat_id)
    try:
        if after is not None:
            forwards: Any = await redis.zrangebyscore(key, after + 1, top, start=0, num=limit)
            return list(forwards)
        backwards: Any = await redis.zrevrangebyscore(key, top, "-inf", start=0, num=limit)
    except (RedisError, OSError) as exc:
        log.warning("event=cache_unavailable chat_id=%s error=%s", chat_id, type(exc).__name__)
        return []
    return list(backwards)


async def stored_messages(
    conn: AsyncConnection[Any], chat_id: UUID, seqs: Sequence[int]
) -> list[Message]:
    """The messages of `seqs` from `read.messages`, in seq order."""
    cur = await conn.execute(_BY_SEQ, (chat_id, list(seqs)))
    return [message_from_row(chat_id, row) for row in await cur.fetchall()]
