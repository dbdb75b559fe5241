"""The Redis projections: recent messages per chat, each user's chat order, unread counts.

Redis is a cache here: recent messages come straight from the log (a sorted set per chat
keyed by seq, so a re-applied event changes nothing); chat order and unread counters are
copied from the PostgreSQL read model right after the batch that changed them
committed. Everything can be rebuilt: `parley replay rebuild cache`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


# One script call writes a batch's chat order and unread counts: the same ZADD GT and
# HSET as one command each, without the client's cost per command (thousands per batch
# when groups are busy). ARGV: prefix, the number of (user, chat, score) triples for
# chat order, those triples, then (user, chat, count) triples for unread. The keys are
# `chats_key` and `unread_key`, built from the prefix (one Redis, not a cluster).
_ORDER_AND_UNREAD = """
local prefix = ARGV[1]
local orders = tonumber(ARGV[2])
local i = 3
for _ = 1, orders do
  redis.call('ZADD', prefix .. 'user:' .. ARGV[i] .. ':chats', 'GT', ARGV[i + 2], ARGV[i + 1])
  i = i + 3
end
while i <= #ARGV do
  redis.call('HSET', prefix .. 'user:' .. ARGV[i] .. ':unread', ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
return orders
"""


# One script call writes a batch's recent messages: per chat, the same ZADD, trim and
# EXPIRE as one command each. ARGV: prefix, keep, TTL (0: none), then per chat: chat id,
# 1 if the set is emptied first (0 if not), n, then n (score, message) pairs.
_RECENT = """
local prefix, keep, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
while i <= #ARGV do
  local key = prefix .. 'chat:' .. ARGV[i] .. ':recent'
  local n = tonumber(ARGV[i + 2])
  if ARGV[i + 1] == '1' then redis.call('DEL', key) end
  i = i + 3
  if n > 0 then
    redis.call('ZADD', key, unpack(ARGV, i, i + 2 * n - 1))
  end
  i = i + 2 * n
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return 0
"""


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


async def active_members(
    conn: AsyncConnection[Any], chats: Iterable[UUID], schema: str = LIVE_SCHEMA
) -> dict[UUID, list[UUID]]:
    """chat -> its active members, from the read model (for the chats named)."""
    members: dict[UUID, list[UUID]] = {}
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL(
                "SELECT chat_id, user_id FROM {s}.members WHERE chat_id = ANY(%s) AND active"
            ).format(s=sql.Identifier(schema)),
            (list(chats),),
        )
        for chat_id, user_id in await cur.fetchall():
            members.setdefault(chat_id, []).append(user_id)
    return members


async def apply_cache(
    redis: aioredis.Redis,
    conn: AsyncConnection[Any],
    records: Sequence[Record],
    schema: str = LIVE_SCHEMA,
    prefix: str = PREFIX,
    recent_clock: dict[UUID, float] | None = None,
    members: dict[UUID, list[UUID]] | None = None,
) -> None:
    """Bring the Redis projections up to date with a batch PostgreSQL already holds.

    A replay passes `recent_clock` (chat -> time of its newest message, kept across
    batches): recent sets then expire on the log's clock, as they did live (a gap of more
    than `RECENT_TTL_S` between two messages empties the set), and the replay sets their
    final TTLs itself (`projections.cache_shadow.finish_recent`). `members`, when given,
    are the active members of at least the batch's chats (`active_members`).
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
    if recent:
        args: list[Any] = [prefix, RECENT_KEEP, RECENT_TTL_S if recent_clock is None else 0]
        for chat_id, messages in recent.items():
            args += (str(chat_id), int(chat_id in emptied), len(messages))
            for message, seq in messages.items():
                args += (seq, message)
        await redis.register_script(_RECENT)(args=args, client=pipe)
    s = sql.Identifier(schema)
    orders: list[Any] = []
    unread: list[Any] = []
    if active_chats:
        if members is None:
            members = await active_members(conn, active_chats, schema)
        for chat_id, when in active_chats.items():
            score = repr(when)
            for user_id in members.get(chat_id, ()):
                orders += (str(user_id), str(chat_id), score)
    async with conn.cursor() as cur:
        if unread_chats:
            await cur.execute(
                sql.SQL(
                    "SELECT user_id, chat_id, count FROM {s}.unread WHERE chat_id = ANY(%s)"
                ).format(s=s),
                (list(unread_chats),),
            )
            for user_id, chat_id, count in await cur.fetchall():
                unread += (str(user_id), str(chat_id), count)
    if orders or unread:
        script = redis.register_script(_ORDER_AND_UNREAD)
        await script(args=[prefix, len(orders) // 3, *orders, *unread], client=pipe)
    if offsets:
        pipe.hset(checkpoint_key(prefix), mapping={str(k): v for k, v in offsets.items()})
    await pipe.execute()
