"""The Redis projections: recent messages per chat, each user's chat order, unread counts.

Redis is a cache here: recent messages come straight from the log (a sorted set per chat
keyed by seq, so a re-applied event changes nothing); chat order and unread counters are
copied from the PostgreSQL read model as the batch that changed them left it (read in
its transaction, after its writes) and written once it committed. Everything can be
rebuilt: `parley replay rebuild cache`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from psycopg import AsyncConnection, sql

from infra.lua import Lua, execute
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
_ORDER_AND_UNREAD = Lua("""
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
""")


# One script call writes a batch's recent messages: per chat, the same ZADD, trim and
# EXPIRE as one command each. ARGV: prefix, keep, TTL (0: none), then per chat: chat id,
# 1 if the set is emptied first (0 if not), n, then n (score, message) pairs.
_RECENT = Lua("""
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
""")


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


def members_query(
    chats: Iterable[UUID], schema: str = LIVE_SCHEMA
) -> tuple[sql.Composed, tuple[list[UUID]]]:
    """The active members of `chats` as (chat_id, user_id) rows."""
    query = sql.SQL(
        "SELECT chat_id, user_id FROM {s}.members WHERE chat_id = ANY(%s) AND active"
    ).format(s=sql.Identifier(schema))
    return query, (list(chats),)


def members_by_chat(rows: Iterable[tuple[UUID, UUID]]) -> dict[UUID, list[UUID]]:
    members: dict[UUID, list[UUID]] = {}
    for chat_id, user_id in rows:
        members.setdefault(chat_id, []).append(user_id)
    return members


async def active_members(
    conn: AsyncConnection[Any], chats: Iterable[UUID], schema: str = LIVE_SCHEMA
) -> dict[UUID, list[UUID]]:
    """chat -> its active members, from the read model (for the chats named)."""
    async with conn.cursor() as cur:
        await cur.execute(*members_query(chats, schema))
        return members_by_chat(await cur.fetchall())


@dataclass
class CacheBatch:
    """What a batch changes in the Redis projections, before PostgreSQL is asked the
    members and unread counts that go with it (`plan_cache`, then `queue_cache`)."""

    recent_args: list[Any] = field(default_factory=list)  # `_RECENT`'s ARGV, or empty
    active_chats: dict[UUID, float] = field(default_factory=dict)  # chat -> last activity ms
    unread_chats: set[UUID] = field(default_factory=set)  # whose unread counts moved
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> last offset


def plan_cache(
    records: Sequence[Record],
    prefix: str = PREFIX,
    recent_clock: dict[UUID, float] | None = None,
) -> CacheBatch:
    """The recent messages, chats and offsets a batch touches (no I/O).

    A replay passes `recent_clock` (chat -> time of its newest message, kept across
    batches): recent sets then expire on the log's clock, as they did live (a gap of more
    than `RECENT_TTL_S` between two messages empties the set), and the replay sets their
    final TTLs itself (`projections.cache_shadow.finish_recent`).
    """
    plan = CacheBatch()
    # One ZADD, trim and EXPIRE per chat and batch: the same set as one per message.
    recent: dict[UUID, dict[bytes, int]] = {}
    emptied: set[UUID] = set()  # replay: a gap longer than the TTL expired the set first
    for record in records:
        e = record.envelope
        plan.offsets[record.partition] = record.offset
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
            plan.active_chats[e.chat_id] = e.timestamp.timestamp() * 1000
        if e.type in ("MessageSent", "MessagesRead", "MemberAdded", "MemberRemoved", "MemberLeft"):
            plan.unread_chats.add(e.chat_id)
    if recent:
        args: list[Any] = [prefix, RECENT_KEEP, RECENT_TTL_S if recent_clock is None else 0]
        for chat_id, messages in recent.items():
            args += (str(chat_id), int(chat_id in emptied), len(messages))
            for message, seq in messages.items():
                args += (seq, message)
        plan.recent_args = args
    return plan


def unread_query(
    chats: Iterable[UUID], schema: str = LIVE_SCHEMA
) -> tuple[sql.Composed, tuple[list[UUID]]]:
    """The unread counts of `chats` as (user_id, chat_id, count) rows."""
    query = sql.SQL("SELECT user_id, chat_id, count FROM {s}.unread WHERE chat_id = ANY(%s)")
    return query.format(s=sql.Identifier(schema)), (list(chats),)


def queue_cache(
    pipe: Any,
    plan: CacheBatch,
    members: dict[UUID, list[UUID]],
    unread_rows: Iterable[tuple[UUID, UUID, int]],
    prefix: str = PREFIX,
) -> None:
    """Queue a batch's Redis writes in `pipe`: three commands whatever its size.

    `members` are the active members of at least the batch's active chats, and
    `unread_rows` the counts of its unread chats, both read after the batch's
    PostgreSQL writes (`members_query`, `unread_query`)."""
    if plan.recent_args:
        _RECENT.queue(pipe, *plan.recent_args)
    orders: list[Any] = []
    unread: list[Any] = []
    for chat_id, when in plan.active_chats.items():
        score = repr(when)
        for user_id in members.get(chat_id, ()):
            orders += (str(user_id), str(chat_id), score)
    for user_id, chat_id, count in unread_rows:
        unread += (str(user_id), str(chat_id), count)
    if orders or unread:
        _ORDER_AND_UNREAD.queue(pipe, prefix, len(orders) // 3, *orders, *unread)
    if plan.offsets:
        pipe.hset(checkpoint_key(prefix), mapping={str(k): v for k, v in plan.offsets.items()})


async def apply_cache(
    redis: aioredis.Redis,
    conn: AsyncConnection[Any],
    records: Sequence[Record],
    schema: str = LIVE_SCHEMA,
    prefix: str = PREFIX,
    recent_clock: dict[UUID, float] | None = None,
) -> None:
    """Bring the Redis projections up to date with a batch PostgreSQL already holds,
    reading the members and unread counts it needs on `conn` (`plan_cache` says what
    `recent_clock` is for). The live workers queue the same writes in their own
    pipeline instead (`streams/workers.py`)."""
    plan = plan_cache(records, prefix, recent_clock)
    members: dict[UUID, list[UUID]] = {}
    unread_rows: list[tuple[UUID, UUID, int]] = []
    async with conn.cursor() as cur:
        if plan.active_chats:
            members = await active_members(conn, plan.active_chats, schema)
        if plan.unread_chats:
            await cur.execute(*unread_query(plan.unread_chats, schema))
            unread_rows = await cur.fetchall()
    await execute(redis, lambda pipe: queue_cache(pipe, plan, members, unread_rows, prefix))
