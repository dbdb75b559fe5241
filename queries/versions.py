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
from queries.responses import answer
from queries.senders_message import senders_message

_S = sql.Identifier(LIVE_SCHEMA)
_MESSAGE = sql.SQL(
    "SELECT sender, kind, body, coalesce(edited_at, sent_at), deleted_at FROM {s}.messages "
    "WHERE chat_id = %(chat)s AND seq = %(seq)s"
).format(s=_S)
_VERSIONS = sql.SQL(
    "SELECT body, written_at FROM {s}.message_versions "
    "WHERE chat_id = %(chat)s AND seq = %(seq)s ORDER BY edit_seq"
).format(s=_S)


def _version(body: bytes, written_at: Any) -> dict[str, Any]:
    return {"body": base64.b64encode(body).decode("ascii"), "written_at": utc_iso(written_at)}


async def versions(request: Request, identity: Identity) -> Response:
    async with senders_message(request, identity, _MESSAGE, _VERSIONS) as mine:
        _, kind, body, written_at, deleted_at = mine.message
        texts = [] if deleted_at is not None else [*mine.listed, (body, written_at)]
    return answer(
        {
            "chat_id": str(mine.chat_id),
            "seq": mine.seq,
            "kind": kind,
            "deleted": deleted_at is not None,
            "versions": [_version(*row) for row in texts],
        }
    )
