"""`GET /v1/inbox`: the messages not yet delivered to the caller, oldest first, in pages.

The inbox (`read.inbox`) holds one row per (recipient, chat, seq) until the recipient's
delivered cursor passes it (or it expires after 30 days); this joins it with the
messages. Messages from users the caller blocked are left out: they are not delivered
(`domain.visibility.is_delivered`). The inbox is per user, shared by their devices: a
device that syncs marks messages delivered, which empties it for all of them.
Pages are ordered by (queued at, chat, seq); `after` is the cursor of the last page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response

from infra.auth import Identity
from infra.timestamps import utc_iso
from projections.directory import DIRECTORY_SCHEMA
from projections.message_view import as_of, device_view
from projections.schema import LIVE_SCHEMA
from queries.chat_list import EPOCH, micros
from queries.errors import BadCursor
from queries.messages import message_from_row
from queries.params import (
    cursor_int,
    cursor_uuid,
    decode_cursor,
    encode_cursor,
    limit_query,
)
from queries.position import read_your_writes
from queries.resources import read_side_of
from queries.responses import answer

_INBOX = """
SELECT i.chat_id, i.seq, msg.message_id, msg.sender, msg.kind, msg.body, msg.media,
       msg.sent_at, msg.ref, msg.quote, msg.edited_at, msg.deleted_at, msg.expires_at,
       msg.forwarded, i.created_at
FROM {s}.inbox i
JOIN {s}.messages msg ON msg.chat_id = i.chat_id AND msg.seq = i.seq
WHERE i.recipient = %(user)s {after}
  AND msg.sender <> ALL(coalesce(
        (SELECT b.blocks FROM {d}.users b WHERE b.user_id = %(user)s), '{{}}'::uuid[]))
ORDER BY i.created_at, i.chat_id, i.seq
LIMIT %(n)s
"""
_AFTER = "AND (i.created_at, i.chat_id, i.seq) > (%(at)s, %(chat)s, %(seq)s)"
_QUERIES = {
    given: sql.SQL(_INBOX).format(
        s=sql.Identifier(LIVE_SCHEMA),
        d=sql.Identifier(DIRECTORY_SCHEMA),
        after=sql.SQL(_AFTER if given else ""),
    )
    for given in (False, True)
}


async def inbox(request: Request, identity: Identity) -> Response:
    limit = limit_query(request)
    params: dict[str, Any] = {"user": identity.user_id, "n": limit + 1}
    parts = decode_cursor(request, "after", 3)
    if parts is not None:
        try:
            params["at"] = EPOCH + timedelta(microseconds=cursor_int(parts[0]))
        except OverflowError:
            raise BadCursor() from None
        params["chat"], params["seq"] = cursor_uuid(parts[1]), cursor_int(parts[2])
    await read_your_writes(request, identity.user_id)
    read_side = read_side_of(request)
    async with read_side.pool.connection() as conn:
        cur = await conn.execute(_QUERIES[parts is not None], params)
        rows = await cur.fetchall()
    page = rows[:limit]
    now = datetime.now(UTC)
    user, device = str(identity.user_id), identity.device_id
    messages = [
        device_view(
            {**as_of(message_from_row(row[0], row[1:14]), now), "queued_at": utc_iso(row[14])},
            user,
            device,
        )
        for row in page
    ]
    after = None
    if len(rows) > limit:
        last = page[-1]
        after = encode_cursor(micros(last[-1]), last[0], last[1])
    return answer({"messages": messages, "after": after})
