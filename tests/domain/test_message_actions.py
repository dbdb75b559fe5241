"""Replies, reactions, edits and deletes: the chat's rules, from its events."""

from dataclasses import replace
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex
from hypothesis import given
from hypothesis import strategies as st

from domain.chat import DELETE_WINDOW_MS, EDIT_WINDOW_MS, Chat, SendResult
from domain.errors import (
    Blocked,
    InvalidBody,
    InvalidReaction,
    InvalidTimer,
    MessageDeleted,
    NotAdmin,
    NotEditable,
    NotMember,
    NotSender,
    TooLate,
    UnknownMessage,
)
from domain.message_actions import ACTION_MEMORY, EXCERPT_CHARS, validate_reaction
from domain.messages import MediaRef

pytestmark = pytest.mark.unit

ALICE, BOB, CAROL = (UUID(int=n) for n in range(1, 4))
T0 = 1_700_000_000_000
PHOTO = MediaRef(media_id="m-1", mime_type="image/png", size=10, sha256="0" * 64)


def group(*members: UUID) -> Chat:
    chat = Chat.create_group(uuid4(), "Climbing", ALICE, list(members))
    chat.collect_events()
    return chat


def say(
    chat: Chat, sender: UUID, text: str = "hi", at: int = T0, reply_to: int | None = None
) -> SendResult:
    local_id = f"l-{chat.last_seq + 1}"
    message_id = 1000 + chat.last_seq
    return chat.send(
        sender, "phone", local_id, "text", text.encode(), None, message_id, at, reply_to=reply_to
    )


def act(chat: Chat, sender: UUID, kind: str, ref: int, body: str = "", at: int = T0) -> SendResult:
    local_id = f"a-{chat.last_seq + 1}"
    return chat.act(sender, "phone", local_id, kind, ref, body.encode(), 2000 + chat.last_seq, at)


def last_event(chat: Chat) -> Chat.MessageSent:
    event = chat.collect_events()[-1]
    assert isinstance(event, Chat.MessageSent)
    return event


# Replies


def test_a_reply_names_its_message_and_quotes_it() -> None:
    chat = group(BOB)
    say(chat, ALICE, "x" * 300)
    say(chat, BOB, "agreed", reply_to=1)
    event = last_event(chat)
    assert event.ref == 1
    assert event.quote == {"seq": 1, "sender": str(ALICE), "kind": "text", "excerpt": "x" * 100}
    assert len(event.quote["excerpt"]) == EXCERPT_CHARS


def test_a_reply_to_a_deleted_message_quotes_it_as_deleted() -> None:
    chat = group(BOB)
    say(chat, ALICE, "oops")
    act(chat, ALICE, "delete", 1)
    say(chat, BOB, "what was it?", reply_to=1)
    assert last_event(chat).quote == {"seq": 1, "deleted": True}


def test_a_reply_to_no_message_or_to_an_action_is_refused() -> None:
    chat = group(BOB)
    say(chat, ALICE)
    act(chat, BOB, "reaction", 1, "👍")
    for ref in (2, 9):
        with pytest.raises(UnknownMessage):
            say(chat, BOB, reply_to=ref)


def test_only_the_last_messages_can_be_acted_on() -> None:
    chat = group(BOB)
    for _ in range(ACTION_MEMORY + 1):
        say(chat, ALICE)
    with pytest.raises(UnknownMessage):
        act(chat, BOB, "reaction", 1, "👍")
    act(chat, BOB, "reaction", 2, "👍")


# Reactions


def test_a_reaction_is_a_message_on_the_chat_seq_naming_its_target() -> None:
    chat = group(BOB)
    say(chat, ALICE)
    result = act(chat, BOB, "reaction", 1, "❤️")
    event = last_event(chat)
    assert (result.seq, event.kind, event.ref, event.body) == (2, "reaction", 1, "❤️".encode())
    act(chat, BOB, "reaction", 1, "")  # removed
    assert last_event(chat).body == b""


def test_a_reaction_must_be_one_emoji() -> None:
    chat = group(BOB)
    say(chat, ALICE)
    for bad in ("a", "👍👍", "ok 👍", "\u200d", "1", "🏻"):
        with pytest.raises(InvalidReaction):
            act(chat, BOB, "reaction", 1, bad)


@pytest.mark.parametrize(
    "emoji", ["👍", "❤️", "👍🏽", "👩‍👩‍👧", "🇫🇷", "1️⃣", "#⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "☺", "🫠", "🧑🏿‍🚀"]
)
def test_emoji_of_every_shape_are_reactions(emoji: str) -> None:
    assert validate_reaction(emoji) == emoji


@given(st.text(alphabet=st.characters(max_codepoint=0x2000), min_size=1, max_size=4))
def test_no_plain_text_is_a_reaction(text: str) -> None:
    if text in ("©", "®", "©️", "®️") or text.rstrip("\ufe0f") in ("©", "®"):
        return  # those two are emoji
    with pytest.raises(InvalidReaction):
        validate_reaction(text)


def test_a_non_member_cannot_react() -> None:
    chat = group(BOB)
    say(chat, ALICE)
    with pytest.raises(NotMember):
        act(chat, CAROL, "reaction", 1, "👍")


# Edits


def test_the_sender_edits_a_text_within_the_window() -> None:
    chat = group(BOB)
    say(chat, ALICE, "helo")
    act(chat, ALICE, "edit", 1, "hello", at=T0 + EDIT_WINDOW_MS)
    event = last_event(chat)
    assert (event.kind, event.ref, event.body) == ("edit", 1, b"hello")
    act(chat, ALICE, "edit", 1, "hello!", at=T0 + 1)  # any number of times
    say(chat, BOB, "re", reply_to=1)
    assert last_event(chat).quote["excerpt"] == "hello!"  # type: ignore[index]


def test_an_edit_after_the_window_is_refused() -> None:
    chat = group(BOB)
    say(chat, ALICE, "helo")
    with pytest.raises(TooLate):
        act(chat, ALICE, "edit", 1, "hello", at=T0 + EDIT_WINDOW_MS + 1)


def test_only_the_sender_edits_and_only_text() -> None:
    chat = group(BOB)
    say(chat, ALICE, "helo")
    with pytest.raises(NotSender):
        act(chat, BOB, "edit", 1, "hello")
    chat.send(ALICE, "phone", "p", "media", b"", PHOTO, 5000, T0)
    with pytest.raises(NotEditable):
        act(chat, ALICE, "edit", 2, "caption")
    with pytest.raises(InvalidBody):
        act(chat, ALICE, "edit", 1, "")


# Deletes


def test_the_sender_or_a_group_admin_deletes_within_the_window() -> None:
    chat = group(BOB, CAROL)
    say(chat, BOB, "one")
    say(chat, BOB, "two")
    with pytest.raises(NotSender):
        act(chat, CAROL, "delete", 1)
    act(chat, BOB, "delete", 1, at=T0 + DELETE_WINDOW_MS)
    act(chat, ALICE, "delete", 2)  # Alice is the group's admin
    with pytest.raises(MessageDeleted):
        act(chat, BOB, "delete", 1)
    say(chat, BOB, "three")
    with pytest.raises(TooLate):
        act(chat, BOB, "delete", 5, at=T0 + DELETE_WINDOW_MS + 1)


def test_a_deleted_message_cannot_be_edited_or_reacted_to() -> None:
    chat = group(BOB)
    say(chat, ALICE)
    act(chat, ALICE, "delete", 1)
    for kind, body in (("edit", "x"), ("reaction", "👍")):
        with pytest.raises(MessageDeleted):
            act(chat, ALICE, kind, 1, body)


def test_in_a_direct_chat_only_the_sender_deletes() -> None:
    chat = Chat.open_direct(ALICE, BOB, opened_by=ALICE)
    say(chat, ALICE)
    with pytest.raises(NotSender):
        act(chat, BOB, "delete", 1)


def test_who_blocked_the_peer_may_still_delete_but_not_react() -> None:
    chat = Chat.open_direct(ALICE, BOB, opened_by=ALICE)
    say(chat, ALICE)
    with pytest.raises(Blocked):
        chat.act(ALICE, "p", "x", "reaction", 1, "👍".encode(), 7, T0, sender_blocked_peer=True)
    chat.act(ALICE, "p", "y", "delete", 1, b"", 8, T0, sender_blocked_peer=True)


# Resends, kinds and state


def test_a_resent_action_answers_the_original() -> None:
    chat = group(BOB)
    say(chat, ALICE)
    first = chat.act(BOB, "phone", "r", "reaction", 1, "👍".encode(), 10, T0)
    again = chat.act(BOB, "phone", "r", "reaction", 1, "👍".encode(), 11, T0)
    assert (again.seq, again.message_id, again.duplicate) == (first.seq, first.message_id, True)


def test_actions_go_through_act_and_content_through_send() -> None:
    chat = group(BOB)
    say(chat, ALICE)
    with pytest.raises(InvalidBody):
        chat.send(ALICE, "phone", "x", "reaction", "👍".encode(), None, 9, T0)
    with pytest.raises(InvalidBody):
        chat.act(ALICE, "phone", "y", "text", 1, b"hi", 9, T0)


def test_the_remembered_messages_survive_a_snapshot() -> None:
    chat = group(BOB)
    say(chat, ALICE, "one")
    say(chat, ALICE, "two")
    act(chat, ALICE, "delete", 2)
    chat.collect_events()
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    snapshot = Chat.Snapshot.take(chat)
    state = transcoder.decode(transcoder.encode(snapshot.state))
    restored = replace(snapshot, state=state).mutate(None)
    assert restored == chat
    assert restored.recent[1].excerpt == "one" and restored.recent[2].deleted
    older = dict(snapshot.state)
    del older["_recent"]  # a snapshot from before actions
    assert replace(snapshot, state=older).mutate(None).recent == {}


# Disappearing messages


def test_a_timer_is_announced_and_stamps_the_messages_sent_under_it() -> None:
    chat = Chat.open_direct(ALICE, BOB, opened_by=ALICE)
    say(chat, ALICE, "before")
    chat.set_timer(BOB, "phone", "t", 86400, 50, T0)
    timer = last_event(chat)
    assert (timer.kind, timer.body, timer.timer_s, chat.timer_s) == (
        "timer",
        b"86400",
        86400,
        86400,
    )
    say(chat, ALICE, "during")
    assert last_event(chat).timer_s == 86400
    act(chat, BOB, "reaction", 3, "👍")
    assert last_event(chat).timer_s is None  # an action lives as long as its message
    chat.set_timer(ALICE, "phone", "u", 0, 51, T0)
    say(chat, ALICE, "after")
    assert last_event(chat).timer_s is None
    with pytest.raises(UnknownMessage):
        act(chat, BOB, "reaction", 2, "👍")  # a timer is no message to act on


def test_only_the_offered_timers_and_in_a_group_only_admins() -> None:
    chat = group(BOB)
    with pytest.raises(InvalidTimer):
        chat.set_timer(ALICE, "phone", "t", 60, 50, T0)
    with pytest.raises(NotAdmin):
        chat.set_timer(BOB, "phone", "t", 86400, 50, T0)
    chat.set_timer(ALICE, "phone", "t", 60, 50, T0, timers_s=(0, 60))
    assert chat.timer_s == 60


def test_a_disappeared_message_is_gone_for_actions_and_quotes() -> None:
    chat = Chat.open_direct(ALICE, BOB, opened_by=ALICE)
    chat.set_timer(BOB, "phone", "t", 86400, 50, T0)
    say(chat, ALICE, "soon gone", at=T0)
    assert chat.recent[2].expires_at_ms == T0 + 86400 * 1000
    later = T0 + 86400 * 1000
    say(chat, BOB, "still here?", at=later - 1, reply_to=2)
    assert last_event(chat).quote == {
        "seq": 2,
        "sender": str(ALICE),
        "kind": "text",
        "excerpt": "soon gone",
    }
    say(chat, BOB, "gone", at=later, reply_to=2)
    assert last_event(chat).quote == {"seq": 2, "deleted": True}
    for kind, body in (("reaction", "👍"), ("delete", "")):
        with pytest.raises(MessageDeleted):
            act(chat, ALICE, kind, 2, body, at=later)
