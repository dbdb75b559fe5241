"""The Redis projections: recent messages per chat, each user's chat order, unread counts.

Redis is a cache here: recent messages come straight from the log (a sorted set per chat
keyed by seq, so a re-applied event changes nothing); chat order and unread counters are
copied from the PostgreSQL read model right after the batch that changed them
committed. Everything can be rebuilt: `parley replay rebuild cache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from psycopg import AsyncConnection, sql

from projections.projector import RECEIPT_EVENTS, Record
from projections.schema import LIVE_SCHEMA

RECENT_KEEP = 50
RECENT_TTL_S = 24 * 3600
PREFIX = "parley:"


def recent_key(chat_id: UUID, prefix: str = PREFIX) -> str:
    return f"{prefix}chat:{chat_id}:recent"


def chats_key(user_id: UUID, prefix: str = PREFIX) -> str:
    return f"{prefix}user:{user_id}:chats"


def unread_key(user_id: UUID, prefix: str = PREFIX) -> str:
    return f"{prefix}user:{user_id}:unread"


def checkpoint_key(prefix: str = PREFIX) -> str:
    return f"{prefix}proj:cache:checkpoints"


def message_json(chat_id: UUID, p: dict[str, Any], sent_at: str) -> bytes:
    """A message as the recent cache and the query API show it."""
    return orjson.dumps(
        {
            "chat_id": str(chat_id),
            "seq": p["seq"],
            "message_id": str(p["message_id"]),
            "sender": p["sender"],
            "kind": p["kind"],
            "body": p["body"],
            "media": p["media"],
            "sent_at": sent_at,
        }
    )


async def apply_cache(
    redis: aioredis.Redis,
    conn: AsyncConnection[Any],
    records: Sequence[Record],
    schema: str = LIVE_SCHEMA,
    prefix: str = PREFIX,
    recent_clock: dict[UUID, float] | None = None,
) -> None:
    """Bring the Redis projections up to date with a batch PostgreSQL already holds.

    A replay passes `recent_clock` (chat -> time of its newest message, kept across
    batches): recent sets then expire on the log's clock, as they did live (a gap of more
    than `RECENT_TTL_S` between two messages empties the set), and the replay sets their
    final TTLs itself (`projections.cache_shadow.finish_recent`).
    """
    pipe = redis.pipeline(transaction=True)
    active_chats: dict[UUID, float] = {}
    unread_chats: set[UUID] = set()
    offsets: dict[int, int] = {}
    # One ZADD, trim and EXPIRE per chat and batch: the same set as one per message.
    recent: dict[UUID, dict[bytes, int]] = {}
    emptied: set[UUID] = set()  # replay: a gap longer than the TTL expired the set first
    for record in records:
        e = record.envelope
        offsets[record.partition] = record.offset
        if e.type == "MessageSent":
            if recent_clock is not None:
                at, last = e.timestamp.timestamp(), recent_clock.get(e.chat_id)
                if last is not None and at - last > RECENT_TTL_S:
                    recent[e.chat_id] = {}
                    emptied.add(e.chat_id)
                recent_clock[e.chat_id] = at if last is None else max(at, last)
            sent_at = e.timestamp.isoformat()
            message = message_json(e.chat_id, dict(e.payload), sent_at)
            recent.setdefault(e.chat_id, {})[message] = e.payload["seq"]
        if e.type not in RECEIPT_EVENTS:
            active_chats[e.chat_id] = e.timestamp.timestamp() * 1000
        if e.type in ("MessageSent", "MessagesRead", "MemberAdded", "MemberRemoved", "MemberLeft"):
            unread_chats.add(e.chat_id)
    for chat_id, messages in recent.items():
        key = recent_key(chat_id, prefix)
        if chat_id in emptied:
            pipe.delete(key)
        pipe.zadd(key, messages)
        pipe.zremrangebyrank(key, 0, -(RECENT_KEEP + 1))
        if recent_clock is None:
            pipe.expire(key, RECENT_TTL_S)
    s = sql.Identifier(schema)
    async with conn.cursor() as cur:
        if active_chats:
            await cur.execute(
                sql.SQL(
                    "SELECT chat_id, user_id FROM {s}.members WHERE chat_id = ANY(%s) AND active"
                ).format(s=s),
                (list(active_chats),),
            )
            for chat_id, user_id in await cur.fetchall():
                pipe.zadd(
                    chats_key(user_id, prefix), {str(chat_id): active_chats[chat_id]}, gt=True
                )
        if unread_chats:
            await cur.execute(
                sql.SQL(
                    "SELECT user_id, chat_id, count FROM {s}.unread WHERE chat_id = ANY(%s)"
                ).format(s=s),
                (list(unread_chats),),
            )
            for user_id, chat_id, count in await cur.fetchall():
                pipe.hset(unread_key(user_id, prefix), str(chat_id), count)
    if offsets:
        pipe.hset(checkpoint_key(prefix), mapping={str(k): v for k, v in offsets.items()})
    await pipe.execute()
