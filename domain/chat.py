"""The chat aggregate: one 1:1 or group conversation, its members, messages and receipts.

Over 400 lines on purpose: one aggregate, its events and the rule of each command;
the eventsourcing library reads an aggregate and its events as one class.
"""

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Self, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as AggregateSnapshot

from domain.errors import (
    Blocked,
    GroupFull,
    InvalidBody,
    InvalidGroup,
    InvalidSeq,
    InvalidTimer,
    LastAdmin,
    MessageDeleted,
    NotAdmin,
    NotEditable,
    NotGroup,
    NotMember,
    NotSender,
    TooLate,
    UnknownMessage,
)
from domain.ids import direct_chat_id
from domain.membership import Interval, joined, left, was_member
from domain.message_actions import ACTION_MEMORY, Remembered, excerpt_of, validate_reaction
from domain.messages import (
    ACTION_KINDS,
    MAX_BODY_BYTES,
    NOTICE_KINDS,
    MediaRef,
    MessageKind,
    validate_message,
)

EDIT_WINDOW_MS = 15 * 60 * 1000
"""Default time a sender has to edit a message (WhatsApp's); settings override it."""
DELETE_WINDOW_MS = 2 * 24 * 3600 * 1000
"""Default time to delete a message for everyone (about WhatsApp's); settings override it."""
MAX_FORWARDS = 1_000_000
"""A bound on a message's forward count: the client shows "many times" from five."""
DISAPPEARING_TIMERS_S = (0, 24 * 3600, 7 * 24 * 3600, 90 * 24 * 3600)
"""The disappearing-message timers a chat offers (0: off), WhatsApp's; settings override."""

MAX_GROUP_MEMBERS = 256
MAX_GROUP_NAME_CHARS = 100
MAX_CLIENT_ID_CHARS = 128
"""Limit on `device_id` and `local_id`, which the chat remembers for resends."""

SEND_MEMORY = 1_000
"""How many of a device's latest sends in a chat are recognised when resent.

A resend of any of them answers the original message; an older `local_id` would be a
new message. A client resends only sends it has no `ack` for, and a connection has at
most 256 commands unanswered (`commands/gateway/gateway.py`), so a device that resends before
making 1,000 newer sends in that chat never stores a message twice. The bound keeps
the chat's state, and each snapshot of it, the same size however long the chat runs.
"""

SendKey = tuple[UUID, str, str]
"""(sender, device_id, local_id): what makes a resend recognisable."""


class ChatKind(StrEnum):
    """Whether a chat is between two users or a group."""

    DIRECT = "direct"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of `Chat.send`: the message's id and seq, and whether it was a resend."""

    message_id: int
    seq: int
    duplicate: bool


class Chat(Aggregate):
    """A conversation that orders its messages by a gapless `seq` starting at 1.

    Groups have admins. When the only admin leaves, the member who has belonged
    longest without a break is promoted (an explicit `AdminPromoted` with `by` set to
    the leaver); the only admin cannot demote themselves (`last_admin`). So a group
    with members always has an admin.
    """

    class_version = 1

    class Event(Aggregate.Event):
        class_version = 1

    class DirectChatOpened(Event, Aggregate.Created):
        class_version = 1
        members: list[UUID]
        opened_by: UUID

        def apply(self, aggregate: "Chat") -> None:
            aggregate._start(ChatKind.DIRECT, None, self.members)

    class GroupCreated(Event, Aggregate.Created):
        """`members` lists everyone, the creator first."""

        class_version = 1
        name: str
        created_by: UUID
        members: list[UUID]

        def apply(self, aggregate: "Chat") -> None:
            aggregate._start(ChatKind.GROUP, self.name, self.members)
            aggregate._admins.add(self.created_by)

    class GroupRenamed(Event):
        class_version = 1
        name: str
        by: UUID

        def apply(self, aggregate: "Chat") -> None:
            aggregate.name = self.name

    class MemberAdded(Event):
        class_version = 1
        user_id: UUID
        by: UUID

        def apply(self, aggregate: "Chat") -> None:
            aggregate._join(self.user_id)

    class MemberRemoved(Event):
        class_version = 1
        user_id: UUID
        by: UUID

        def apply(self, aggregate: "Chat") -> None:
            aggregate._leave(self.user_id)

    class MemberLeft(Event):
        class_version = 1
        user_id: UUID

        def apply(self, aggregate: "Chat") -> None:
            aggregate._leave(self.user_id)

    class AdminPromoted(Event):
        class_version = 1
        user_id: UUID
        by: UUID

        def apply(self, aggregate: "Chat") -> None:
            aggregate._admins.add(self.user_id)

    class AdminDemoted(Event):
        class_version = 1
        user_id: UUID
        by: UUID

        def apply(self, aggregate: "Chat") -> None:
            aggregate._admins.discard(self.user_id)

    class MessageSent(Event):
        """`kind` is a `MessageKind` value; `media` is `MediaRef.to_dict()` or None.

        `ref` is the seq of the message this one answers (a reply) or acts on (a
        reaction, edit or delete: domain/message_actions.py); `quote` is what a reply
        shows of the message it answers (`Remembered.quote`). `timer_s`: the chat's
        disappearing-messages timer, on a message sent while it was on (the message
        disappears that long after it was sent), and on a `timer` message, which sets
        it (0: off). `forwarded`: how many times the content was forwarded to get here
        (0: written here)."""

        class_version = 2
        seq: int
        message_id: int
        sender: UUID
        device_id: str
        local_id: str
        kind: str
        body: bytes
        media: dict[str, Any] | None
        sent_at_ms: int
        ref: int | None
        quote: dict[str, Any] | None
        timer_s: int | None
        forwarded: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["ref"] = None
            state["quote"] = None
            state["timer_s"] = None
            state["forwarded"] = 0

        def apply(self, aggregate: "Chat") -> None:
            aggregate._last_seq = self.seq
            key = (self.sender, self.device_id, self.local_id)
            remember(aggregate._sent, key, self.message_id, self.seq)
            recent = aggregate._recent
            target = recent.get(self.ref) if self.ref is not None else None
            if self.kind == MessageKind.TIMER:
                aggregate._timer_s = self.timer_s or 0
            elif self.kind == MessageKind.EDIT and target is not None:
                target.excerpt = excerpt_of(MessageKind.TEXT, self.body)
            elif self.kind == MessageKind.DELETE and target is not None:
                target.deleted, target.excerpt = True, ""
            elif self.kind not in NOTICE_KINDS:
                excerpt = excerpt_of(self.kind, self.body)
                expires = self.sent_at_ms + 1000 * self.timer_s if self.timer_s else None
                recent[self.seq] = Remembered(
                    self.sender, self.sent_at_ms, self.kind, excerpt, expires_at_ms=expires
                )
                if len(recent) > ACTION_MEMORY:
                    del recent[next(iter(recent))]

    class MessagesDelivered(Event):
        class_version = 1
        user_id: UUID
        up_to: int

        def apply(self, aggregate: "Chat") -> None:
            aggregate._delivered_up_to[self.user_id] = self.up_to

    class MessagesRead(Event):
        """Reading implies delivery: this also moves the delivered cursor up."""

        class_version = 1
        user_id: UUID
        up_to: int

        def apply(self, aggregate: "Chat") -> None:
            aggregate._read_up_to[self.user_id] = self.up_to
            delivered = aggregate._delivered_up_to.get(self.user_id, 0)
            aggregate._delivered_up_to[self.user_id] = max(delivered, self.up_to)

    class Snapshot(AggregateSnapshot):
        """A snapshot whose state is JSON-friendly: no sets, tuples or UUID-keyed dicts.

        The state is the aggregate's attributes in that plain form, so renaming one
        needs `Chat.class_version` raised and an `upcast_v1_v2` that works on it.
        """

        @classmethod
        def take(cls, aggregate: Any) -> Self:
            snapshot = super().take(aggregate)
            return replace(snapshot, state=_plain_state(snapshot.state))

        def mutate(self, _: None) -> "Chat":
            chat = cast("Chat", super().mutate(None))
            vars(chat).pop("_senders", None)  # kept by snapshots from before `SEND_MEMORY`
            vars(chat).update(_rich_state(vars(chat)))
            return chat

    def __init__(self) -> None:
        self.kind = ChatKind.DIRECT
        self.name: str | None = None
        self._members: dict[UUID, None] = {}  # in order of joining, longest-standing first
        self._admins: set[UUID] = set()
        self._member_since: dict[UUID, tuple[Interval, ...]] = {}
        self._last_seq = 0
        # (sender, device_id) -> local_id -> (message_id, seq), the last SEND_MEMORY, oldest first
        self._sent: dict[tuple[UUID, str], dict[str, tuple[int, int]]] = {}
        self._delivered_up_to: dict[UUID, int] = {}
        self._read_up_to: dict[UUID, int] = {}
        # seq -> what actions need of it, the last ACTION_MEMORY messages, oldest first
        self._recent: dict[int, Remembered] = {}
        self._timer_s = 0  # disappearing messages: 0 (off) or how long a message lasts

    # Creation

    @classmethod
    def open_direct(cls, user_a: UUID, user_b: UUID, opened_by: UUID) -> Self:
        """Open the 1:1 chat of two users; its id is `direct_chat_id(user_a, user_b)`."""
        if user_a == user_b:
            raise InvalidGroup("a direct chat needs two different users")
        if opened_by not in (user_a, user_b):
            raise NotMember("only one of the two users can open their direct chat")
        return cls._create(
            cls.DirectChatOpened,
            id=direct_chat_id(user_a, user_b),
            members=sorted((user_a, user_b)),
            opened_by=opened_by,
        )

    @classmethod
    def create_group(
        cls,
        chat_id: UUID,
        name: str,
        created_by: UUID,
        members: Iterable[UUID],
        max_members: int = MAX_GROUP_MEMBERS,
    ) -> Self:
        """Create a group; the creator is its first admin and must not be in `members`."""
        others = list(members)
        if created_by in others:
            raise InvalidGroup("the creator is a member already; leave them out of the list")
        if len(set(others)) != len(others):
            raise InvalidGroup("the member list has duplicates")
        if 1 + len(others) > max_members:
            raise GroupFull(f"a group has at most {max_members} members")
        return cls._create(
            cls.GroupCreated,
            id=chat_id,
            name=_group_name(name),
            created_by=created_by,
            members=[created_by, *others],
        )

    # Group administration

    def rename(self, name: str, by: UUID) -> bool:
        """Rename the group; False if it already has that name."""
        self._require_admin(by)
        name = _group_name(name)
        if name == self.name:
            return False
        self.trigger_event(self.GroupRenamed, name=name, by=by)
        return True

    def add_member(self, user_id: UUID, by: UUID, max_members: int = MAX_GROUP_MEMBERS) -> bool:
        """Add a user (again); False if they are a member already."""
        self._require_admin(by)
        if user_id in self._members:
            return False
        if len(self._members) >= max_members:
            raise GroupFull(f"a group has at most {max_members} members")
        self.trigger_event(self.MemberAdded, user_id=user_id, by=by)
        return True

    def remove_member(self, user_id: UUID, by: UUID) -> bool:
        """Remove another member; False if they are not a member. Admins leave, not remove."""
        self._require_admin(by)
        if user_id == by:
            raise InvalidGroup("use leave to leave a group")
        if user_id not in self._members:
            return False
        self.trigger_event(self.MemberRemoved, user_id=user_id, by=by)
        return True

    def leave(self, user_id: UUID) -> bool:
        """Leave the group; False if not a member. The only admin hands over (see `Chat`)."""
        self._require_group()
        if user_id not in self._members:
            return False
        was_only_admin = self._admins == {user_id}
        self.trigger_event(self.MemberLeft, user_id=user_id)
        if was_only_admin and self._members:
            successor = next(iter(self._members))
            self.trigger_event(self.AdminPromoted, user_id=successor, by=user_id)
        return True

    def promote(self, user_id: UUID, by: UUID) -> bool:
        """Make a member an admin; False if they are one already."""
        self._require_admin(by)
        self._require_member(user_id)
        if user_id in self._admins:
            return False
        self.trigger_event(self.AdminPromoted, user_id=user_id, by=by)
        return True

    def demote(self, user_id: UUID, by: UUID) -> bool:
        """Take admin rights away; False if the user is not an admin."""
        self._require_admin(by)
        if user_id not in self._admins:
            return False
        if self._admins == {user_id}:
            raise LastAdmin()
        self.trigger_event(self.AdminDemoted, user_id=user_id, by=by)
        return True

    # Messages

    def send(
        self,
        sender: UUID,
        device_id: str,
        local_id: str,
        kind: MessageKind | str,
        body: bytes,
        media: MediaRef | None,
        message_id: int,
        sent_at_ms: int,
        max_body: int = MAX_BODY_BYTES,
        sender_blocked_peer: bool = False,
        reply_to: int | None = None,
        forwarded: int = 0,
    ) -> SendResult:
        """Append a message with the next seq; a resend returns the original, adding nothing.

        `sender_blocked_peer`: the sender blocked the other user of this 1:1 chat, so
        they may not write in it until they unblock (`blocked`); a resend of a message
        stored before the block still answers the original. `reply_to`: the seq of the
        message this one answers, quoted in it (`Remembered.quote`).
        """
        original = self._resent(sender, device_id, local_id)
        if original is not None:
            return original
        self._check_sender(sender, device_id, local_id, sender_blocked_peer)
        message_kind = validate_message(kind, body, media, max_body)
        if not 0 <= forwarded <= MAX_FORWARDS:
            raise InvalidBody(f"forwarded counts 0..{MAX_FORWARDS} hops")
        quote = None if reply_to is None else self._target(reply_to).quote(reply_to, sent_at_ms)
        return self._append(
            sender,
            device_id,
            local_id,
            message_kind,
            body,
            media,
            message_id,
            sent_at_ms,
            ref=reply_to,
            quote=quote,
            timer_s=self._timer_s or None,
            forwarded=forwarded,
        )

    def set_timer(
        self,
        user: UUID,
        device_id: str,
        local_id: str,
        timer_s: int,
        message_id: int,
        sent_at_ms: int,
        timers_s: Iterable[int] = DISAPPEARING_TIMERS_S,
    ) -> SendResult:
        """Set the chat's disappearing-messages timer (0: off), announced by a `timer`
        message: by either user of a 1:1 chat, by an admin of a group. Messages sent
        from then on disappear `timer_s` after they are sent."""
        original = self._resent(user, device_id, local_id)
        if original is not None:
            return original
        self._check_sender(user, device_id, local_id, False)
        if self.kind == ChatKind.GROUP:
            self._require_admin(user)
        allowed = sorted(timers_s)
        if timer_s not in allowed:
            raise InvalidTimer(f"timer_s must be one of {allowed}")
        return self._append(
            user,
            device_id,
            local_id,
            MessageKind.TIMER,
            str(timer_s).encode(),
            None,
            message_id,
            sent_at_ms,
            timer_s=timer_s,
        )

    def act(
        self,
        sender: UUID,
        device_id: str,
        local_id: str,
        kind: MessageKind | str,
        ref: int,
        body: bytes,
        message_id: int,
        sent_at_ms: int,
        edit_window_ms: int = EDIT_WINDOW_MS,
        delete_window_ms: int = DELETE_WINDOW_MS,
        max_body: int = MAX_BODY_BYTES,
        sender_blocked_peer: bool = False,
    ) -> SendResult:
        """Append an action on message `ref`: a reaction (`body` one emoji, or empty to
        remove one's reaction), an edit (`body` the new text) or a delete for everyone.

        Edit: the sender, a text message, within `edit_window_ms`. Delete: the sender,
        or an admin of the group, within `delete_window_ms`. Nothing acts on a deleted
        or disappeared message. A resend answers the original, like a send's.
        """
        original = self._resent(sender, device_id, local_id)
        if original is not None:
            return original
        action = MessageKind(kind) if kind in set(MessageKind) else None
        if action not in ACTION_KINDS:
            raise InvalidBody(f"{kind!r} is not an action on a message")
        assert action is not None
        self._check_sender(
            sender, device_id, local_id, sender_blocked_peer and action != MessageKind.DELETE
        )
        target = self._target(ref)
        if target.gone(sent_at_ms):
            raise MessageDeleted()
        if action == MessageKind.REACTION:
            body = validate_reaction(_utf8(body)).encode("utf-8")
        elif action == MessageKind.EDIT:
            if target.sender != sender:
                raise NotSender()
            if target.kind != MessageKind.TEXT:
                raise NotEditable()
            if sent_at_ms - target.sent_at_ms > edit_window_ms:
                raise TooLate(f"a message can be edited for {edit_window_ms // 1000} s")
            validate_message(MessageKind.TEXT, body, None, max_body)
        else:
            if target.sender != sender and not (
                self.kind == ChatKind.GROUP and sender in self._admins
            ):
                raise NotSender("only the sender, or an admin of the group, may delete it")
            if sent_at_ms - target.sent_at_ms > delete_window_ms:
                raise TooLate(f"a message can be deleted for {delete_window_ms // 1000} s")
            body = b""
        return self._append(
            sender, device_id, local_id, action, body, None, message_id, sent_at_ms, ref=ref
        )

    def _resent(self, sender: UUID, device_id: str, local_id: str) -> SendResult | None:
        original = self._sent.get((sender, device_id), {}).get(local_id)
        if original is None:
            return None
        return SendResult(message_id=original[0], seq=original[1], duplicate=True)

    def _check_sender(
        self, sender: UUID, device_id: str, local_id: str, sender_blocked_peer: bool
    ) -> None:
        self._require_member(sender)
        if sender_blocked_peer and self.kind == ChatKind.DIRECT:
            raise Blocked()
        for label, value in (("device_id", device_id), ("local_id", local_id)):
            if not 0 < len(value) <= MAX_CLIENT_ID_CHARS:
                raise InvalidBody(f"{label} must be 1..{MAX_CLIENT_ID_CHARS} characters")

    def _target(self, ref: int) -> Remembered:
        target = self._recent.get(ref)
        if target is None:
            raise UnknownMessage(
                f"seq {ref} is not one of the last {ACTION_MEMORY} messages of this chat"
            )
        return target

    def _append(
        self,
        sender: UUID,
        device_id: str,
        local_id: str,
        kind: MessageKind,
        body: bytes,
        media: MediaRef | None,
        message_id: int,
        sent_at_ms: int,
        ref: int | None = None,
        quote: dict[str, Any] | None = None,
        timer_s: int | None = None,
        forwarded: int = 0,
    ) -> SendResult:
        seq = self._last_seq + 1
        self.trigger_event(
            self.MessageSent,
            seq=seq,
            message_id=message_id,
            sender=sender,
            device_id=device_id,
            local_id=local_id,
            kind=kind.value,
            body=body,
            media=None if media is None else media.to_dict(),
            sent_at_ms=sent_at_ms,
            ref=ref,
            quote=quote,
            timer_s=timer_s,
            forwarded=forwarded,
        )
        return SendResult(message_id=message_id, seq=seq, duplicate=False)

    # Receipts

    def mark_delivered(self, user_id: UUID, up_to: int) -> bool:
        """Move the user's delivered cursor up to `up_to`; False if it is there already."""
        self._check_receipt(user_id, up_to)
        if up_to <= self._delivered_up_to.get(user_id, 0):
            return False
        self.trigger_event(self.MessagesDelivered, user_id=user_id, up_to=up_to)
        return True

    def mark_read(self, user_id: UUID, up_to: int) -> bool:
        """Move the user's read (and delivered) cursor up to `up_to`; False if read already."""
        self._check_receipt(user_id, up_to)
        if up_to <= self._read_up_to.get(user_id, 0):
            return False
        self.trigger_event(self.MessagesRead, user_id=user_id, up_to=up_to)
        return True

    # Queries

    @property
    def last_seq(self) -> int:
        """The seq of the latest message; 0 before the first."""
        return self._last_seq

    @property
    def timer_s(self) -> int:
        """The disappearing-messages timer: 0 (off) or how long a new message lasts."""
        return self._timer_s

    @property
    def recent(self) -> Mapping[int, Remembered]:
        """What the chat keeps of its last `ACTION_MEMORY` messages, by seq."""
        return self._recent

    @property
    def members(self) -> Set[UUID]:
        """Current members."""
        return self._members.keys()

    @property
    def admins(self) -> Set[UUID]:
        """Current admins of a group; empty for a direct chat."""
        return frozenset(self._admins)

    @property
    def member_since(self) -> Mapping[UUID, tuple[Interval, ...]]:
        """Everyone who ever belonged, with their seq intervals (see `domain.membership`)."""
        return self._member_since

    @property
    def delivered_up_to(self) -> Mapping[UUID, int]:
        """Per user, the highest seq delivered to them (absent means 0)."""
        return self._delivered_up_to

    @property
    def read_up_to(self) -> Mapping[UUID, int]:
        """Per user, the highest seq they have read (absent means 0)."""
        return self._read_up_to

    @property
    def sent(self) -> Mapping[SendKey, tuple[int, int]]:
        """The sends a resend is recognised by (`SEND_MEMORY` per device), with their
        (message_id, seq)."""
        return {
            (sender, device_id, local_id): sent
            for (sender, device_id), by_local_id in self._sent.items()
            for local_id, sent in by_local_id.items()
        }

    def peer_of(self, user_id: UUID) -> UUID | None:
        """In a 1:1 chat, the other of its two users; None in a group."""
        if self.kind != ChatKind.DIRECT:
            return None
        return next((other for other in self._member_since if other != user_id), None)

    def was_member_at(self, user_id: UUID, seq: int) -> bool:
        """Whether the user belonged to the chat when message `seq` was sent."""
        return was_member(self._member_since.get(user_id, ()), seq)

    def recipients_of(self, seq: int, sender: UUID) -> frozenset[UUID]:
        """Who should receive message `seq` from `sender`: the members at that seq but them.

        The sender comes from the message (its event or its row): the chat does not keep
        a list as long as its history.
        """
        if not 1 <= seq <= self._last_seq:
            raise InvalidSeq(f"seq must be in 1..{self._last_seq}")
        return frozenset(
            user
            for user, history in self._member_since.items()
            if user != sender and was_member(history, seq)
        )

    # Rules shared by the commands

    def _require_group(self) -> None:
        if self.kind != ChatKind.GROUP:
            raise NotGroup()

    def _require_member(self, user_id: UUID) -> None:
        if user_id not in self._members:
            raise NotMember()

    def _require_admin(self, user_id: UUID) -> None:
        self._require_group()
        self._require_member(user_id)
        if user_id not in self._admins:
            raise NotAdmin()

    def _check_receipt(self, user_id: UUID, up_to: int) -> None:
        self._require_member(user_id)
        if not 0 <= up_to <= self._last_seq:
            raise InvalidSeq(f"up_to must be in 0..{self._last_seq}")

    # State changes shared by the events

    def _start(self, kind: ChatKind, name: str | None, members: list[UUID]) -> None:
        self.kind = kind
        self.name = name
        for user_id in members:
            self._join(user_id)

    def _join(self, user_id: UUID) -> None:
        self._members[user_id] = None
        self._member_since[user_id] = joined(self._member_since.get(user_id, ()), self._last_seq)

    def _leave(self, user_id: UUID) -> None:
        del self._members[user_id]
        self._admins.discard(user_id)
        self._member_since[user_id] = left(self._member_since[user_id], self._last_seq)


def _group_name(name: str) -> str:
    """The name with surrounding blanks removed, if it is a valid group name."""
    stripped = name.strip()
    if not stripped:
        raise InvalidGroup("a group needs a name")
    if len(stripped) > MAX_GROUP_NAME_CHARS:
        raise InvalidGroup(f"a group name has at most {MAX_GROUP_NAME_CHARS} characters")
    return stripped


def remember(
    sent: dict[tuple[UUID, str], dict[str, tuple[int, int]]],
    key: SendKey,
    message_id: int,
    seq: int,
) -> None:
    """Note a device's send, forgetting its oldest beyond `SEND_MEMORY`."""
    sender, device_id, local_id = key
    by_local_id = sent.get((sender, device_id))
    if by_local_id is None:
        by_local_id = sent[(sender, device_id)] = {}
    by_local_id[local_id] = (message_id, seq)
    if len(by_local_id) > SEND_MEMORY:
        del by_local_id[next(iter(by_local_id))]


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """Chat state as lists and str-keyed dicts, for a snapshot."""
    return {
        **state,
        "kind": str(state["kind"]),
        "_members": list(state["_members"]),
        "_admins": sorted(state["_admins"]),
        "_member_since": [
            [user, [list(interval) for interval in history]]
            for user, history in state["_member_since"].items()
        ],
        "_sent": [
            [sender, device_id, local_id, *sent]
            for (sender, device_id), by_local_id in state["_sent"].items()
            for local_id, sent in by_local_id.items()
        ],
        "_delivered_up_to": [list(item) for item in state["_delivered_up_to"].items()],
        "_read_up_to": [list(item) for item in state["_read_up_to"].items()],
        "_recent": [[seq, *facts.plain()] for seq, facts in state["_recent"].items()],
    }


def _rich_state(plain: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `_plain_state`. A snapshot taken before sends were bounded, with
    every send, keeps the last `SEND_MEMORY` of each device."""
    sent: dict[tuple[UUID, str], dict[str, tuple[int, int]]] = {}
    for sender, device_id, local_id, message_id, seq in plain["_sent"]:
        remember(sent, (sender, device_id, local_id), message_id, seq)
    return {
        **plain,
        "kind": ChatKind(plain["kind"]),
        "_members": dict.fromkeys(plain["_members"]),
        "_admins": set(plain["_admins"]),
        "_member_since": {
            user: tuple((after, until) for after, until in history)
            for user, history in plain["_member_since"]
        },
        "_sent": sent,
        "_delivered_up_to": dict(plain["_delivered_up_to"]),
        "_read_up_to": dict(plain["_read_up_to"]),
        # A snapshot from before actions: messages before it cannot be acted on.
        "_recent": {seq: Remembered.from_plain(facts) for seq, *facts in plain.get("_recent", [])},
        "_timer_s": plain.get("_timer_s", 0),
    }


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("the body must be UTF-8") from None
