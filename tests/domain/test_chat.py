from dataclasses import replace
from functools import reduce
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex

from domain import (
    SEND_MEMORY,
    Blocked,
    Chat,
    ChatKind,
    GroupFull,
    InvalidBody,
    InvalidGroup,
    InvalidSeq,
    LastAdmin,
    MediaRef,
    NotAdmin,
    NotGroup,
    NotMember,
    SendResult,
    TooLarge,
    direct_chat_id,
)

pytestmark = pytest.mark.unit

ALICE, BOB, CAROL, DAVE = (UUID(int=n) for n in range(1, 5))
PHOTO = MediaRef(media_id="m-1", mime_type="image/png", size=10, sha256="0" * 64)


def group(*members: UUID, max_members: int = 256) -> Chat:
    """A group created by Alice with the given other members, its events collected."""
    chat = Chat.create_group(uuid4(), "Climbing", ALICE, list(members), max_members)
    chat.collect_events()
    return chat


def send(chat: Chat, sender: UUID, local_id: str = "l-1", body: bytes = b"hi") -> SendResult:
    message_id = 1000 + chat.last_seq
    return chat.send(sender, "phone", local_id, "text", body, None, message_id, 1_700_000_000_000)


def event_names(chat: Chat) -> list[str]:
    return [type(event).__name__ for event in chat.collect_events()]


def replay(events: list[CanMutateAggregate[UUID]]) -> Chat:
    chat: Chat = reduce(lambda chat, event: event.mutate(chat), events, None)
    return chat


# Creation


def test_open_direct_is_deterministic_and_has_two_members() -> None:
    chat = Chat.open_direct(BOB, ALICE, opened_by=BOB)
    assert chat.id == direct_chat_id(ALICE, BOB) == Chat.open_direct(ALICE, BOB, ALICE).id
    assert chat.kind == ChatKind.DIRECT
    assert chat.members == {ALICE, BOB}
    assert chat.admins == frozenset()
    [opened] = chat.collect_events()
    assert isinstance(opened, Chat.DirectChatOpened)
    assert opened.members == [ALICE, BOB]
    assert opened.opened_by == BOB


def test_open_direct_needs_two_users_one_of_them_opening() -> None:
    with pytest.raises(InvalidGroup):
        Chat.open_direct(ALICE, ALICE, ALICE)
    with pytest.raises(NotMember):
        Chat.open_direct(ALICE, BOB, CAROL)


def test_create_group_makes_the_creator_the_first_admin() -> None:
    chat_id = uuid4()
    chat = Chat.create_group(chat_id, "  Climbing ", ALICE, [BOB, CAROL])
    assert chat.id == chat_id
    assert chat.kind == ChatKind.GROUP
    assert chat.name == "Climbing"
    assert chat.members == {ALICE, BOB, CAROL}
    assert chat.admins == {ALICE}
    assert chat.last_seq == 0
    [created] = chat.collect_events()
    assert isinstance(created, Chat.GroupCreated)
    assert (created.name, created.created_by, created.members) == (
        "Climbing",
        ALICE,
        [ALICE, BOB, CAROL],
    )


@pytest.mark.parametrize(
    ("name", "members"),
    [("", [BOB]), ("   ", [BOB]), ("x" * 101, [BOB]), ("ok", [BOB, BOB]), ("ok", [ALICE])],
)
def test_create_group_refuses_bad_names_and_member_lists(name: str, members: list[UUID]) -> None:
    with pytest.raises(InvalidGroup):
        Chat.create_group(uuid4(), name, ALICE, members)


def test_a_name_of_100_characters_is_fine() -> None:
    assert Chat.create_group(uuid4(), "x" * 100, ALICE, []).name == "x" * 100


def test_create_group_counts_the_creator_against_the_limit() -> None:
    assert group(BOB, CAROL, max_members=3).members == {ALICE, BOB, CAROL}
    with pytest.raises(GroupFull):
        Chat.create_group(uuid4(), "Climbing", ALICE, [BOB, CAROL, DAVE], max_members=3)


def test_every_event_class_is_explicitly_versioned() -> None:
    names = [
        "DirectChatOpened", "GroupCreated", "GroupRenamed", "MemberAdded", "MemberRemoved",
        "MemberLeft", "AdminPromoted", "AdminDemoted", "MessageSent", "MessagesDelivered",
        "MessagesRead",
    ]  # fmt: skip
    assert Chat.__dict__["class_version"] == 1
    current = {"MessageSent": 2}  # v2: `ref`, `quote`, `timer_s`, `forwarded`
    for name in names:
        cls = getattr(Chat, name)
        version = cls.__dict__["class_version"]
        assert version == current.get(name, 1), name
        for old in range(1, version):
            assert callable(getattr(cls, f"upcast_v{old}_v{old + 1}")), name


def test_a_v1_message_sent_reads_as_v2_a_plain_message() -> None:
    state: dict[str, Any] = {"seq": 1, "kind": "text"}
    Chat.MessageSent.upcast_v1_v2(state)
    plain = {"ref": None, "quote": None, "timer_s": None, "forwarded": 0}
    assert state == {"seq": 1, "kind": "text", **plain}


# Sending


def test_messages_get_a_gapless_seq_from_one() -> None:
    chat = group(BOB)
    assert send(chat, ALICE, "a") == SendResult(message_id=1000, seq=1, duplicate=False)
    assert send(chat, BOB, "a") == SendResult(message_id=1001, seq=2, duplicate=False)
    assert chat.last_seq == 2
    sent = chat.collect_events()
    assert [event.seq for event in sent if isinstance(event, Chat.MessageSent)] == [1, 2]


def test_message_sent_holds_plain_values() -> None:
    chat = group(BOB)
    chat.send(BOB, "phone", "l-9", "media", b"caption", PHOTO, 77, 1_700_000_000_123)
    [sent] = chat.collect_events()
    assert isinstance(sent, Chat.MessageSent)
    assert (sent.seq, sent.message_id, sent.sender, sent.device_id, sent.local_id) == (
        1, 77, BOB, "phone", "l-9",
    )  # fmt: skip
    assert (sent.kind, sent.body, sent.sent_at_ms) == ("media", b"caption", 1_700_000_000_123)
    assert type(sent.kind) is str
    assert sent.media == PHOTO.to_dict()


def test_a_resend_returns_the_original_and_adds_no_event() -> None:
    chat = group(BOB)
    first = send(chat, BOB, "l-1")
    chat.collect_events()
    again = chat.send(BOB, "phone", "l-1", "text", b"other", None, 9999, 0)
    assert again == SendResult(message_id=first.message_id, seq=first.seq, duplicate=True)
    assert chat.collect_events() == []
    assert chat.sent[(BOB, "phone", "l-1")] == (first.message_id, first.seq)


def test_a_device_s_resends_are_recognised_for_its_last_sends_in_the_chat() -> None:
    chat = group(BOB)
    alices = send(chat, ALICE, "a-1")
    bobs = [send(chat, BOB, f"b-{n}") for n in range(SEND_MEMORY + 1)]
    # Bob's oldest send has left the memory: sent again, it is a new message.
    assert chat.send(BOB, "phone", "b-0", "text", b"x", None, 1, 0).duplicate is False
    # His latest ones and Alice's older one are still recognised.
    for local_id, original in (("b-2", bobs[2]), (f"b-{SEND_MEMORY}", bobs[-1])):
        again = chat.send(BOB, "phone", local_id, "text", b"x", None, 2, 0)
        assert again == replace(original, duplicate=True)
    assert chat.send(ALICE, "phone", "a-1", "text", b"x", None, 3, 0) == replace(
        alices, duplicate=True
    )
    assert len(chat.sent) == SEND_MEMORY + 1  # Bob's last SEND_MEMORY, Alice's one


def test_the_same_local_id_from_another_device_or_sender_is_a_new_message() -> None:
    chat = group(BOB)
    send(chat, BOB, "l-1")
    assert chat.send(BOB, "tablet", "l-1", "text", b"x", None, 5, 0).seq == 2
    assert send(chat, ALICE, "l-1").seq == 3


def test_a_resend_after_leaving_still_returns_the_original() -> None:
    chat = group(BOB)
    first = send(chat, BOB, "l-1")
    chat.leave(BOB)
    assert send(chat, BOB, "l-1") == SendResult(first.message_id, first.seq, duplicate=True)
    with pytest.raises(NotMember):
        send(chat, BOB, "l-2")


def test_only_members_send() -> None:
    with pytest.raises(NotMember):
        send(group(BOB), CAROL)
    with pytest.raises(NotMember):
        send(Chat.open_direct(ALICE, BOB, ALICE), CAROL)


def test_send_validates_the_body() -> None:
    chat = group(BOB)
    with pytest.raises(InvalidBody):
        send(chat, BOB, body=b"")
    with pytest.raises(InvalidBody):
        chat.send(BOB, "phone", "l-1", "gif", b"x", None, 1, 0)
    with pytest.raises(TooLarge):
        chat.send(BOB, "phone", "l-1", "text", b"xyz", None, 1, 0, max_body=2)
    assert chat.last_seq == 0
    assert chat.collect_events() == []


@pytest.mark.parametrize(("device_id", "local_id"), [("", "l"), ("phone", ""), ("p", "l" * 129)])
def test_send_needs_sensible_client_ids(device_id: str, local_id: str) -> None:
    with pytest.raises(InvalidBody):
        group(BOB).send(BOB, device_id, local_id, "text", b"x", None, 1, 0)


# Group administration


def test_admins_add_remove_and_rename() -> None:
    chat = group(BOB)
    assert chat.add_member(CAROL, by=ALICE)
    assert chat.remove_member(BOB, by=ALICE)
    assert chat.rename("Bouldering", by=ALICE)
    assert chat.members == {ALICE, CAROL}
    assert chat.name == "Bouldering"
    assert event_names(chat) == ["MemberAdded", "MemberRemoved", "GroupRenamed"]


def test_repeated_group_commands_change_nothing() -> None:
    chat = group(BOB, CAROL)
    chat.promote(BOB, by=ALICE)
    chat.collect_events()
    assert chat.add_member(BOB, by=ALICE) is False
    assert chat.remove_member(DAVE, by=ALICE) is False
    assert chat.promote(BOB, by=ALICE) is False
    assert chat.demote(CAROL, by=ALICE) is False
    assert chat.rename(" Climbing ", by=ALICE) is False
    assert chat.leave(DAVE) is False
    assert chat.collect_events() == []


@pytest.mark.parametrize(
    "command",
    [
        lambda chat: chat.add_member(DAVE, by=BOB),
        lambda chat: chat.remove_member(CAROL, by=BOB),
        lambda chat: chat.rename("Mine", by=BOB),
        lambda chat: chat.promote(CAROL, by=BOB),
        lambda chat: chat.demote(ALICE, by=BOB),
    ],
)
def test_only_admins_administer(command: Any) -> None:
    chat = group(BOB, CAROL)
    with pytest.raises(NotAdmin):
        command(chat)
    with pytest.raises(NotMember):
        command(group(CAROL))


def test_a_group_has_a_member_limit() -> None:
    chat = group(BOB, max_members=3)
    assert chat.add_member(CAROL, by=ALICE, max_members=3)
    with pytest.raises(GroupFull):
        chat.add_member(DAVE, by=ALICE, max_members=3)
    assert chat.add_member(CAROL, by=ALICE, max_members=3) is False


def test_renaming_validates_the_name() -> None:
    with pytest.raises(InvalidGroup):
        group(BOB).rename(" ", by=ALICE)


def test_admins_remove_others_but_leave_themselves() -> None:
    chat = group(BOB)
    with pytest.raises(InvalidGroup, match="leave"):
        chat.remove_member(ALICE, by=ALICE)


def test_promoting_needs_a_member() -> None:
    with pytest.raises(NotMember):
        group(BOB).promote(CAROL, by=ALICE)


def test_promoted_admins_administer_and_can_be_demoted() -> None:
    chat = group(BOB, CAROL)
    assert chat.promote(BOB, by=ALICE)
    assert chat.add_member(DAVE, by=BOB)
    assert chat.demote(ALICE, by=BOB)
    assert chat.admins == {BOB}
    assert event_names(chat) == ["AdminPromoted", "MemberAdded", "AdminDemoted"]


def test_an_admin_may_step_down_while_another_admin_remains() -> None:
    chat = group(BOB)
    chat.promote(BOB, by=ALICE)
    assert chat.demote(ALICE, by=ALICE)
    assert chat.admins == {BOB}


def test_the_only_admin_cannot_demote_themselves() -> None:
    chat = group(BOB)
    with pytest.raises(LastAdmin):
        chat.demote(ALICE, by=ALICE)
    with pytest.raises(LastAdmin):
        group().demote(ALICE, by=ALICE)


def test_when_the_only_admin_leaves_the_longest_member_is_promoted() -> None:
    chat = group(BOB, CAROL)
    chat.remove_member(BOB, by=ALICE)
    chat.add_member(BOB, by=ALICE)  # Bob's membership now starts after Carol's
    chat.collect_events()
    assert chat.leave(ALICE)
    assert chat.admins == {CAROL}
    left, promoted = chat.collect_events()
    assert isinstance(left, Chat.MemberLeft)
    assert left.user_id == ALICE
    assert isinstance(promoted, Chat.AdminPromoted)
    assert (promoted.user_id, promoted.by) == (CAROL, ALICE)


def test_no_promotion_when_another_admin_remains_or_nobody_does() -> None:
    chat = group(BOB, CAROL)
    chat.promote(CAROL, by=ALICE)
    chat.collect_events()
    chat.leave(ALICE)
    assert event_names(chat) == ["MemberLeft"]
    assert chat.admins == {CAROL}
    alone = group()
    alone.leave(ALICE)
    assert alone.members == set()
    assert alone.admins == frozenset()


def test_leaving_or_removal_also_drops_admin_rights() -> None:
    chat = group(BOB, CAROL)
    chat.promote(BOB, by=ALICE)
    chat.remove_member(BOB, by=ALICE)
    assert chat.admins == {ALICE}
    chat.add_member(BOB, by=ALICE)
    assert chat.admins == {ALICE}


@pytest.mark.parametrize(
    "command",
    [
        lambda chat: chat.rename("x", by=ALICE),
        lambda chat: chat.add_member(CAROL, by=ALICE),
        lambda chat: chat.remove_member(BOB, by=ALICE),
        lambda chat: chat.leave(ALICE),
        lambda chat: chat.promote(BOB, by=ALICE),
        lambda chat: chat.demote(BOB, by=ALICE),
    ],
)
def test_group_commands_on_a_direct_chat_are_refused(command: Any) -> None:
    with pytest.raises(NotGroup):
        command(Chat.open_direct(ALICE, BOB, ALICE))


# Membership history


def test_recipients_are_the_members_at_send_time_except_the_sender() -> None:
    chat = group(BOB)
    send(chat, ALICE, "1")
    chat.add_member(CAROL, by=ALICE)
    send(chat, BOB, "2")
    chat.remove_member(BOB, by=ALICE)
    send(chat, ALICE, "3")
    chat.add_member(BOB, by=ALICE)
    send(chat, CAROL, "4")
    assert chat.recipients_of(1, ALICE) == {BOB}
    assert chat.recipients_of(2, BOB) == {ALICE, CAROL}
    assert chat.recipients_of(3, ALICE) == {CAROL}
    assert chat.recipients_of(4, CAROL) == {ALICE, BOB}
    assert chat.member_since[BOB] == ((0, 2), (3, None))
    assert [chat.was_member_at(BOB, seq) for seq in (1, 2, 3, 4)] == [True, True, False, True]
    assert not chat.was_member_at(DAVE, 1)


def test_recipients_of_needs_a_sent_seq() -> None:
    chat = group(BOB)
    send(chat, ALICE)
    for seq in (0, 2):
        with pytest.raises(InvalidSeq):
            chat.recipients_of(seq, ALICE)


def test_direct_chat_recipient_is_the_other_user() -> None:
    chat = Chat.open_direct(ALICE, BOB, ALICE)
    send(chat, BOB)
    assert chat.recipients_of(1, BOB) == {ALICE}


# Receipts


def test_receipts_are_watermarks_that_only_move_up() -> None:
    chat = group(BOB)
    for n in range(3):
        send(chat, ALICE, str(n))
    chat.collect_events()
    assert chat.mark_delivered(BOB, 2)
    assert chat.mark_delivered(BOB, 2) is False
    assert chat.mark_delivered(BOB, 1) is False
    assert chat.mark_read(BOB, 1)
    assert chat.mark_read(BOB, 0) is False
    assert (chat.delivered_up_to[BOB], chat.read_up_to[BOB]) == (2, 1)
    assert event_names(chat) == ["MessagesDelivered", "MessagesRead"]


def test_reading_implies_delivery() -> None:
    chat = group(BOB)
    send(chat, ALICE, "1")
    send(chat, ALICE, "2")
    chat.collect_events()
    assert chat.mark_read(BOB, 2)
    assert event_names(chat) == ["MessagesRead"]
    assert chat.delivered_up_to[BOB] == chat.read_up_to[BOB] == 2
    assert chat.mark_delivered(BOB, 2) is False


def test_an_ack_of_zero_before_any_message_changes_nothing() -> None:
    chat = group(BOB)
    assert chat.mark_delivered(BOB, 0) is False
    assert chat.mark_read(BOB, 0) is False
    assert chat.delivered_up_to == {}


@pytest.mark.parametrize("up_to", [-1, 2])
def test_receipts_need_a_valid_seq(up_to: int) -> None:
    chat = group(BOB)
    send(chat, ALICE)
    with pytest.raises(InvalidSeq):
        chat.mark_delivered(BOB, up_to)
    with pytest.raises(InvalidSeq):
        chat.mark_read(BOB, up_to)


def test_only_members_send_receipts() -> None:
    chat = group(BOB)
    send(chat, ALICE)
    with pytest.raises(NotMember):
        chat.mark_delivered(CAROL, 1)
    with pytest.raises(NotMember):
        chat.mark_read(CAROL, 1)


# Reconstruction


def busy_chat() -> tuple[Chat, list[CanMutateAggregate[UUID]]]:
    chat = Chat.create_group(uuid4(), "Climbing", ALICE, [BOB, CAROL])
    send(chat, BOB, "1")
    chat.add_member(DAVE, by=ALICE)
    chat.send(ALICE, "web", "2", "media", b"", PHOTO, 5, 0)
    chat.mark_read(CAROL, 2)
    chat.mark_delivered(DAVE, 2)
    chat.remove_member(CAROL, by=ALICE)
    chat.leave(ALICE)
    send(chat, BOB, "3", body=b"\xf0\x9f\x91\x8b")
    return chat, list(chat.collect_events())


def test_replaying_the_events_rebuilds_the_same_chat() -> None:
    chat, events = busy_chat()
    rebuilt = replay(events)
    assert rebuilt == chat
    assert list(rebuilt.members) == list(chat.members)
    assert rebuilt.recipients_of(3, BOB) == chat.recipients_of(3, BOB) == {DAVE}


def test_a_snapshot_is_json_friendly_and_restores_the_same_chat() -> None:
    chat, _ = busy_chat()
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    snapshot = Chat.Snapshot.take(chat)
    state = transcoder.decode(transcoder.encode(snapshot.state))
    restored = replace(snapshot, state=state).mutate(None)
    assert restored == chat
    assert restored.kind is ChatKind.GROUP
    assert list(restored.members) == list(chat.members)


def test_a_snapshot_from_before_the_bound_loads_with_the_last_sends_only() -> None:
    """Snapshots once held every send and each seq's sender; they load as if bounded."""
    chat = group(BOB)
    for n in range(SEND_MEMORY):
        send(chat, BOB, f"b-{n}")
    chat.collect_events()
    snapshot = Chat.Snapshot.take(chat)
    state = dict(snapshot.state)
    older = [[BOB, "phone", f"old-{n}", 10 + n, n + 1] for n in range(5)]
    state["_sent"] = older + state["_sent"]
    state["_senders"] = [BOB] * SEND_MEMORY
    restored = replace(snapshot, state=state).mutate(None)
    assert restored == chat
    assert "_senders" not in vars(restored)
    assert set(restored.sent) == {(BOB, "phone", f"b-{n}") for n in range(SEND_MEMORY)}


def _blocked_send(chat: Chat, sender: UUID, local_id: str) -> SendResult:
    message_id = 1000 + chat.last_seq
    return chat.send(
        sender, "phone", local_id, "text", b"hi", None, message_id, 1, sender_blocked_peer=True
    )


def test_a_sender_who_blocked_the_other_user_cannot_write_in_their_direct_chat() -> None:
    chat = Chat.open_direct(ALICE, BOB, opened_by=ALICE)
    assert (chat.peer_of(ALICE), chat.peer_of(BOB)) == (BOB, ALICE)
    stored = send(chat, ALICE, "before")
    chat.collect_events()
    with pytest.raises(Blocked) as refused:
        _blocked_send(chat, ALICE, "after")
    assert refused.value.code == "blocked"
    assert event_names(chat) == [] and chat.last_seq == 1
    # A resend of what was stored before the block answers the original.
    assert _blocked_send(chat, ALICE, "before") == replace(stored, duplicate=True)


def test_a_block_does_not_stop_a_group_member_writing_to_the_group() -> None:
    chat = group(BOB)
    assert chat.peer_of(ALICE) is None
    assert _blocked_send(chat, ALICE, "l-1").seq == 1
