"""Live delivery from the processor: what a committed batch means to the users online.

When the processor decides a command it holds everything a push needs: the event, the
chat's members (the cached aggregate) and who blocked whom (the user directory, read
once per batch). So as soon as a batch is committed it hands each new message, receipt
and chat change straight to the recipients' gateways, in the same Redis round trip as
the batch's replies (`infra.routing`: each user's gateways looked up once, one publish
per gateway). The relay, Kafka and the workers are not on this path: they build the
read model that sync and the query API read. As before, the push is only speed: one
lost (Redis away, the processor killed between commit and publish) is recovered by the
client's seq gap check and sync, and a push repeated is dropped by the client's seq
check.

Who gets what:
- a message: the chat's members when it was decided, but the device it came from (it
  has its `ack`); a member who blocked the sender gets it hidden;
- a receipt: the reader's other devices and, in a 1:1 chat, the other member; in a
  group only the senders of the messages the receipt newly covers (not all 256
  members: the others read cursors with `sync_chats` and the query API). When a sender
  of the covered range is not known here (the chat was loaded from the store, or the
  range is longer than `RECENT_SENDERS`), every member gets it, as before. Receipts are
  not shown between two users when either blocked the other;
- a chat change: the members after it, and the user it concerns (removed, left).

A push can now reach a gateway before the workers have projected its event, so a device
that was offline, and syncs at once when it comes back, must not be answered from a read
model that lacks what was pushed while it was away: the sync waits until the projections
of the user's chats have reached the event store's head (`commands/gateway/sync.py`). A
chat the user joined meanwhile is not among their projected chats yet: the processor
names it in `parley:joined:<user>` for the sync to wait for too.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from commands.processor.people import People
from domain.chat import Chat, ChatKind
from domain.ids import text_of
from infra.log_envelope import event_payload
from infra.routing import Item
from projections.live_frames import (
    CHAT_EVENTS,
    RECEIPT_EVENTS,
    chat_frame,
    hidden_event_frame,
    message_event_frame,
    receipt_frame,
)

RECENT_SENDERS = 1024
"""Per chat, the senders of its latest messages remembered, to route group receipts."""
RECENT_CHATS = 20_000
"""Chats whose recent senders are remembered (least recently used forgotten first)."""


class RecentSenders:
    """Who sent each of a chat's latest messages, as the processor committed them."""

    def __init__(self) -> None:
        self._chats: OrderedDict[UUID, dict[int, str]] = OrderedDict()

    def add(self, chat_id: UUID, seq: int, sender: str) -> None:
        seqs = self._chats.get(chat_id)
        if seqs is None:
            seqs = self._chats[chat_id] = {}
            if len(self._chats) > RECENT_CHATS:
                self._chats.popitem(last=False)
        else:
            self._chats.move_to_end(chat_id)
        seqs[seq] = sender
        if len(seqs) > RECENT_SENDERS:
            del seqs[next(iter(seqs))]  # the oldest: seqs are added in order

    def of(self, chat_id: UUID, after: int, up_to: int) -> set[str] | None:
        """The senders of messages after..up_to, or None if any of them is not known."""
        if up_to - after > RECENT_SENDERS:
            return None
        seqs = self._chats.get(chat_id)
        if seqs is None:
            return None
        senders = set()
        for seq in range(after + 1, up_to + 1):
            sender = seqs.get(seq)
            if sender is None:
                return None
            senders.add(sender)
        return senders

    def forget(self, chats: Iterable[UUID]) -> None:
        for chat_id in chats:
            self._chats.pop(chat_id, None)


JOINING_EVENTS = frozenset({"DirectChatOpened", "GroupCreated", "MemberAdded"})
"""Events that make users members: remembered for their sync (`infra.routing.joined_key`)."""

Cursors = tuple[int, int]
"""A reader's (delivered, read) cursors in a chat before a command."""


def cursors_of(chat: Chat | None, user_id: UUID) -> Cursors:
    if chat is None:
        return (0, 0)
    return (chat.delivered_up_to.get(user_id, 0), chat.read_up_to.get(user_id, 0))


class LiveBatch:
    """The pushes of one attempt at a batch, computed as its commands are decided."""

    def __init__(self, people: People, recent: RecentSenders) -> None:
        self.people = people
        self.recent = recent
        self.items: list[Item] = []
        self.joins: list[tuple[str, UUID, int]] = []  # (user, chat, version that added them)
        self._sent: list[tuple[UUID, int, str]] = []
        self._frames: list[tuple[dict[str, Any], UUID, int]] = []  # (frame, chat, version)

    def note(self, chat: Chat, events: Sequence[Any], before: Cursors) -> None:
        """Add the pushes of `events`, which one command just added to `chat` (whose
        state is now after them); `before` are the actor's cursors before it."""
        delivered, read = before
        for event in events:
            kind = type(event).__name__
            p = event_payload(event)
            if kind == "MessageSent":
                self._message(chat, event, p)
            elif kind in RECEIPT_EVENTS:
                after = read if kind == "MessagesRead" else delivered
                self._receipt(chat, event, p, after)
                if kind == "MessagesRead":
                    read = max(read, p["up_to"])
                delivered = max(delivered, p["up_to"])
            elif kind in CHAT_EVENTS:
                concerned = {str(u) for u in chat.members}
                if "user_id" in p:
                    concerned.add(str(p["user_id"]))  # the one removed or who left
                self._add(sorted(concerned), chat_frame(chat.id, kind, p), event)
                if kind in JOINING_EVENTS:
                    added = p["members"] if "members" in p else [p["user_id"]]
                    version = event.originator_version
                    self.joins.extend((str(user), chat.id, version) for user in added)

    def committed(self, positions: Mapping[tuple[UUID, int], int]) -> None:
        """The batch is stored: give each frame its event's log `position` (a client
        reads its projection with it: `X-Parley-Position`), and remember the messages'
        senders for later receipts."""
        for frame, chat_id, version in self._frames:
            frame["position"] = positions.get((chat_id, version))
        for chat_id, seq, sender in self._sent:
            self.recent.add(chat_id, seq, sender)

    def _add(self, users: list[str], frame: dict[str, Any], event: Any, skip: Any = None) -> None:
        self.items.append((users, frame, skip))
        self._frames.append((frame, event.originator_id, event.originator_version))

    def _message(self, chat: Chat, event: Any, p: dict[str, Any]) -> None:
        sender: UUID = p["sender"]
        shown = [text_of(sender)]
        hidden = []
        for user in chat.members:
            if user == sender:
                continue
            if self.people.has_blocked(user, sender):
                hidden.append(text_of(user))
            else:
                shown.append(text_of(user))
        at = event.timestamp
        origin = (text_of(sender), p["device_id"])
        self._add(shown, message_event_frame(chat.id, p, at), event, origin)
        if hidden:
            self._add(hidden, hidden_event_frame(chat.id, p, at), event)
        self._sent.append((chat.id, p["seq"], text_of(sender)))

    def _receipt(self, chat: Chat, event: Any, p: dict[str, Any], after: int) -> None:
        kind = type(event).__name__
        reader: UUID = p["user_id"]
        if chat.kind == ChatKind.DIRECT:
            audience: Iterable[UUID] = chat.members
        else:
            senders = self.recent.of(chat.id, after, p["up_to"])
            if senders is None:
                audience = chat.members
            else:
                audience = [u for u in chat.members if u == reader or text_of(u) in senders]
        has_blocked = self.people.has_blocked
        viewers = [
            text_of(m)
            for m in audience
            if m == reader or not (has_blocked(m, reader) or has_blocked(reader, m))
        ]
        self._add(viewers, receipt_frame(chat.id, kind, p), event)


def audience_of(chats: Iterable[Chat | None]) -> set[UUID]:
    """Everyone a batch's pushes can concern, whose blocks the batch must read first:
    the members of the chats its commands name."""
    users: set[UUID] = set()
    for chat in chats:
        if chat is not None:
            users.update(chat.members)
    return users


def log_trail(
    log: logging.Logger, decided: Sequence[Any], outcomes: Sequence[Any], items: Iterable[Item]
) -> None:
    """The batch's lines of each command's trail (`PARLEY_LOG_LEVEL=debug`): each command
    decided, by its id with the message id and `local_id` it got, then each message
    pushed, by that message id and `local_id` (docs/observability.md)."""
    for d, outcome in zip(decided, outcomes, strict=True):
        log.debug(
            "event=command_decided command=%s chat=%s ok=%s code=%s seq=%s message=%s "
            "local_id=%s position=%s",
            d.command_id,
            d.chat_id or "-",
            outcome.ok,
            outcome.error_code or "-",
            outcome.result.get("seq", "-"),
            outcome.result.get("message_id", "-"),
            outcome.result.get("local_id", "-"),
            outcome.position,
        )
    for users, frame, _ in items:
        if frame.get("type") == "message":
            log.debug(
                "event=message_routed chat=%s seq=%s message=%s local_id=%s users=%d",
                frame.get("chat_id"),
                frame.get("seq"),
                frame.get("message_id"),
                frame.get("local_id"),
                len(users),
            )
