"""Typing indicators: volatile frames, through Redis only, never stored.

A `typing` frame goes to the chat's other active members (read from the read model once
the chat's projection has reached what is stored, since the processor pushes a new chat
or a membership change before it is projected, and cached for `MEMBERSHIP_CACHE_S`),
except those who blocked the typist or whom it blocked; a `start` repeated within
`TYPING_DEBOUNCE_S` is dropped (the others already see it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from commands.gateway.connection import Connection
from commands.gateway.protocol import ClientFrame, ProtocolError
from commands.gateway.sync import blocked_either_way, projected
from infra.routing import route
from projections.schema import LIVE_SCHEMA

TYPING_DEBOUNCE_S = 2.0
PROJECTED_WAIT_S = 1.0
"""How long reading a chat's members for typing waits for its projection to reach what
is stored (then it reads what is there)."""
MEMBERSHIP_CACHE_S = 10.0
"""How long the gateway trusts a chat's members for typing. A membership change pushed
through this gateway (a `chat` frame: every member and the one removed get it) drops
the entry at once (`forget`); the TTL bounds what a dropped push leaves behind."""


class Typing:
    """The typing frames of one gateway's connections."""

    def __init__(self, pool: AsyncConnectionPool, redis: Redis) -> None:
        self.pool = pool
        self.redis = redis
        self._members: dict[UUID, tuple[float, frozenset[UUID]]] = {}

    def forget(self, chat_id: UUID) -> None:
        """Drop what is cached of the chat's members (a membership change went by)."""
        self._members.pop(chat_id, None)

    async def handle(self, connection: Connection, frame: ClientFrame) -> None:
        """A `typing` frame: shown to the chat's other members, debounced, never stored."""
        chat_id = frame.uuid("chat_id")
        assert chat_id is not None
        state = frame.fields.get("state", "start")
        if state not in ("start", "stop"):
            raise ProtocolError("bad_frame", "`state` is start or stop", frame.request_id)
        members = await self.members_of(chat_id)
        if connection.user_id not in members:  # a new chat or member: the cache may be behind
            members = await self.members_of(chat_id, fresh=True)
        if connection.user_id not in members:
            raise ProtocolError("unknown_chat", "no such chat", frame.request_id)
        key = (chat_id, state)
        last = connection.typing_sent.get(key, 0.0)
        if state == "start" and time.monotonic() - last < TYPING_DEBOUNCE_S:
            return  # debounced: the others already see this user typing
        connection.typing_sent[key] = time.monotonic()
        if state == "stop":
            connection.typing_sent.pop((chat_id, "start"), None)  # the next start is news
        hidden = await self.blocked_either_way(connection.user_id, members)
        others = [m for m in members if m != connection.user_id and m not in hidden]
        await route(
            self.redis,
            others,
            {
                "type": "typing",
                "chat_id": str(chat_id),
                "user_id": str(connection.user_id),
                "state": state,
            },
        )

    async def blocked_either_way(self, user: UUID, others: Iterable[UUID]) -> set[UUID]:
        """Those of `others` whom `user` blocked or who blocked `user`: they are not
        shown each other typing (`domain.visibility.can_see_typing`)."""
        async with self.pool.connection() as conn:
            return await blocked_either_way(conn, user, others)

    async def members_of(self, chat_id: UUID, fresh: bool = False) -> frozenset[UUID]:
        """The chat's active members, cached for MEMBERSHIP_CACHE_S (or read `fresh`)."""
        cached = self._members.get(chat_id)
        if not fresh and cached is not None and time.monotonic() - cached[0] < MEMBERSHIP_CACHE_S:
            return cached[1]
        # The processor pushes a membership change before the workers project it: read
        # the members once the chat's projection has reached what is stored.
        await projected(self.pool, [chat_id], PROJECTED_WAIT_S)
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                psycopg.sql.SQL(
                    "SELECT user_id FROM {s}.members WHERE chat_id = %s AND active"
                ).format(s=psycopg.sql.Identifier(LIVE_SCHEMA)),
                (chat_id,),
            )
            members = frozenset(row[0] for row in await cur.fetchall())
        if len(self._members) > 10_000:
            self._members.clear()
        self._members[chat_id] = (time.monotonic(), members)
        return members
