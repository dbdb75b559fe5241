"""`GET /v1/chats/{chat_id}`: a chat's name, kind and members with their roles.

Current members see who is in the chat now. A former member sees the chat itself
(name, kind, when it was created) but no member list: who joined or left after them is
not theirs to know.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response

from domain.errors import UnknownChat
from infra.auth import Identity
from infra.timestamps import utc_iso
from projections.schema import LIVE_SCHEMA
from queries.membership import load_membership
from queries.params import chat_id_param
from queries.position import read_your_writes
from queries.resources import read_side_of
from queries.responses import answer

_S = sql.Identifier(LIVE_SCHEMA)
_CHAT = sql.SQL("SELECT name, created_by, created_at FROM {s}.chats WHERE chat_id = %s").format(
    s=_S
)
_MEMBERS = sql.SQL(
    "SELECT user_id, role, joined_at FROM {s}.members WHERE chat_id = %s AND active "
    "ORDER BY joined_at, user_id"
).format(s=_S)


async def chat_info(request: Request, identity: Identity) -> Response:
    chat_id = chat_id_param(request)
    await read_your_writes(request, identity.user_id)
    read_side = read_side_of(request)
    async with read_side.pool.connection() as conn:
        membership = await load_membership(conn, chat_id, identity.user_id)
        async with conn.pipeline():
            chat = await conn.execute(_CHAT, (chat_id,))
            listed = await conn.execute(_MEMBERS, (chat_id,)) if membership.active else None
            row = await chat.fetchone()
            members = await listed.fetchall() if listed is not None else []
    if row is None:
        raise UnknownChat()
    name, created_by, created_at = row
    body: dict[str, Any] = {
        "chat_id": str(chat_id),
        "kind": membership.kind,
        "name": name,
        "created_by": str(created_by),
        "created_at": utc_iso(created_at),
        "is_member": membership.active,
        "role": membership.role if membership.active else None,
        "last_seq": membership.last_visible,
        "members": [
            {"user_id": str(user_id), "role": role, "joined_at": utc_iso(joined_at)}
            for user_id, role, joined_at in members
        ],
    }
    return answer(body)
