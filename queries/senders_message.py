"""What the routes about one message for its sender only share (`versions`, `receipts`).

`GET /v1/chats/{chat_id}/messages/{seq}/...`: the path's chat and seq, read-your-writes,
then, on one pooled connection, the caller's membership (`404 unknown_message` for a
seq they do not see, as for one that does not exist), the message's row and the
route's listing in one round trip, and `403 not_sender` unless the caller sent it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from starlette.requests import Request

from infra.auth import Identity
from queries.errors import NotSender, UnknownMessage
from queries.membership import Membership, load_membership
from queries.params import chat_id_param, seq_param
from queries.position import read_your_writes
from queries.resources import read_side_of


@dataclass(frozen=True)
class SendersMessage:
    conn: AsyncConnection[Any]  # still open: the route may read more on it
    chat_id: UUID
    seq: int
    membership: Membership
    message: tuple[Any, ...]  # the row of the route's message query (its sender first)
    listed: list[tuple[Any, ...]]  # the rows of the route's listing


@asynccontextmanager
async def senders_message(
    request: Request, identity: Identity, message: sql.Composed, listing: sql.Composed
) -> AsyncIterator[SendersMessage]:
    """The caller's own message at the path's (chat, seq). `message` and `listing` take
    `%(chat)s` and `%(seq)s`; `message` selects the sender first."""
    chat_id, seq = chat_id_param(request), seq_param(request)
    await read_your_writes(request, identity.user_id)
    async with read_side_of(request).pool.connection() as conn:
        membership = await load_membership(conn, chat_id, identity.user_id)
        if not membership.sees(seq):
            raise UnknownMessage()
        keys = {"chat": chat_id, "seq": seq}
        async with conn.pipeline():
            found = await conn.execute(message, keys)
            listed = await conn.execute(listing, keys)
            row = await found.fetchone()
            rows = await listed.fetchall()
        if row is None:
            raise UnknownMessage()
        if row[0] != identity.user_id:
            raise NotSender()
        yield SendersMessage(conn, chat_id, seq, membership, tuple(row), rows)
