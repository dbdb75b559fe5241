"""The read model as a pure in-memory fold of the event log: the projections' oracle.

`ReadModel.apply(envelope)` says what every PostgreSQL projection must hold after the
same events; the property tests compare the two. It imports nothing but the envelope.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from infra.log_envelope import Envelope

SENT, DELIVERED, READ = "SENT", "DELIVERED", "READ"
RECEIPT_EVENTS = frozenset({"MessagesDelivered", "MessagesRead"})
"""Events that do not count as chat activity (they do not reorder a chat list)."""
ACTION_KINDS = frozenset({"reaction", "edit", "delete"})
NOTICE_KINDS = frozenset({*ACTION_KINDS, "timer"})


@dataclass
class ChatRow:
    kind: str
    name: str | None
    created_by: UUID
    created_at: datetime
    last_seq: int = 0
    last_message_id: int | None = None
    last_sender: UUID | None = None
    last_activity_at: datetime | None = None
    last_message_seq: int | None = None  # the newest message that is no action


@dataclass
class MemberRow:
    role: str
    active: bool
    joined_at: datetime
    delivered_up_to: int = 0
    read_up_to: int = 0


@dataclass
class MessageRow:
    message_id: int
    sender: UUID
    device_id: str
    local_id: str
    kind: str
    body: str  # base64, as in the envelope
    media: dict[str, Any] | None
    sent_at: datetime
    ref: int | None = None
    quote: dict[str, Any] | None = None
    edited_at: datetime | None = None
    deleted_at: datetime | None = None
    expires_at: datetime | None = None
    forwarded: int = 0


@dataclass
class ReceiptRow:
    status: str
    delivered_at: datetime | None = None
    read_at: datetime | None = None


@dataclass
class ReadModel:
    chats: dict[UUID, ChatRow] = field(default_factory=dict)
    members: dict[tuple[UUID, UUID], MemberRow] = field(default_factory=dict)
    # (chat, user, joined after seq) -> left at seq (None while a member)
    history: dict[tuple[UUID, UUID, int], int | None] = field(default_factory=dict)
    # (chat, user, joined after seq) -> the chat's last_message_seq when they left
    left_messages: dict[tuple[UUID, UUID, int], int | None] = field(default_factory=dict)
    messages: dict[tuple[UUID, int], MessageRow] = field(default_factory=dict)
    receipts: dict[tuple[UUID, int, UUID], ReceiptRow] = field(default_factory=dict)
    # (chat, seq) -> [recipients, delivered, read]
    counts: dict[tuple[UUID, int], list[int]] = field(default_factory=dict)
    # (recipient, chat, seq) -> (message id, created at)
    inbox: dict[tuple[UUID, UUID, int], tuple[int, datetime]] = field(default_factory=dict)
    # (user, chat) -> unread messages addressed to user
    unread: dict[tuple[UUID, UUID], int] = field(default_factory=dict)
    # (chat, seq reacted to, user) -> (emoji, reacted at)
    reactions: dict[tuple[UUID, int, UUID], tuple[str, datetime]] = field(default_factory=dict)
    # (chat, seq edited, seq of the edit) -> (replaced body as base64, written at)
    versions: dict[tuple[UUID, int, int], tuple[str, datetime]] = field(default_factory=dict)
    seen: set[UUID] = field(default_factory=set)

    def active_members(self, chat_id: UUID) -> list[UUID]:
        return [u for (c, u), m in self.members.items() if c == chat_id and m.active]

    def apply(self, e: Envelope) -> None:
        if e.event_id in self.seen:  # consumers drop re-published events by id
            return
        self.seen.add(e.event_id)
        handler = getattr(self, f"_on_{e.type}", None)
        if handler is not None:
            handler(e, e.payload)
        chat = self.chats.get(e.chat_id)
        if chat is not None and e.type not in RECEIPT_EVENTS:
            chat.last_activity_at = e.timestamp

    def _join(self, e: Envelope, user: UUID, role: str) -> None:
        chat = self.chats[e.chat_id]
        row = self.members.get((e.chat_id, user))
        if row is None:
            self.members[(e.chat_id, user)] = MemberRow(role, True, e.timestamp)
        else:
            row.role, row.active, row.joined_at = role, True, e.timestamp
        self.history[(e.chat_id, user, chat.last_seq)] = None
        self.left_messages[(e.chat_id, user, chat.last_seq)] = None

    def _leave(self, e: Envelope, user: UUID) -> None:
        row = self.members[(e.chat_id, user)]
        row.active, row.role = False, "member"
        chat = self.chats[e.chat_id]
        for key, left in self.history.items():
            if key[0] == e.chat_id and key[1] == user and left is None:
                self.history[key] = chat.last_seq
                self.left_messages[key] = chat.last_message_seq

    def _on_DirectChatOpened(self, e: Envelope, p: Any) -> None:
        self.chats[e.chat_id] = ChatRow("direct", None, UUID(p["opened_by"]), e.timestamp)
        for user in p["members"]:
            self._join(e, UUID(user), "member")

    def _on_GroupCreated(self, e: Envelope, p: Any) -> None:
        creator = UUID(p["created_by"])
        self.chats[e.chat_id] = ChatRow("group", p["name"], creator, e.timestamp)
        for user in p["members"]:
            self._join(e, UUID(user), "admin" if UUID(user) == creator else "member")

    def _on_GroupRenamed(self, e: Envelope, p: Any) -> None:
        self.chats[e.chat_id].name = p["name"]

    def _on_MemberAdded(self, e: Envelope, p: Any) -> None:
        self._join(e, UUID(p["user_id"]), "member")

    def _on_MemberRemoved(self, e: Envelope, p: Any) -> None:
        self._leave(e, UUID(p["user_id"]))

    def _on_MemberLeft(self, e: Envelope, p: Any) -> None:
        self._leave(e, UUID(p["user_id"]))

    def _on_AdminPromoted(self, e: Envelope, p: Any) -> None:
        self.members[(e.chat_id, UUID(p["user_id"]))].role = "admin"

    def _on_AdminDemoted(self, e: Envelope, p: Any) -> None:
        self.members[(e.chat_id, UUID(p["user_id"]))].role = "member"

    def _on_MessageSent(self, e: Envelope, p: Any) -> None:
        seq, sender = int(p["seq"]), UUID(p["sender"])
        message_id = int(p["message_id"])
        self.messages[(e.chat_id, seq)] = MessageRow(
            message_id,
            sender,
            p["device_id"],
            p["local_id"],
            p["kind"],
            p["body"],
            p["media"],
            e.timestamp,
            p.get("ref"),
            p.get("quote"),
            expires_at=(
                e.timestamp + timedelta(seconds=p["timer_s"])
                if p.get("timer_s") and p["kind"] not in NOTICE_KINDS
                else None
            ),
            forwarded=p.get("forwarded", 0),
        )
        chat = self.chats[e.chat_id]
        chat.last_seq, chat.last_message_id, chat.last_sender = seq, message_id, sender
        if p["kind"] not in ACTION_KINDS:
            chat.last_message_seq = seq
        recipients = [u for u in self.active_members(e.chat_id) if u != sender]
        for user in recipients:
            self.inbox[(user, e.chat_id, seq)] = (message_id, e.timestamp)
        if p["kind"] in NOTICE_KINDS:  # no receipts, nobody's unread
            if p["kind"] in ACTION_KINDS:
                self._act(e, p)
            return
        self.counts[(e.chat_id, seq)] = [len(recipients), 0, 0]
        for user in recipients:
            self.receipts[(e.chat_id, seq, user)] = ReceiptRow(SENT)
            self.unread[(user, e.chat_id)] = self.unread.get((user, e.chat_id), 0) + 1

    def _act(self, e: Envelope, p: Any) -> None:
        """A reaction, edit or delete of message `ref` (projector.py's `_on_<kind>`)."""
        chat_id, seq, ref, kind = e.chat_id, int(p["seq"]), int(p["ref"]), p["kind"]
        target = self.messages.get((chat_id, ref))
        if kind == "reaction":
            if p["body"]:
                emoji = base64.b64decode(p["body"]).decode("utf-8")
                self.reactions[(chat_id, ref, UUID(p["sender"]))] = (emoji, e.timestamp)
            else:
                self.reactions.pop((chat_id, ref, UUID(p["sender"])), None)
        elif kind == "edit" and target is not None and target.deleted_at is None:
            written = target.edited_at or target.sent_at
            self.versions.setdefault((chat_id, ref, seq), (target.body, written))
            for (c, s), row in self.messages.items():
                if c == chat_id and row.ref == ref and row.kind == "edit" and s < seq:
                    row.body = ""
            target.body, target.edited_at = p["body"], e.timestamp
        elif kind == "delete":
            if target is not None:
                target.body, target.media, target.quote = "", None, None
                target.edited_at, target.deleted_at = None, e.timestamp
            for row in [r for (c, _), r in self.messages.items() if c == chat_id]:
                if row.ref == ref and row.kind in ("edit", "reaction"):
                    row.body = ""
                elif row.ref == ref and row.kind not in NOTICE_KINDS:
                    row.quote = {"seq": ref, "deleted": True}
            for version in [k for k in self.versions if k[:2] == (chat_id, ref)]:
                del self.versions[version]
            for reaction in [k for k in self.reactions if k[:2] == (chat_id, ref)]:
                del self.reactions[reaction]

    def _on_MessagesDelivered(self, e: Envelope, p: Any) -> None:
        user, up_to = UUID(p["user_id"]), int(p["up_to"])
        member = self.members[(e.chat_id, user)]
        member.delivered_up_to = max(member.delivered_up_to, up_to)
        self._deliver(e, user, up_to)

    def _on_MessagesRead(self, e: Envelope, p: Any) -> None:
        user, up_to = UUID(p["user_id"]), int(p["up_to"])
        member = self.members[(e.chat_id, user)]
        member.delivered_up_to = max(member.delivered_up_to, up_to)
        member.read_up_to = max(member.read_up_to, up_to)
        self._deliver(e, user, up_to)
        for (chat_id, seq, recipient), receipt in self.receipts.items():
            mine = chat_id == e.chat_id and recipient == user and seq <= up_to
            if mine and receipt.status != READ:
                receipt.status, receipt.read_at = READ, e.timestamp
                self.counts[(chat_id, seq)][2] += 1
                self.unread[(user, chat_id)] -= 1

    def _deliver(self, e: Envelope, user: UUID, up_to: int) -> None:
        for (chat_id, seq, recipient), receipt in self.receipts.items():
            mine = chat_id == e.chat_id and recipient == user and seq <= up_to
            if mine and receipt.status == SENT:
                receipt.status, receipt.delivered_at = DELIVERED, e.timestamp
                self.counts[(chat_id, seq)][1] += 1
        for key in [k for k in self.inbox if k[0] == user and k[1] == e.chat_id and k[2] <= up_to]:
            del self.inbox[key]
