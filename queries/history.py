"""`GET /v1/chats/{chat_id}/messages`: a chat's history by seq, in pages, both directions.

Parameters: `after_seq` (read forwards: the oldest messages after it), `before_seq`
(read backwards: the newest messages before it), both exclusive, `limit` (1-100, 50).
With neither, the newest page. Messages are in ascending seq order; the answer's
`before_seq` / `after_seq` are the cursors for the older / newer page (null: none).
A removed member sees only the messages sent while they were a member. A message from
a user the caller blocks is shown `hidden` (seq, id and time; no sender, no content),
as the WebSocket shows it (`domain.visibility.is_delivered`). Each shown message carries
its `reactions`, counted (`queries.reactions`).

The cache is asked for the likely page while PostgreSQL checks the membership, so a
page the cache holds costs two database round trips: the membership, then the page's
reactions.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from infra.auth import Identity
from projections.message_view import as_of, device_view
from queries.membership import load_membership, page_of
from queries.messages import (
    Message,
    cached_range,
    hidden,
    likely_page,
    pick_cached,
    stored_messages,
)
from queries.params import MAX_SEQ, chat_id_param, int_query, limit_query
from queries.position import read_your_writes
from queries.privacy import blocked_by
from queries.reactions import reactions_of
from queries.resources import read_side_of
from queries.responses import answer


async def history(request: Request, identity: Identity) -> Response:
    chat_id = chat_id_param(request)
    after = int_query(request, "after_seq", 0, MAX_SEQ)
    before = int_query(request, "before_seq", 1, MAX_SEQ)
    limit = limit_query(request)
    await read_your_writes(request, identity.user_id)
    read_side = read_side_of(request)
    cached_task = asyncio.ensure_future(likely_page(read_side.redis, chat_id, after, before, limit))
    try:
        async with read_side.pool.connection() as conn:
            membership = await load_membership(conn, chat_id, identity.user_id)
            blocked = await blocked_by(conn, identity.user_id)
            page = page_of(membership.intervals, after, before, limit)
            reactions = await reactions_of(conn, chat_id, page.seqs, identity.user_id)
    except BaseException:
        cached_task.cancel()
        raise
    messages: list[Message] | None = pick_cached(await cached_task, page.seqs)
    if messages is None and page.seqs:
        nearby = await cached_range(read_side.redis, chat_id, page.seqs[0], page.seqs[-1])
        messages = pick_cached(nearby, page.seqs)
    source = "cache"
    if messages is None:
        source = "database"
        async with read_side.pool.connection() as conn:
            messages = await stored_messages(conn, chat_id, page.seqs)
    now = datetime.now(UTC)
    user, device = str(identity.user_id), identity.device_id
    messages = [
        hidden(m)
        if blocked and m["sender"] is not None and UUID(m["sender"]) in blocked
        else device_view({**as_of(m, now), "reactions": reactions.get(m["seq"], [])}, user, device)
        for m in messages
    ]
    body: dict[str, Any] = {
        "chat_id": str(chat_id),
        "messages": messages,
        "before_seq": page.before_seq,
        "after_seq": page.after_seq,
        "last_seq": membership.last_visible,
    }
    return answer(body, source)
