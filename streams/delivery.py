"""Live delivery: the fast path from a projected batch to the recipients' sockets.

After a batch is in the read model, the workers route each new message to the
gateways of its recipients (and the sender's other devices, not the one it came
from: that one has its `ack`), each receipt to the
chat's members, and each group change to the members it concerns. Anything dropped on
this path is recovered by the client (seq gap check, sync on reconnect): the inbox is
the guarantee, this is only speed. A replay never calls it.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from psycopg import AsyncConnection, sql

from commands.directory import DIRECTORY_SCHEMA
from commands.protocol import hidden_message
from infra.routing import Item, route_many
from projections.cache import active_members
from projections.projector import Record
from projections.schema import LIVE_SCHEMA

CHAT_EVENTS = frozenset(
    {
        "DirectChatOpened",
        "GroupCreated",
        "GroupRenamed",
        "MemberAdded",
        "MemberRemoved",
        "MemberLeft",
        "AdminPromoted",
        "AdminDemoted",
    }
)


def _message(e: Any) -> dict[str, Any]:
    p = e.payload
    return {
        "type": "message",
        "chat_id": str(e.chat_id),
        "seq": p["seq"],
        "message_id": str(p["message_id"]),
        "sender": p["sender"],
        "local_id": p["local_id"],
        "kind": p["kind"],
        "body": p["body"],
        "media": p["media"],
        "sent_at": e.timestamp.isoformat(),
    }


async def deliver(
    redis: aioredis.Redis,
    conn: AsyncConnection[Any],
    records: Sequence[Record],
    schema: str = LIVE_SCHEMA,
    members_of: dict[UUID, list[UUID]] | None = None,
) -> int:
    """Route what this batch means to online users; return how many gateways got some.

    `members_of`, when given, holds the active members of at least the batch's chats
    (`projections.cache.active_members`), read once for the cache and this."""
    envelopes = [r.envelope for r in records]
    sent = [e for e in envelopes if e.type == "MessageSent"]
    others = [
        e
        for e in envelopes
        if e.type in CHAT_EVENTS or e.type in ("MessagesDelivered", "MessagesRead")
    ]
    if not sent and not others:
        return 0
    s = sql.Identifier(schema)
    recipients: dict[tuple[UUID, int], list[str]] = defaultdict(list)
    members: dict[UUID, list[str]] = defaultdict(list)
    # A message's recipients are the chat's members when it was sent, but the sender.
    # Where the batch changed no membership of its chat, that is its members now;
    # elsewhere the receipts rows (one per recipient) say exactly.
    changed = {e.chat_id for e in envelopes if e.type in CHAT_EVENTS}
    ask = []
    for e in sent:
        if members_of is None or e.chat_id in changed:
            ask.append(e)
            continue
        sender = e.payload["sender"]
        recipients[(e.chat_id, e.payload["seq"])] = [
            str(u) for u in members_of.get(e.chat_id, ()) if str(u) != sender
        ]
    if ask:
        async with conn.cursor() as cur:
            await cur.execute(
                sql.SQL(
                    "SELECT r.chat_id, r.seq, r.recipient FROM {s}.receipts r "
                    "JOIN unnest(%s::uuid[], %s::bigint[]) AS k(chat_id, seq) "
                    "ON r.chat_id = k.chat_id AND r.seq = k.seq"
                ).format(s=s),
                ([e.chat_id for e in ask], [e.payload["seq"] for e in ask]),
            )
            for chat_id, seq, recipient in await cur.fetchall():
                recipients[(chat_id, seq)].append(str(recipient))
    if others:
        if members_of is None:
            members_of = await active_members(conn, {e.chat_id for e in others}, schema)
        for chat_id in {e.chat_id for e in others}:
            members[chat_id] = [str(u) for u in members_of.get(chat_id, ())]
    involved = {u for users in recipients.values() for u in users}
    involved |= {e.payload["sender"] for e in sent} | {u for us in members.values() for u in us}
    blocks = await blocks_of(conn, involved)
    items: list[Item] = []
    for e in sent:
        # The sender's other devices get it too; the device it came from has its ack.
        # Who blocked the sender gets the seq only, hidden (domain/visibility.py).
        sender = e.payload["sender"]
        shown: list[str] = [sender]
        hidden: list[str] = []
        for user in recipients[(e.chat_id, e.payload["seq"])]:
            (hidden if sender in blocks.get(user, ()) else shown).append(user)
        items.append((shown, _message(e), (sender, e.payload["device_id"])))
        if hidden:
            seq, message_id = e.payload["seq"], e.payload["message_id"]
            frame_hidden = hidden_message(e.chat_id, seq, message_id, e.timestamp.isoformat())
            items.append((hidden, frame_hidden, None))
    for e in others:
        p = e.payload
        if e.type in ("MessagesDelivered", "MessagesRead"):
            frame: dict[str, Any] = {
                "type": "receipt",
                "chat_id": str(e.chat_id),
                "user_id": p["user_id"],
                "delivered_up_to": p["up_to"],
                "read_up_to": p["up_to"] if e.type == "MessagesRead" else None,
            }
            # Receipts are not shown between two users when either blocked the other.
            reader = p["user_id"]
            viewers = [
                m
                for m in members[e.chat_id]
                if reader not in blocks.get(m, ()) and m not in blocks.get(reader, ())
            ]
            items.append((viewers, frame, None))
        else:
            frame = {
                "type": "chat",
                "chat_id": str(e.chat_id),
                "event": e.type,
                **{k: _plain(v) for k, v in p.items()},
            }
            concerned = set(members[e.chat_id])
            if "user_id" in p:
                concerned.add(p["user_id"])  # the one removed or who left hears of it too
            items.append((sorted(concerned), frame, None))
    return await route_many(redis, items)


async def blocks_of(conn: AsyncConnection[Any], users: Iterable[str]) -> dict[str, set[str]]:
    """user -> the users they blocked, for those of `users` who blocked anyone."""
    async with conn.cursor() as cur:
        await cur.execute(
            sql.SQL(
                "SELECT user_id, blocks FROM {d}.users "
                "WHERE user_id = ANY(%s::uuid[]) AND cardinality(blocks) > 0"
            ).format(d=sql.Identifier(DIRECTORY_SCHEMA)),
            (list(users),),
        )
        return {str(user): {str(b) for b in blocked} for user, blocked in await cur.fetchall()}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
