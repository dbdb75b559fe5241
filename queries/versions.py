"""`GET /v1/chats/{chat_id}/messages/{seq}/versions`: the texts of an edited message.

Shown to the message's sender only (`403 not_sender` to other members who see it, `404`
like any unknown message to anyone else): everyone else sees the latest text and its
`edited` mark, as WhatsApp shows it. Oldest first, the current text last; a deleted
message has none.
"""

from __future__ import annotations

import base64
from typing import Any

from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response

from infra.auth import Identity
from infra.timestamps import utc_iso
from projections.schema import LIVE_SCHEMA
from queries.errors import NotSender, UnknownMessage
from queries.membership import load_membership
from queries.params import chat_id_param, seq_param
from queries.position import read_your_writes
from queries.resources import read_side_of
from queries.responses import answer

_S = sql.Identifier(LIVE_SCHEMA)
_MESSAGE = sql.SQL(
    "SELECT sender, kind, body, coalesce(edited_at, sent_at), deleted_at FROM {s}.messages "
    "WHERE chat_id = %s AND seq = %s"
).format(s=_S)
_VERSIONS = sql.SQL(
    "SELECT body, written_at FROM {s}.message_versions WHERE chat_id = %s AND seq = %s "
    "ORDER BY edit_seq"
).format(s=_S)


def _version(body: bytes, written_at: Any) -> dict[str, Any]:
    return {"body": base64.b64encode(body).decode("ascii"), "written_at": utc_iso(written_at)}


async def versions(request: Request, identity: Identity) -> Response:
    chat_id, seq = chat_id_param(request), seq_param(request)
    await read_your_writes(request, identity.user_id)
    read_side = read_side_of(request)
    async with read_side.pool.connection() as conn:
        membership = await load_membership(conn, chat_id, identity.user_id)
        if not membership.sees(seq):
            raise UnknownMessage()
        async with conn.pipeline():
            found = await conn.execute(_MESSAGE, (chat_id, seq))
            listed = await conn.execute(_VERSIONS, (chat_id, seq))
            message = await found.fetchone()
            rows = await listed.fetchall()
    if message is None:
        raise UnknownMessage()
    sender, kind, body, written_at, deleted_at = message
    if sender != identity.user_id:
        raise NotSender()
    texts = [] if deleted_at is not None else [*rows, (body, written_at)]
    return answer(
        {
            "chat_id": str(chat_id),
            "seq": seq,
            "kind": kind,
            "deleted": deleted_at is not None,
            "versions": [_version(*row) for row in texts],
        }
    )
