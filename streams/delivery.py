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
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import sql

from infra.log_envelope import Envelope
from infra.routing import Item
from infra.timestamps import utc_iso
from projections.directory import DIRECTORY_SCHEMA
from projections.message_view import hidden_frame, message_frame, message_view
from projections.projector import RECEIPT_EVENTS, Record
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
    view = message_view(
        e.chat_id,
        p["seq"],
        p["message_id"],
        p["sender"],
        p["kind"],
        p["body"],
        p["media"],
        utc_iso(e.timestamp),
        ref=p.get("ref"),
        quote=p.get("quote"),
    )
    return message_frame(view, p["local_id"])


def _receipt_frame(e: Any) -> dict[str, Any]:
    p = e.payload
    return {
        "type": "receipt",
        "chat_id": str(e.chat_id),
        "user_id": p["user_id"],
        "delivered_up_to": p["up_to"],
        "read_up_to": p["up_to"] if e.type == "MessagesRead" else None,
    }


@dataclass
class Delivery:
    """What a batch means to online users, and what it must ask PostgreSQL for that.

    A message's recipients are the chat's members when it was sent, but the sender.
    Where the batch changed no membership of its chat, that is its active members now;
    elsewhere (`asked`) the receipts rows (one per recipient) say exactly. Blocking is
    read for everyone who ever was a member of the batch's chats."""

    sent: list[Envelope]
    others: list[Envelope]  # receipts and chat changes
    chats: set[UUID]  # of both
    changed: set[UUID]  # chats whose membership the batch changed
    asked: list[Envelope]  # their sends: recipients come from the receipts rows

    @classmethod
    def of(cls, records: Sequence[Record]) -> Delivery:
        envelopes = [r.envelope for r in records]
        sent = [e for e in envelopes if e.type == "MessageSent"]
        others = [e for e in envelopes if e.type in CHAT_EVENTS or e.type in RECEIPT_EVENTS]
        chats = {e.chat_id for e in sent} | {e.chat_id for e in others}
        changed = {e.chat_id for e in others if e.type in CHAT_EVENTS}
        asked = [e for e in sent if e.chat_id in changed]
        return cls(sent, others, chats, changed, asked)

    def recipients_query(self, schema: str = LIVE_SCHEMA) -> tuple[sql.Composed, Any]:
        """(chat_id, seq, recipient) rows for the `asked` sends.

        A send's receipts are found through its chat's members, one index probe each:
        `receipts` is keyed by (chat, recipient, seq), and asked by (chat, seq) it is
        read for the whole history of the chat (queries/receipts.py)."""
        query = sql.SQL(
            "SELECT k.chat_id, k.seq, m.user_id "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS k(chat_id, seq) "
            "JOIN {s}.members m ON m.chat_id = k.chat_id "
            "CROSS JOIN LATERAL (SELECT FROM {s}.receipts r WHERE r.chat_id = k.chat_id "
            "AND r.recipient = m.user_id AND r.seq = k.seq OFFSET 0) r"
        ).format(s=sql.Identifier(schema))
        return query, ([e.chat_id for e in self.asked], [e.payload["seq"] for e in self.asked])

    def blocks_query(self, schema: str = LIVE_SCHEMA) -> tuple[sql.Composed, Any]:
        """(user_id, blocks) rows of the members, past and present, of the batch's chats
        who blocked anyone: everyone a push of this batch can concern."""
        query = sql.SQL(
            "SELECT u.user_id, u.blocks FROM {d}.users u "
            "WHERE cardinality(u.blocks) > 0 AND u.user_id IN "
            "(SELECT m.user_id FROM {s}.members m WHERE m.chat_id = ANY(%s))"
        ).format(d=sql.Identifier(DIRECTORY_SCHEMA), s=sql.Identifier(schema))
        return query, (list(self.chats),)

    def items(
        self,
        members: dict[UUID, list[str]],
        recipient_rows: Iterable[tuple[UUID, int, UUID]],
        block_rows: Iterable[tuple[UUID, list[UUID]]],
    ) -> list[Item]:
        """The pushes: `members` holds the active members of at least the batch's chats
        (`projections.cache.members_by_chat`), the rows are `recipients_query`'s and
        `blocks_query`'s."""
        blocks = {str(user): {str(b) for b in blocked} for user, blocked in block_rows}
        recipients: dict[tuple[UUID, int], list[str]] = defaultdict(list)
        for chat_id, seq, recipient in recipient_rows:
            recipients[(chat_id, seq)].append(str(recipient))
        items: list[Item] = []
        for e in self.sent:
            # The sender's other devices get it too; the device it came from has its ack.
            # Who blocked the sender gets the seq only, hidden (domain/visibility.py).
            p = e.payload
            sender, seq = p["sender"], p["seq"]
            if e.chat_id in self.changed:
                to = recipients[(e.chat_id, seq)]
            else:
                to = [u for u in members.get(e.chat_id, ()) if u != sender]
            shown: list[str] = [sender]
            hidden: list[str] = []
            for user in to:
                (hidden if sender in blocks.get(user, ()) else shown).append(user)
            items.append((shown, _message(e), (sender, p["device_id"])))
            if hidden:
                at = utc_iso(e.timestamp)
                items.append((hidden, hidden_frame(e.chat_id, seq, p["message_id"], at), None))
        for e in self.others:
            p = e.payload
            if e.type in RECEIPT_EVENTS:
                # Receipts are not shown between two users when either blocked the other.
                reader = p["user_id"]
                viewers = [
                    m
                    for m in members.get(e.chat_id, ())
                    if reader not in blocks.get(m, ()) and m not in blocks.get(reader, ())
                ]
                items.append((viewers, _receipt_frame(e), None))
            else:
                frame = {
                    "type": "chat",
                    "chat_id": str(e.chat_id),
                    "event": e.type,
                    **{k: _plain(v) for k, v in p.items()},
                }
                concerned = set(members.get(e.chat_id, ()))
                if "user_id" in p:
                    concerned.add(p["user_id"])  # the one removed or who left hears of it too
                items.append((sorted(concerned), frame, None))
        return items


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
