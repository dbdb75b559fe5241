"""Catching a device up: what it missed, in pages, from the read model.

A client syncs with its per-chat cursors (the highest seq it holds of each chat). For a
chat it names no cursor for, the cursor is the user's `delivered_up_to` there: every
message never delivered to the user (the inbox) is always sent. Chats come newest
activity first, messages in seq order within a chat, at most `page_size` a page. A
removed member gets only what was sent while they were in the group. The pages of a
chat stop at the `last_seq` its summary gave: a message stored after the summary was
read comes as a live push (the connection is registered before it syncs), so a sync
never sends a seq beyond the `last_seq` it announced.

The processor pushes a message as soon as it is stored, before the workers have
projected it, so a device that was away, and syncs right after it comes back, may find
the read model behind what was pushed while it was away. Before answering, the sync
therefore waits until the projections of the user's chats (and of the chats the
processor says they joined lately, `parley:joined:<user>`) have reached the event
store's newest event of each chat, up to `PARLEY_SYNC_SETTLE_TIMEOUT_S` (then it answers
with what is there; the client's gap check asks again). What is stored after that comes
live. The wait holds no pool connection: each check takes one and gives it back, so
syncs waiting on a lagging projection leave the pool to everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from commands.gateway.connection import Connection
from commands.gateway.protocol import ClientFrame, ProtocolError
from infra.event_store import EVENTS_TABLE
from infra.routing import joined_key
from infra.timestamps import utc_iso
from projections.directory import DIRECTORY_SCHEMA
from projections.message_view import (
    MESSAGE_COLUMNS,
    as_of,
    device_view,
    hidden_frame,
    message_columns,
    message_frame,
    view_of_row,
)
from projections.schema import LIVE_SCHEMA

log = logging.getLogger("parley.gateway")

PAGE_SIZE = 100
_SETTLE_POLL_S = (0.005, 0.05)  # the first pause, and the longest

_MY_CHATS = sql.SQL("SELECT chat_id FROM {s}.members WHERE user_id = %s").format(
    s=sql.Identifier(LIVE_SCHEMA)
)
_HEADS = sql.SQL(
    "SELECT c.chat_id, (SELECT e.notification_id FROM {e} e WHERE e.originator_id = c.chat_id "
    "ORDER BY e.originator_version DESC LIMIT 1) FROM unnest(%s::uuid[]) AS c(chat_id)"
).format(e=sql.Identifier(EVENTS_TABLE))
_PROJECTED = sql.SQL("SELECT chat_id, position FROM {s}.chats WHERE chat_id = ANY(%s)").format(
    s=sql.Identifier(LIVE_SCHEMA)
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def settle(pool: AsyncConnectionPool, redis: Redis, user_id: UUID, timeout_s: float) -> float:
    """Wait until the projections of the user's chats reached the event store's newest
    event of each, up to `timeout_s` (see the module docstring); return the seconds
    waited."""
    started = time.monotonic()
    joined = await redis.hgetall(joined_key(user_id))
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.execute(_MY_CHATS, (user_id,))
        chats = {row[0] for row in await cur.fetchall()}
        chats.update(UUID(_text(chat)) for chat in joined)
        behind = await _behind(cur, chats)
    waited, still_behind = await _wait(pool, behind, started, timeout_s)
    if still_behind:
        log.warning("event=sync_unsettled user=%s chats=%d", user_id, still_behind)
    return waited


async def projected(
    pool: AsyncConnectionPool, chats: Iterable[UUID], timeout_s: float
) -> tuple[float, int]:
    """Wait until the projections of `chats` reached the event store's newest event of
    each, up to `timeout_s`; return (the seconds waited, how many are still behind)."""
    started = time.monotonic()
    async with pool.connection() as conn, conn.cursor() as cur:
        behind = await _behind(cur, chats)
    return await _wait(pool, behind, started, timeout_s)


async def _behind(cur: AsyncCursor[Any], chats: Iterable[UUID]) -> dict[UUID, int]:
    """The newest event of each of `chats` whose projection has not reached it yet."""
    wanted = list(chats)
    if not wanted:
        return {}
    await cur.execute(_HEADS, (wanted,))
    heads = {chat: head for chat, head in await cur.fetchall() if head}
    return await _still_behind(cur, heads)


async def _still_behind(cur: AsyncCursor[Any], heads: dict[UUID, int]) -> dict[UUID, int]:
    if heads:
        await cur.execute(_PROJECTED, (list(heads),))
        for chat, position in await cur.fetchall():
            if position >= heads[chat]:
                del heads[chat]
    return heads


async def _wait(
    pool: AsyncConnectionPool, heads: dict[UUID, int], started: float, timeout_s: float
) -> tuple[float, int]:
    """Check `heads` again until none is behind or `timeout_s` has passed since `started`,
    taking a connection for each check only: none is held during the pauses, so syncs
    waiting on a lagging projection leave the pool to everyone else."""
    pause, longest = _SETTLE_POLL_S
    while heads:
        left = timeout_s - (time.monotonic() - started)
        if left <= 0:
            break
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, longest)
        async with pool.connection() as conn, conn.cursor() as cur:
            heads = await _still_behind(cur, heads)
    return time.monotonic() - started, len(heads)


def row_frame(chat_id: UUID, row: tuple[Any, ...]) -> dict[str, Any]:
    """The `message` frame of a row of `_MISSED`: `MESSAGE_COLUMNS`, then the sender's
    local id and whether the one syncing blocked the sender."""
    local_id, blocked = row[len(MESSAGE_COLUMNS) :]
    if blocked:
        seq, message_id, sent_at = row[0], row[1], row[6]
        return hidden_frame(chat_id, seq, message_id, utc_iso(sent_at))
    return message_frame(as_of(view_of_row(chat_id, row), datetime.now(UTC)), local_id)


_BLOCKED_EITHER_WAY = sql.SQL(
    "SELECT user_id FROM {d}.users WHERE user_id = ANY(%(others)s) AND %(user)s = ANY(blocks) "
    "UNION SELECT unnest(blocks) FROM {d}.users WHERE user_id = %(user)s"
).format(d=sql.Identifier(DIRECTORY_SCHEMA))


async def blocked_either_way(
    conn: AsyncConnection[Any], user: UUID, others: Iterable[UUID]
) -> set[UUID]:
    """Those of `others` whom `user` blocked or who blocked `user`
    (`domain.visibility.blocked_either_way`)."""
    async with conn.cursor() as cur:
        await cur.execute(_BLOCKED_EITHER_WAY, {"user": user, "others": list(others)})
        return {row[0] for row in await cur.fetchall()}


async def chat_summaries(
    conn: AsyncConnection[Any], user_id: UUID, schema: str = LIVE_SCHEMA
) -> list[dict[str, Any]]:
    """The user's chats, newest activity first, with everyone's receipt cursors."""
    s = sql.Identifier(schema)
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL(
                "SELECT c.chat_id, c.kind, c.name, c.last_seq, m.active, m.delivered_up_to "
                "FROM {s}.members m JOIN {s}.chats c USING (chat_id) WHERE m.user_id = %s "
                "ORDER BY c.last_activity_at DESC"
            ).format(s=s),
            (user_id,),
        )
        chats = await cur.fetchall()
        ids = [row[0] for row in chats]
        await cur.execute(
            sql.SQL(
                "SELECT chat_id, user_id, role, active, delivered_up_to, read_up_to "
                "FROM {s}.members WHERE chat_id = ANY(%s)"
            ).format(s=s),
            (ids,),
        )
        rows = await cur.fetchall()
        # Receipts are not shown between two users when either blocked the other.
        hidden = await blocked_either_way(conn, user_id, {row[1] for row in rows})
        members: dict[UUID, list[dict[str, Any]]] = {}
        for chat_id, member, role, active, delivered, read in rows:
            if member in hidden:
                delivered = read = None
            members.setdefault(chat_id, []).append(
                {
                    "user_id": str(member),
                    "role": role,
                    "active": active,
                    "delivered_up_to": delivered,
                    "read_up_to": read,
                }
            )
    return [
        {
            "chat_id": str(c[0]),
            "kind": c[1],
            "name": c[2],
            "last_seq": c[3],
            "member": c[4],
            "delivered_up_to": c[5],
            "members": members.get(c[0], []),
        }
        for c in chats
    ]


async def missed_messages(
    conn: AsyncConnection[Any],
    user_id: UUID,
    cursors: Mapping[UUID, int],
    chats: list[dict[str, Any]],
    page_size: int = PAGE_SIZE,
    schema: str = LIVE_SCHEMA,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Pages of the messages the device lacks, newest chats first."""
    s = sql.Identifier(schema)
    page: list[dict[str, Any]] = []
    for chat in chats:
        chat_id = UUID(chat["chat_id"])
        after = cursors.get(chat_id, chat["delivered_up_to"])
        while after < chat["last_seq"]:
            async with conn.cursor() as cur:
                await cur.execute(
                    sql.SQL(
                        "SELECT " + message_columns("m") + ", m.local_id, "
                        "m.sender = ANY(coalesce((SELECT b.blocks "
                        "FROM {d}.users b WHERE b.user_id = %(user)s), '{{}}'::uuid[])) "
                        "FROM {s}.messages m "
                        "WHERE m.chat_id = %(chat)s AND m.seq > %(after)s AND m.seq <= %(last)s "
                        "AND EXISTS ("
                        "  SELECT 1 FROM {s}.membership_history h WHERE h.chat_id = m.chat_id "
                        "  AND h.user_id = %(user)s AND m.seq > h.joined_after_seq "
                        "  AND (h.left_at_seq IS NULL OR m.seq <= h.left_at_seq)) "
                        "ORDER BY m.seq LIMIT %(limit)s"
                    ).format(s=s, d=sql.Identifier(DIRECTORY_SCHEMA)),
                    {
                        "chat": chat_id,
                        "after": after,
                        "last": chat["last_seq"],
                        "user": user_id,
                        "limit": page_size - len(page),
                    },
                )
                rows = await cur.fetchall()
            if not rows:
                break
            page.extend(row_frame(chat_id, row) for row in rows)
            after = rows[-1][0]
            if len(page) >= page_size:
                yield page
                page = []
    if page:
        yield page


async def answer_sync(
    pool: AsyncConnectionPool,
    redis: Redis,
    connection: Connection,
    frame: ClientFrame,
    settle_timeout_s: float,
) -> None:
    """Answer a `sync` frame: `sync_chats`, then `sync_page`s, then `sync_done`, once the
    projections of the user's chats are settled (up to `settle_timeout_s`)."""
    raw = frame.fields.get("cursors", {})
    if not isinstance(raw, dict) or len(raw) > 10_000:
        raise ProtocolError("bad_frame", "`cursors` maps chat ids to seqs", frame.request_id)
    cursors: dict[UUID, int] = {}
    for chat, seq in raw.items():
        try:
            chat_id = UUID(chat)
        except ValueError:
            raise ProtocolError(
                "bad_frame", "`cursors` keys are chat ids", frame.request_id
            ) from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ProtocolError("bad_frame", "`cursors` values are seqs", frame.request_id)
        cursors[chat_id] = seq
    await settle(pool, redis, connection.user_id, settle_timeout_s)
    async with pool.connection() as conn:
        chats = await chat_summaries(conn, connection.user_id)
        connection.push({"type": "sync_chats", "id": frame.request_id, "chats": chats})
        pages = 0
        user, device = str(connection.user_id), connection.identity.device_id
        async for page in missed_messages(conn, connection.user_id, cursors, chats):
            pages += 1
            page = [device_view(message, user, device) for message in page]
            connection.push({"type": "sync_page", "id": frame.request_id, "messages": page})
            await asyncio.sleep(0)
    connection.push({"type": "sync_done", "id": frame.request_id, "pages": pages})
