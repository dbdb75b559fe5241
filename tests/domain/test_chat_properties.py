"""Random interleavings of chat commands against the rules the chat must keep."""

from collections.abc import Callable
from functools import reduce
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from domain import (
    Chat,
    DomainError,
    GroupFull,
    InvalidGroup,
    InvalidSeq,
    LastAdmin,
    NotAdmin,
    NotMember,
    SendResult,
)

pytestmark = pytest.mark.unit

USERS = [UUID(int=n) for n in range(1, 7)]
CREATOR = USERS[0]
MAX_MEMBERS = 4

users = st.sampled_from(USERS)
SendKey = tuple[UUID, str, str]


class ChatMachine(RuleBasedStateMachine):
    """Drives one group chat and checks its invariants after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.chat: Chat
        self.events: list[CanMutateAggregate[UUID]] = []
        self.sends: list[tuple[SendKey, SendResult]] = []
        self.recipients_at_send: dict[int, tuple[UUID, frozenset[UUID]]] = {}
        self.cursors: dict[UUID, tuple[int, int]] = {}
        self.next_local_id = 0

    def attempt(self, command: Callable[[], bool], error: type[DomainError] | None) -> bool:
        """Run a command that must raise `error`, or must succeed when `error` is None."""
        if error is None:
            changed = command()
        else:
            with pytest.raises(error):
                command()
            changed = False
        self.events.extend(self.chat.collect_events())
        return changed

    def admin_error(self, by: UUID) -> type[DomainError] | None:
        if by not in self.chat.members:
            return NotMember
        return None if by in self.chat.admins else NotAdmin

    @initialize(others=st.lists(st.sampled_from(USERS[1:]), unique=True, max_size=MAX_MEMBERS - 1))
    def create(self, others: list[UUID]) -> None:
        self.chat = Chat.create_group(uuid4(), "Climbing", CREATOR, others, MAX_MEMBERS)
        self.events.extend(self.chat.collect_events())

    @rule(sender=users, device_id=st.sampled_from(["phone", "web"]))
    def send_new(self, sender: UUID, device_id: str) -> None:
        self.next_local_id += 1
        local_id = f"l-{self.next_local_id}"
        members, seq = frozenset(self.chat.members), self.chat.last_seq + 1
        message_id = 10_000 + self.next_local_id

        def send() -> bool:
            result = self.chat.send(sender, device_id, local_id, "text", b"hi", None, message_id, 0)
            assert result == SendResult(message_id, seq, duplicate=False)
            self.sends.append(((sender, device_id, local_id), result))
            self.recipients_at_send[seq] = (sender, members - {sender})
            return True

        self.attempt(send, None if sender in members else NotMember)

    @precondition(lambda self: bool(self.sends))
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        (sender, device_id, local_id), original = data.draw(st.sampled_from(self.sends))
        result = self.chat.send(sender, device_id, local_id, "text", b"x", None, 1, 0)
        assert result == SendResult(original.message_id, original.seq, duplicate=True)
        assert self.chat.collect_events() == []

    @rule(by=users, user_id=users)
    def add(self, by: UUID, user_id: UUID) -> None:
        error = self.admin_error(by)
        if error is None and user_id not in self.chat.members:
            error = GroupFull if len(self.chat.members) >= MAX_MEMBERS else None
        expected = user_id not in self.chat.members
        changed = self.attempt(lambda: self.chat.add_member(user_id, by, MAX_MEMBERS), error)
        assert changed == (error is None and expected)

    @precondition(lambda self: bool(set(self.chat.member_since) - set(self.chat.members)))
    @rule(data=st.data())
    def rejoin(self, data: st.DataObject) -> None:
        former = sorted(set(self.chat.member_since) - set(self.chat.members))
        user_id = data.draw(st.sampled_from(former))
        by = data.draw(st.sampled_from(sorted(self.chat.admins) or USERS))
        error = self.admin_error(by)
        if error is None and len(self.chat.members) >= MAX_MEMBERS:
            error = GroupFull
        assert self.attempt(lambda: self.chat.add_member(user_id, by, MAX_MEMBERS), error) == (
            error is None
        )

    @rule(by=users, user_id=users)
    def remove(self, by: UUID, user_id: UUID) -> None:
        error = self.admin_error(by) or (InvalidGroup if user_id == by else None)
        expected = user_id in self.chat.members
        changed = self.attempt(lambda: self.chat.remove_member(user_id, by), error)
        assert changed == (error is None and expected)

    @rule(user_id=users)
    def leave(self, user_id: UUID) -> None:
        was_member = user_id in self.chat.members
        only_admin = self.chat.admins == {user_id}
        longest = [member for member in self.chat.members if member != user_id][:1]
        assert self.attempt(lambda: self.chat.leave(user_id), None) == was_member
        if was_member and only_admin:
            assert self.chat.admins == set(longest)

    @rule(by=users, user_id=users)
    def promote(self, by: UUID, user_id: UUID) -> None:
        error = self.admin_error(by) or (None if user_id in self.chat.members else NotMember)
        expected = user_id not in self.chat.admins
        changed = self.attempt(lambda: self.chat.promote(user_id, by), error)
        assert changed == (error is None and expected)

    @rule(by=users, user_id=users)
    def demote(self, by: UUID, user_id: UUID) -> None:
        error = self.admin_error(by)
        expected = user_id in self.chat.admins
        if error is None and self.chat.admins == {user_id}:
            error = LastAdmin
        changed = self.attempt(lambda: self.chat.demote(user_id, by), error)
        assert changed == (error is None and expected)

    @rule(user_id=users, up_to=st.integers(-1, 12), read=st.booleans())
    def acknowledge(self, user_id: UUID, up_to: int, read: bool) -> None:
        error: type[DomainError] | None = None
        if user_id not in self.chat.members:
            error = NotMember
        elif not 0 <= up_to <= self.chat.last_seq:
            error = InvalidSeq
        cursors = self.chat.read_up_to if read else self.chat.delivered_up_to
        expected = up_to > cursors.get(user_id, 0)
        mark = self.chat.mark_read if read else self.chat.mark_delivered
        assert self.attempt(lambda: mark(user_id, up_to), error) == (error is None and expected)

    @invariant()
    def seqs_are_gapless(self) -> None:
        seqs = [event.seq for event in self.events if isinstance(event, Chat.MessageSent)]
        assert seqs == list(range(1, self.chat.last_seq + 1))

    @invariant()
    def each_send_key_appears_once(self) -> None:
        keys = [
            (event.sender, event.device_id, event.local_id)
            for event in self.events
            if isinstance(event, Chat.MessageSent)
        ]
        assert len(keys) == len(set(keys)) == len(self.chat.sent)

    @invariant()
    def recipients_were_members_at_send_time(self) -> None:
        for seq, (sender, expected) in self.recipients_at_send.items():
            assert self.chat.recipients_of(seq, sender) == expected

    @invariant()
    def cursors_never_decrease_and_stay_ordered(self) -> None:
        for user_id in USERS:
            delivered = self.chat.delivered_up_to.get(user_id, 0)
            read = self.chat.read_up_to.get(user_id, 0)
            assert 0 <= read <= delivered <= self.chat.last_seq
            before_delivered, before_read = self.cursors.get(user_id, (0, 0))
            assert delivered >= before_delivered
            assert read >= before_read
            self.cursors[user_id] = (delivered, read)

    @invariant()
    def membership_is_bounded_and_administered(self) -> None:
        assert len(self.chat.members) <= MAX_MEMBERS
        assert self.chat.admins <= self.chat.members
        assert bool(self.chat.admins) == bool(self.chat.members)

    @invariant()
    def replay_rebuilds_the_same_state(self) -> None:
        rebuilt: Chat = reduce(lambda chat, event: event.mutate(chat), self.events, None)
        assert rebuilt == self.chat
        assert list(rebuilt.members) == list(self.chat.members)
        assert rebuilt.admins == self.chat.admins
        assert rebuilt.member_since == self.chat.member_since
        assert rebuilt.delivered_up_to == self.chat.delivered_up_to
        assert rebuilt.read_up_to == self.chat.read_up_to
        assert rebuilt.last_seq == self.chat.last_seq
        assert rebuilt.sent == self.chat.sent


ChatMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestChatMachine = ChatMachine.TestCase
