"""The Redis projections: recent messages per chat, each user's chat order, unread counts.

Redis is a cache here: recent messages come straight from the log (a sorted set per chat
keyed by seq, so a re-applied event changes nothing); chat order comes from the events'
times and the members the PostgreSQL read model holds after the batch
(`projections.chat_order`), and unread counters are copied from it as the batch that
changed them left it (read in its transaction, after its writes); both are written once
it committed. Everything can be rebuilt: `parley replay rebuild cache`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from psycopg import AsyncConnection, sql

from infra.lua import Lua, execute
from infra.timestamps import utc_iso
from projections.chat_order import ChatActivity
from projections.message_view import message_view
from projections.projector import RECEIPT_EVENTS, Record, expires_at
from projections.schema import LIVE_SCHEMA

REWRITING_KINDS = frozenset({"edit", "delete"})
"""Actions that change messages already cached (docs/projections.md)."""
RECENT_KEEP = 50
RECENT_TTL_S = 24 * 3600
PREFIX = "parley:"


# The scripts take what is small (ids, counts, scores) as one JSON argument, decoded by
# Redis's cjson: a batch's thousands of small values as separate arguments cost redis-py
# more to pack than anything else the worker does with Redis. What is large and must
# reach Redis byte for byte (a message's JSON) stays an argument of its own.

# One script call writes a batch's chat order and unread counts: the same ZADD GT and
# HSET as one command each. ARGV: prefix, then JSON {"orders": [[chat, score, [user,
# ...]], ...], "unread": [[user, chat, count], ...]}; scores are strings (exact). The
# keys are `chats_key` and `unread_key`, built from the prefix (one Redis, not a cluster).
_ORDER_AND_UNREAD = Lua("""
local prefix = ARGV[1]
local batch = cjson.decode(ARGV[2])
for _, order in ipairs(batch.orders) do
  local chat, score = order[1], order[2]
  for _, user in ipairs(order[3]) do
    redis.call('ZADD', prefix .. 'user:' .. user .. ':chats', 'GT', score, chat)
  end
end
for _, row in ipairs(batch.unread) do
  redis.call('HSET', prefix .. 'user:' .. row[1] .. ':unread', row[2], row[3])
end
return #batch.orders
""")


# One script call writes a batch's recent messages: per chat, the same ZADD, trim and
# EXPIRE as one command each. ARGV: prefix, keep, TTL (0: none), JSON [[chat, 1 if the
# set is emptied first (else 0), [seq, ...]], ...], then the messages, in that order.
_RECENT = Lua("""
local prefix, keep, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local next_message = 5
for _, chat in ipairs(cjson.decode(ARGV[4])) do
  local key = prefix .. 'chat:' .. chat[1] .. ':recent'
  if chat[2] == 1 then redis.call('DEL', key) end
  local seqs = chat[3]
  if #seqs > 0 then
    local args = {}
    for n, seq in ipairs(seqs) do
      args[2 * n - 1] = seq
      args[2 * n] = ARGV[next_message]
      next_message = next_message + 1
    end
    redis.call('ZADD', key, unpack(args))
  end
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


def message_json(
    chat_id: UUID, p: dict[str, Any], sent_at: str, ends: datetime | None = None
) -> bytes:
    """A message as the recent cache and the query API show it; `ends`: its expiry."""
    view = message_view(
        chat_id,
        p["seq"],
        p["message_id"],
        p["sender"],
        p["kind"],
        p["body"],
        p["media"],
        sent_at,
        ref=p.get("ref"),
        quote=p.get("quote"),
        expires_at=None if ends is None else utc_iso(ends),
        forwarded=p.get("forwarded", 0),
    )
    return orjson.dumps(view)


def members_query(
    chats: Iterable[UUID], schema: str = LIVE_SCHEMA
) -> tuple[sql.Composed, tuple[list[UUID]]]:
    """The active members of `chats` as (chat_id, user_id) rows."""
    query = sql.SQL(
        "SELECT chat_id, user_id FROM {s}.members WHERE chat_id = ANY(%s) AND active"
    ).format(s=sql.Identifier(schema))
    return query, (list(chats),)


def members_by_chat(rows: Iterable[tuple[UUID, UUID]]) -> dict[UUID, list[str]]:
    """chat -> its members' ids as text (what Redis and the pushes use)."""
    members: dict[UUID, list[str]] = {}
    for chat_id, user_id in rows:
        members.setdefault(chat_id, []).append(str(user_id))
    return members


async def active_members(
    conn: AsyncConnection[Any], chats: Iterable[UUID], schema: str = LIVE_SCHEMA
) -> dict[UUID, list[str]]:
    """chat -> its active members, from the read model (for the chats named)."""
    async with conn.cursor() as cur:
        await cur.execute(*members_query(chats, schema))
        return members_by_chat(await cur.fetchall())


@dataclass
class CacheBatch:
    """What a batch changes in the Redis projections, before PostgreSQL is asked the
    members and unread counts that go with it (`plan_cache`, then `queue_cache`)."""

    prefix: str = PREFIX  # of every key written
    recent_args: list[Any] = field(default_factory=list)  # `_RECENT`'s ARGV, or empty
    activity: dict[UUID, ChatActivity] = field(default_factory=dict)  # for the chat lists
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
    final TTLs itself (`projections.replay.cache_shadow.finish_recent`).
    """
    plan = CacheBatch(prefix)
    # One ZADD, trim and EXPIRE per chat and batch: the same set as one per message.
    recent: dict[UUID, dict[bytes, int]] = {}
    emptied: set[UUID] = set()  # replay: a gap longer than the TTL expired the set first
    newest: dict[UUID, int] = {}  # chat -> the newest version in the batch so far
    for record in records:
        e = record.envelope
        plan.offsets[record.partition] = record.offset
        if e.aggregate_version <= newest.get(e.chat_id, 0):
            continue  # re-published (a relay crash) after its original in this batch
        newest[e.chat_id] = e.aggregate_version
        if e.type == "MessageSent":
            if recent_clock is not None:
                at, last = e.timestamp.timestamp(), recent_clock.get(e.chat_id)
                if last is not None and at - last > RECENT_TTL_S:
                    recent[e.chat_id] = {}
                    emptied.add(e.chat_id)
                recent_clock[e.chat_id] = at if last is None else max(at, last)
            if e.payload["kind"] in REWRITING_KINDS:
                # The cached message it changes (and the edits and quotes of it) are out
                # of date: the set starts again from here; older pages come from the table.
                recent[e.chat_id] = {}
                emptied.add(e.chat_id)
            sent_at = e.timestamp.isoformat()
            message = message_json(e.chat_id, dict(e.payload), sent_at, expires_at(e))
            recent.setdefault(e.chat_id, {})[message] = e.payload["seq"]
        if e.type not in RECEIPT_EVENTS:
            plan.activity.setdefault(e.chat_id, ChatActivity()).add(e)
        if e.type in ("MessageSent", "MessagesRead", "MemberAdded", "MemberRemoved", "MemberLeft"):
            plan.unread_chats.add(e.chat_id)
    if recent:
        chats: list[Any] = []
        texts: list[bytes] = []
        for chat_id, messages in recent.items():
            chats.append((str(chat_id), int(chat_id in emptied), list(messages.values())))
            texts += messages
        ttl = RECENT_TTL_S if recent_clock is None else 0
        plan.recent_args = [prefix, RECENT_KEEP, ttl, orjson.dumps(chats), *texts]
    return plan


def unread_query(
    chats: Iterable[UUID], schema: str = LIVE_SCHEMA
) -> tuple[sql.Composed, tuple[list[UUID]]]:
    """The unread counts of `chats` as (user_id, chat_id, count) rows.

    `unread` is keyed by (user, chat), so asked by chat it is read whole. Its rows are
    reached through the chats' members instead (everyone who ever had a count there has
    a members row), one index probe each: a subquery in the select list, which the
    planner never turns into a join it could run as a scan."""
    query = sql.SQL(
        "SELECT * FROM (SELECT m.user_id, m.chat_id, (SELECT u.count FROM {s}.unread u "
        "WHERE u.user_id = m.user_id AND u.chat_id = m.chat_id) AS count "
        "FROM {s}.members m WHERE m.chat_id = ANY(%s) OFFSET 0) x WHERE count IS NOT NULL"
    )
    return query.format(s=sql.Identifier(schema)), (list(chats),)


def queue_cache(
    pipe: Any,
    plan: CacheBatch,
    members: dict[UUID, list[str]],
    unread_rows: Iterable[tuple[UUID, UUID, int]],
) -> None:
    """Queue a batch's Redis writes in `pipe`: three commands whatever its size.

    `members` are the active members of at least the batch's active chats (each
    member's score: `projections.chat_order`), and
    `unread_rows` the counts of its unread chats, both read after the batch's
    PostgreSQL writes (`members_query`, `unread_query`)."""
    if plan.recent_args:
        _RECENT.queue(pipe, *plan.recent_args)
    orders = [
        (str(chat_id), repr(when), users)
        for chat_id, activity in plan.activity.items()
        for when, users in activity.scores(members.get(chat_id, [])).items()
        if users
    ]
    unread = [(str(user_id), str(chat_id), count) for user_id, chat_id, count in unread_rows]
    if orders or unread:
        batch = orjson.dumps({"orders": orders, "unread": unread})
        _ORDER_AND_UNREAD.queue(pipe, plan.prefix, batch)
    if plan.offsets:
        offsets = {str(k): v for k, v in plan.offsets.items()}
        pipe.hset(checkpoint_key(plan.prefix), mapping=offsets)


async def apply_cache(
    redis: aioredis.Redis,
    conn: AsyncConnection[Any],
    records: Sequence[Record],
    schema: str = LIVE_SCHEMA,
    prefix: str = PREFIX,
    recent_clock: dict[UUID, float] | None = None,
    move_checkpoints: bool = True,
) -> None:
    """Bring the Redis projections up to date with a batch PostgreSQL already holds,
    reading the members and unread counts it needs on `conn` (`plan_cache` says what
    `recent_clock` is for). The live workers queue the same writes in their own
    pipeline instead (`streams/workers.py`). A heal, behind the live batches, leaves
    the checkpoints where they are (`move_checkpoints=False`)."""
    plan = plan_cache(records, prefix, recent_clock)
    if not move_checkpoints:
        plan.offsets.clear()
    members: dict[UUID, list[str]] = {}
    unread_rows: list[tuple[UUID, UUID, int]] = []
    async with conn.cursor() as cur:
        if plan.activity:
            members = await active_members(conn, plan.activity, schema)
        if plan.unread_chats:
            await cur.execute(*unread_query(plan.unread_chats, schema))
            unread_rows = await cur.fetchall()
    await execute(redis, lambda pipe: queue_cache(pipe, plan, members, unread_rows))
