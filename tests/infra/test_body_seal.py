"""Message content sealed in the event log (`infra.body_seal`), without a server: the
seal's round trip (a property), tombstones once a key is erased, and the store on the
eventsourcing library's in-memory recorder with in-memory keys."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Collection
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.chat import Chat
from domain.errors import MessageDeleted
from domain.messages import MediaRef
from infra.body_seal import (
    SEALED,
    SealError,
    key_seqs,
    new_key,
    open_message,
    open_payload,
    seal_message,
    sealed_key_ids,
)
from infra.event_store import ChatStore
from infra.log_envelope import EVENT_ID_NAMESPACE, encode_event, encode_fields, event_id_for
from infra.message_keys import MemoryMessageKeys

pytestmark = pytest.mark.unit

CHAT = UUID("00000000-0000-4000-8000-000000000001")
SHA = "ab" * 32


@st.composite
def message_states(draw: st.DrawFn) -> dict[str, Any]:
    """A `MessageSent` state as the domain holds it: any kind that has content."""
    kind = draw(st.sampled_from(["text", "media", "ciphertext", "edit", "reaction"]))
    seq = draw(st.integers(2, 10_000))
    body = draw(st.binary(max_size=300))
    if kind == "text":
        body = draw(st.text(min_size=1, max_size=100)).encode()
    media = None
    if kind == "media":
        thumbnail = draw(st.none() | st.text(alphabet="ABCDEFabcdef0123456789+/=", max_size=80))
        media = MediaRef("m1", "image/webp", 10, SHA, "image", thumbnail=thumbnail).to_dict()
    ref = draw(st.integers(1, seq - 1)) if kind in ("edit", "reaction") else None
    quote = None
    if kind in ("text", "media") and draw(st.booleans()):
        ref = draw(st.integers(1, seq - 1))
        quote = {"seq": ref, "sender": str(uuid.uuid4()), "kind": "text"}
        quote["excerpt"] = draw(st.text(max_size=100))
    return {"seq": seq, "kind": kind, "body": body, "media": media, "ref": ref, "quote": quote}


def keys_for(state: dict[str, Any]) -> dict[str, Any]:
    return {part: new_key(CHAT, seq) for part, seq in key_seqs(state).items()}


@given(message_states())
def test_sealing_then_opening_gives_the_state_back(state: dict[str, Any]) -> None:
    keys = keys_for(state)
    sealed = seal_message(state, CHAT, keys)
    assert sealed["body"] != state["body"] or not keys
    found = {k.key_id: k.key for k in keys.values()}
    assert sorted(sealed_key_ids(sealed)) == sorted(found)
    assert open_message(sealed, CHAT, found) == state
    # An envelope's payload carries the body in base64; it opens the same way.
    payload = {**sealed, "body": base64.b64encode(sealed["body"]).decode()}
    opened = open_payload(payload, CHAT, found)
    assert {**opened, "body": base64.b64decode(opened["body"])} == state


@given(message_states())
def test_without_its_keys_a_message_opens_as_a_tombstone(state: dict[str, Any]) -> None:
    sealed = seal_message(state, CHAT, keys_for(state))
    opened = open_message(sealed, CHAT, {})
    names = sealed.get(SEALED, {})
    if "body" in names:
        assert opened["body"] == b""
        if state["media"] is not None:
            assert "thumbnail" not in opened["media"]
            assert opened["media"]["media_id"] == "m1"  # metadata stays
    if "quote" in names:
        assert opened["quote"] == {"seq": state["quote"]["seq"], "deleted": True}
    assert SEALED not in opened


def test_a_sealed_body_moved_to_another_message_does_not_open() -> None:
    state = {"seq": 5, "kind": "text", "body": b"mine", "media": None, "ref": None, "quote": None}
    keys = keys_for(state)
    sealed = seal_message(state, CHAT, keys)
    found = {k.key_id: k.key for k in keys.values()}
    assert open_message({**sealed, "seq": 6}, CHAT, found)["body"] == b""
    assert open_message(sealed, uuid.uuid4(), found)["body"] == b""


# The store, in memory


def memory_store() -> ChatStore:
    return ChatStore(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def stored_bytes(store: ChatStore, chat_id: UUID) -> bytes:
    events = b"".join(s.state for s in store.recorder.select_events(chat_id))
    assert store.snapshots is not None
    snapshots = b"".join(s.state for s in store.snapshots.recorder.select_events(chat_id))
    return events + snapshots


def reloaded(store: ChatStore, chat_id: UUID) -> Chat:
    assert store.repository.cache is None  # every get loads from the store
    chat: Any = store.repository.get(chat_id)
    assert isinstance(chat, Chat)
    return chat


def a_conversation(now: int) -> tuple[ChatStore, Chat]:
    store = memory_store()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat = Chat.open_direct(alice, bob, alice)
    chat.send(alice, "d", "1", "text", b"the secret plan", None, 1, now)
    chat.send(bob, "d", "2", "text", b"sounds good", None, 2, now, reply_to=1)
    chat.act(alice, "d", "3", "edit", 1, b"the secret plan, v2", 3, now)
    chat.act(bob, "d", "4", "reaction", 1, "👍".encode(), 4, now)
    photo = MediaRef("photo1", "image/webp", 10, SHA, "image", thumbnail="VGhlIHRodW1i")
    chat.send(alice, "d", "5", "media", b"a caption", photo, 5, now)
    store.save(chat)
    return store, chat


def test_the_store_keeps_no_content_in_plaintext_and_loads_it_back() -> None:
    now = int(time.time() * 1000)
    store, chat = a_conversation(now)
    stored = stored_bytes(store, chat.id)
    for secret in (b"secret plan", b"sounds good", "👍".encode(), b"caption", b"VGhlIHRodW1i"):
        assert secret not in stored
        assert base64.b64encode(secret) not in stored
    again = reloaded(store, chat.id)
    assert again.recent == chat.recent
    assert again.recent[1].excerpt == "the secret plan, v2"
    # Snapshots are sealed as well, and load back the same.
    store.snapshot([again])
    assert b"secret plan" not in stored_bytes(store, chat.id)
    assert reloaded(store, chat.id).recent == chat.recent


def test_a_delete_erases_the_keys_of_the_message_its_edits_reactions_and_quotes() -> None:
    now = int(time.time() * 1000)
    store, chat = a_conversation(now)
    keys = store.seal.keys
    assert isinstance(keys, MemoryMessageKeys)
    assert {k.seq for k in keys.keys.values()} == {1, 2, 5}  # quote, edit, reaction: seq 1
    store.snapshot([chat])
    alice = chat.recent[1].sender
    chat.act(alice, "d", "6", "delete", 1, b"", 6, now)
    store.save(chat)
    assert {k.seq for k in keys.keys.values()} == {2, 5}
    # The snapshot taken before the delete opens with message 1 deleted, and its events
    # with a tombstone: the chat loads as it was, and refuses to act on message 1 again.
    again = reloaded(store, chat.id)
    assert again.recent[1].deleted and again.recent[1].excerpt == ""
    assert again.recent[2].excerpt == "sounds good"
    assert again.recent[5].excerpt == "a caption"
    with pytest.raises(MessageDeleted):
        again.act(alice, "d", "7", "reaction", 1, "👍".encode(), 7, now)
    events = list(store.events.get(chat.id))
    (reply,) = [e for e in events if isinstance(e, Chat.MessageSent) and e.seq == 2]
    assert reply.quote == {"seq": 1, "deleted": True}


def test_a_disappearing_messages_keys_carry_its_time_and_its_media() -> None:
    now = int(time.time() * 1000)
    store = memory_store()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat = Chat.open_direct(alice, bob, alice)
    chat.set_timer(alice, "d", "t", 86400, 1, now)
    photo = MediaRef("photo1", "image/webp", 10, SHA, "image")
    chat.send(alice, "d", "1", "media", b"", photo, 2, now)
    chat.act(bob, "d", "2", "reaction", 2, "👍".encode(), 3, now)
    store.save(chat)
    keys = store.seal.keys
    assert isinstance(keys, MemoryMessageKeys)
    own, reaction = sorted(keys.keys.values(), key=lambda k: k.media_id is None)
    assert own.media_id == "photo1" and own.expires_at is not None
    assert reaction.expires_at is not None and reaction.media_id is None
    assert abs((reaction.expires_at - own.expires_at).total_seconds()) < 1
    assert keys.erase_expired(own.expires_at) == 2
    assert keys.erased_media == {"photo1"}


def test_a_message_whose_keys_nobody_prepared_is_refused() -> None:
    store = memory_store()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat = Chat.open_direct(alice, bob, alice)
    chat.send(alice, "d", "1", "text", b"plain", None, 1, 0)
    with pytest.raises(SealError):
        store.events.put(chat.collect_events())  # past the store's save: no keys


class CountedKeys(MemoryMessageKeys):
    """In-memory keys that count the messages whose keys a snapshot looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up: list[int] = []

    def of_messages(self, chat_id: UUID, seqs: Collection[int]) -> dict[int, Any]:
        self.looked_up.append(len(seqs))
        return super().of_messages(chat_id, seqs)


def test_a_snapshot_reuses_what_the_last_one_sealed_and_reseals_an_edit() -> None:
    now = int(time.time() * 1000)
    store = memory_store()
    keys = store.seal.keys = CountedKeys()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat = Chat.open_direct(alice, bob, alice)
    for n in range(1, 6):
        chat.send(alice, "d", f"{n}", "text", f"note {n}".encode(), None, n, now)
    store.save(chat)
    store.snapshot([chat])
    chat.act(alice, "d", "e", "edit", 2, b"note 2, fixed", 6, now)
    chat.send(alice, "d", "6", "text", b"note 6", None, 7, now)
    store.save(chat)
    store.snapshot([chat])
    assert keys.looked_up == [5, 2]  # then only the edited and the new message
    again = reloaded(store, chat.id)
    assert [again.recent[n].excerpt for n in (1, 2, 7)] == ["note 1", "note 2, fixed", "note 6"]


# What the processor publishes: the envelope from the saved state, as the relay's


def test_the_envelope_of_a_saved_event_is_the_relays_envelope_of_the_stored_one() -> None:
    """The processor writes `parley.events` from the domain events it has just saved and
    the sealed states the mapper stored (`stored_fields`); the relay reads the stored
    events back. Both must give the same bytes, for every kind of event."""
    now = int(time.time() * 1000)
    store, chat = a_conversation(now)
    alice, bob = chat.recent[1].sender, chat.recent[2].sender
    chat.act(bob, "d", "6", "delete", 2, b"", 6, now)
    chat.set_timer(bob, "d", "7", 86400, 7, now)
    chat.send(bob, "d", "8", "text", b"gone in a day", None, 8, now)
    chat.mark_delivered(alice, 8)
    chat.mark_read(alice, 8)
    group = Chat.create_group(uuid.uuid4(), "plans", alice, [bob])
    carol = uuid.uuid4()
    group.rename("plans, v2", alice)
    group.add_member(carol, alice)
    group.promote(bob, alice)
    group.demote(bob, alice)
    group.send(carol, "d", "1", "text", b"hello all", None, 9, now)
    group.remove_member(carol, alice)
    group.leave(bob)
    opened = Chat.open_direct(alice, carol, carol)
    recordings = store.save(chat, group, opened)

    every_kind = {
        name
        for name, value in vars(Chat).items()
        if isinstance(value, type) and issubclass(value, Chat.Event) and "apply" in vars(value)
    }
    assert {type(r.domain_event).__name__ for r in recordings} == every_kind
    for recording in recordings:
        event, position = recording.domain_event, recording.notification.id
        published = encode_fields(type(event), store.seal.stored_fields(event), position)
        read_back = encode_event(store.mapper.to_domain_event(recording.notification), position)
        assert published == read_back, type(event).__name__
        for secret in (b"gone in a day", b"hello all"):
            assert secret not in published[1] and base64.b64encode(secret) not in published[1]


def test_the_saved_state_of_a_message_never_saved_is_refused_not_given_in_plaintext() -> None:
    store = memory_store()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat = Chat.open_direct(alice, bob, alice)
    store.save(chat)
    chat.send(alice, "d", "1", "text", b"not saved", None, 1, int(time.time() * 1000))
    (pending,) = chat.pending_events
    with pytest.raises(SealError):
        store.seal.stored_fields(pending)


@given(st.uuids(), st.integers(1, 2**62))
def test_an_event_id_is_the_uuid5_of_its_aggregate_and_version(aggregate: UUID, v: int) -> None:
    assert event_id_for(aggregate, v) == uuid.uuid5(EVENT_ID_NAMESPACE, f"{aggregate}:{v}")
