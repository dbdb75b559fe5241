"""`GET /v1/chats`: the caller's chats, most recent activity first, in pages.

Each chat: kind, name, the other user of a 1:1 chat, whether the caller is still a
member, the last message the caller may see (the last that is no reaction, edit or
delete, with whether it was edited or deleted since), the last activity and the unread
count.
A former member's chat shows what they saw: its last message is the last one before
they left, and its activity is that message's time (or when they joined, if none), so
nothing that happened after they left shows through.

The order comes from Redis (`parley:user:<id>:chats`, scored by last activity) when it
is warm: the cache names the candidates of the page, PostgreSQL fills in their details
in one round trip (primary-key lookups instead of sorting every chat of the user), and
adds the chats the user has left, whose place the cache does not give (their score
stops at the chat's last activity before they left, `projections.chat_order`; here they
are placed at the last message they saw). The cache is cold, and PostgreSQL sorts,
when the key is missing, when it holds fewer chats than the user is currently in (a
Redis that lost data and was partly refilled since), or when the candidates it named
cannot prove the page complete. Both paths give the same answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from infra.auth import Identity
from infra.timestamps import utc_iso
from projections.cache import chats_key
from projections.expiry import expired
from projections.schema import LIVE_SCHEMA
from queries.errors import BadCursor, log
from queries.params import cursor_int, cursor_uuid, decode_cursor, encode_cursor, limit_query
from queries.position import read_your_writes
from queries.resources import ReadSide, read_side_of
from queries.responses import answer

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW_SLACK = 16
"""Extra cache entries asked for beyond a page, for former-member chats among them."""
SCORE_SLACK_MS = 0.002
"""Scores are event times in ms as doubles (exact to well under a microsecond); the read
model has microseconds. Comparisons between the two allow this much."""

_PAGE = """
WITH mine AS (
  SELECT m.chat_id, m.active, m.role, m.joined_at, c.kind, c.name, c.last_activity_at,
         c.last_message_seq,
         (SELECT max(least(coalesce(h.left_at_seq, c.last_seq), c.last_seq))
          FROM {s}.membership_history h
          WHERE h.chat_id = m.chat_id AND h.user_id = m.user_id
            AND least(coalesce(h.left_at_seq, c.last_seq), c.last_seq) > h.joined_after_seq
         ) AS seq
  FROM {s}.members m JOIN {s}.chats c ON c.chat_id = m.chat_id
  WHERE m.user_id = %(user)s AND {which}
), ordered AS (
  SELECT mine.*,
         CASE WHEN active THEN last_activity_at
              ELSE coalesce((SELECT sent_at FROM {s}.messages x
                             WHERE x.chat_id = mine.chat_id AND x.seq = mine.seq), joined_at)
         END AS activity
  FROM mine
), page AS (
  SELECT * FROM ordered {after} ORDER BY activity DESC, chat_id DESC LIMIT %(n)s
)
SELECT p.chat_id, p.kind, p.name, p.active, p.role,
       shown.seq, msg.message_id, msg.sender, msg.sent_at, p.activity,
       coalesce(u.count, 0),
       CASE WHEN p.kind = 'direct' THEN (
         SELECT o.user_id FROM {s}.members o
         WHERE o.chat_id = p.chat_id AND o.user_id <> %(user)s LIMIT 1) END,
       msg.kind, msg.edited_at, msg.deleted_at, msg.expires_at
FROM page p
LEFT JOIN LATERAL (
  SELECT max(v.seq) AS seq FROM (
    SELECT CASE WHEN h.left_at_seq IS NULL THEN p.last_message_seq
                ELSE h.left_at_message_seq END AS seq, h.joined_after_seq
    FROM {s}.membership_history h WHERE h.chat_id = p.chat_id AND h.user_id = %(user)s) v
  WHERE v.seq > v.joined_after_seq
) shown ON true
LEFT JOIN {s}.messages msg ON msg.chat_id = p.chat_id AND msg.seq = shown.seq
LEFT JOIN {s}.unread u ON u.user_id = %(user)s AND u.chat_id = p.chat_id
ORDER BY p.activity DESC, p.chat_id DESC
"""
"""One page of the user's chats (`which` narrows the memberships considered). `seq` is
the last seq the user saw (a former member's activity is its time). The page's rows
then get their last message: the last the user saw that is no reaction, edit or delete
(`chats.last_message_seq` while a member, its value when they left otherwise:
`membership_history.left_at_message_seq`), and its details."""


def _page_sql(which: str, after_cursor: bool) -> sql.Composed:
    after = "WHERE (activity, chat_id) < (%(at)s, %(chat)s)" if after_cursor else ""
    return sql.SQL(_PAGE).format(
        s=sql.Identifier(LIVE_SCHEMA), which=sql.SQL(which), after=sql.SQL(after)
    )


_ALL = {c: _page_sql("true", c) for c in (False, True)}
_CANDIDATES = {
    c: _page_sql("(m.chat_id = ANY(%(ids)s::uuid[]) OR NOT m.active)", c) for c in (False, True)
}
_ACTIVE = sql.SQL("SELECT count(*) FROM {s}.members WHERE user_id = %s AND active").format(
    s=sql.Identifier(LIVE_SCHEMA)
)

Cursor = tuple[datetime, UUID]


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _cursor(request: Request) -> Cursor | None:
    parts = decode_cursor(request, "cursor", 2)
    if parts is None:
        return None
    at = cursor_int(parts[0])
    try:
        return EPOCH + timedelta(microseconds=at), cursor_uuid(parts[1])
    except OverflowError:
        raise BadCursor() from None


def _params(user_id: UUID, cursor: Cursor | None, n: int, **extra: Any) -> dict[str, Any]:
    at, chat = cursor if cursor is not None else (EPOCH, user_id)
    return {"user": user_id, "at": at, "chat": chat, "n": n, **extra}


async def _from_database(
    conn: AsyncConnection[Any], user_id: UUID, cursor: Cursor | None, n: int
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(_ALL[cursor is not None], _params(user_id, cursor, n))
    return await cur.fetchall()


async def _cache_window(
    read_side: ReadSide, user_id: UUID, cursor: Cursor | None, size: int
) -> tuple[int, list[str], float] | None:
    """The cache's size, its next `size` chat ids and the lowest score among them, or
    None if the cache is missing or unusable."""
    top: float | str = "+inf" if cursor is None else micros(cursor[0]) / 1000 + SCORE_SLACK_MS
    key = chats_key(user_id)
    try:
        pipe = read_side.redis.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrevrangebyscore(key, top, "-inf", start=0, num=size)
        pipe.zrevrangebyscore(key, top, "-inf", start=size - 1, num=1, withscores=True)
        total, window, last = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("event=cache_unavailable user_id=%s error=%s", user_id, type(exc).__name__)
        return None
    if not total:
        return None
    lowest = float(last[0][1]) if last else float("-inf")
    return int(total), [member.decode() for member in window], lowest


async def _from_cache(
    read_side: ReadSide, user_id: UUID, cursor: Cursor | None, n: int
) -> list[tuple[Any, ...]] | None:
    """The page's rows via the cache's order, or None when the cache cannot answer it."""
    size = n + WINDOW_SLACK
    cached = await _cache_window(read_side, user_id, cursor, size)
    if cached is None:
        return None
    cached_total, ids, lowest_ms = cached
    async with read_side.pool.connection() as conn, conn.pipeline():
        counted = await conn.execute(_ACTIVE, (user_id,))
        found = await conn.execute(
            _CANDIDATES[cursor is not None], _params(user_id, cursor, n, ids=ids)
        )
        total_row = await counted.fetchone()
        rows = await found.fetchall()
    if total_row is None or cached_total < total_row[0]:
        return None  # the cache lost some of the chats this user is in
    # Chats beyond a full window score at most its lowest score: the page is complete
    # only if every row of it is newer than that.
    beyond = len(ids) == size
    if beyond and (len(rows) < n or micros(rows[-1][9]) / 1000 <= lowest_ms + SCORE_SLACK_MS):
        return None
    return rows


def _chat(row: tuple[Any, ...], now: datetime) -> dict[str, Any]:
    chat_id, kind, name, active, role, seq, message_id, sender, sent_at, activity = row[:10]
    unread, peer = row[10], row[11]
    message_kind, edited_at, deleted_at, expires_at = row[12:16]
    last = None
    if seq is not None and message_id is not None:
        deleted = deleted_at is not None or expired(expires_at, now)
        last = {
            "seq": seq,
            "message_id": str(message_id),
            "sender": str(sender),
            "sent_at": utc_iso(sent_at),
            "kind": message_kind,
            "edited": edited_at is not None and not deleted,
            "deleted": deleted,
        }
    return {
        "chat_id": str(chat_id),
        "kind": kind,
        "name": name,
        "peer": None if peer is None else str(peer),
        "is_member": active,
        "role": role if active else None,
        "last_message": last,
        "last_activity_at": utc_iso(activity),
        "unread": max(0, unread),
    }


async def chat_list(request: Request, identity: Identity) -> Response:
    limit = limit_query(request)
    cursor = _cursor(request)
    await read_your_writes(request, identity.user_id)
    read_side = read_side_of(request)
    rows = await _from_cache(read_side, identity.user_id, cursor, limit + 1)
    source = "cache"
    if rows is None:
        source = "database"
        async with read_side.pool.connection() as conn:
            rows = await _from_database(conn, identity.user_id, cursor, limit + 1)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(micros(last[9]), last[0])
    now = datetime.now(UTC)
    chats = [_chat(row, now) for row in page]
    return answer({"chats": chats, "next_cursor": next_cursor}, source)
