"""The one-statement save against the real PostgreSQL: ids in order, stale writers refused."""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from domain.chat import Chat
from domain.messages import MediaRef
from infra import publish_marks
from infra.event_store import ChatStore, OneStatementRecorder, Writer, max_position, open_store
from infra.publish_marks import Fenced
from infra.scratch import fresh_database
from infra.settings import Settings


@pytest.fixture()
def scratch(settings: Settings) -> Settings:
    scratch = settings.replace(pg_db=f"{settings.pg_db}_store")
    fresh_database(settings, scratch.pg_db)
    return scratch


@pytest.fixture()
def store(scratch: Settings) -> Iterator[ChatStore]:
    store = open_store(scratch)
    yield store
    store.close()


def _chat() -> tuple[Chat, uuid.UUID]:
    a, b = uuid.uuid4(), uuid.uuid4()
    return Chat.open_direct(a, b, a), a


def _send(chat: Chat, sender: uuid.UUID, n: int) -> None:
    chat.send(sender, "d", f"l{n}", "text", b"x", None, n, 1_700_000_000_000 + n)


def test_a_save_returns_the_positions_of_its_events_in_order(store: ChatStore) -> None:
    assert isinstance(store.recorder, OneStatementRecorder)
    chats = [_chat() for _ in range(3)]
    recordings = store.save(*[chat for chat, _ in chats])
    for chat, sender in chats:
        for n in range(1, 4):
            _send(chat, sender, n)
    recordings += store.save(*[chat for chat, _ in chats])
    positions = [r.notification.id for r in recordings]
    assert positions == sorted(positions) and len(set(positions)) == len(positions) == 12
    assert max_position(store) == positions[-1]
    # Each position names its own event: read back by position, the same chat and version.
    stored = store.recorder.select_notifications(start=positions[0], limit=100)
    assert [(n.id, n.originator_id, n.originator_version) for n in stored] == [
        (r.notification.id, r.domain_event.originator_id, r.domain_event.originator_version)
        for r in recordings
    ]


def test_a_stale_writer_is_refused_whole(store: ChatStore) -> None:
    chat, sender = _chat()
    other, other_sender = _chat()
    store.save(chat, other)
    stale = copy.deepcopy(chat)  # a processor that has not noticed it lost the chat
    _send(chat, sender, 1)
    store.save(chat)
    _send(stale, sender, 2)
    _send(other, other_sender, 1)
    before = max_position(store)
    keys_before = _keys(store)
    with pytest.raises(IntegrityError):
        store.save(stale, other)
    assert max_position(store) == before  # nothing of the batch was stored
    assert _keys(store) == keys_before  # nor the keys made to seal its messages


def test_a_batch_of_receipts_stores_its_events_and_no_keys(
    store: ChatStore, scratch: Settings
) -> None:
    chat, sender = _chat()
    _send(chat, sender, 1)
    store.save(chat)
    peer = _peer(chat, sender)
    keys_before = _keys(store)
    assert chat.mark_delivered(peer, 1) and chat.mark_read(peer, 1)
    recordings = store.save(chat)
    assert [r.notification.id for r in recordings] == [max_position(store) - 1, max_position(store)]
    assert _keys(store) == keys_before
    with open_store(scratch) as fresh:  # reads the chat from the table
        again: Any = fresh.repository.get(chat.id)
    assert again.read_up_to[peer] == again.delivered_up_to[peer] == 1


def test_a_batch_mixing_messages_and_receipts_stores_the_messages_keys(
    store: ChatStore, scratch: Settings
) -> None:
    """The keys' six columns reach `message_keys` whole: a disappearing media message's
    time and object, beside a chat of the batch that seals nothing."""
    first, alice = _chat()
    second, bob = _chat()
    _send(second, bob, 1)
    store.save(first, second)
    keys_before = _keys(store)
    now = 1_700_000_000_000
    first.set_timer(alice, "d", "t", 86_400, 1, now)
    photo = MediaRef("photo1", "image/webp", 10, "ab" * 32, "image")
    first.send(alice, "d", "m", "media", b"a caption", photo, 2, now)
    assert second.mark_read(_peer(second, bob), 1)
    recordings = store.save(first, second)
    assert [r.notification.id for r in recordings] == sorted(r.notification.id for r in recordings)
    assert len(recordings) == 3
    assert _keys(store) == keys_before + 1
    recorder: Any = store.recorder
    with recorder.datastore.get_connection() as conn:
        row = conn.execute(
            "SELECT seq, expires_at, media_id FROM message_keys WHERE chat_id = %s", (first.id,)
        ).fetchone()
    assert row is not None
    assert (row["seq"], row["media_id"]) == (2, "photo1")
    assert row["expires_at"] > datetime.now(UTC) + timedelta(hours=23)
    with open_store(scratch) as fresh:
        first_again: Any = fresh.repository.get(first.id)
        second_again: Any = fresh.repository.get(second.id)
    assert first_again.recent[2].excerpt == "a caption"
    assert second_again.read_up_to[_peer(second, bob)] == 1


def test_a_fenced_batch_of_receipts_is_refused_too(store: ChatStore, scratch: Settings) -> None:
    chat, sender = _chat()
    _send(chat, sender, 1)
    with psycopg.connect(scratch.pg_conninfo, autocommit=True) as conn:
        publish_marks.claim(conn, "first", [0], None)
    store.save(chat, writer=Writer("first", frozenset({0})))
    with psycopg.connect(scratch.pg_conninfo, autocommit=True) as conn:
        publish_marks.move(conn, "first", {0: None})
        publish_marks.claim(conn, "second", [0], None)
    before = max_position(store)
    assert chat.mark_delivered(_peer(chat, sender), 1)
    with pytest.raises(Fenced):
        store.save(chat, writer=Writer("first", frozenset({0})))
    assert max_position(store) == before


def test_a_save_of_something_other_than_chats_is_the_library_s(store: ChatStore) -> None:
    chat, sender = _chat()
    _send(chat, sender, 1)
    assert len(store.save(chat, None)) == 2


def _peer(chat: Chat, sender: uuid.UUID) -> uuid.UUID:
    return next(member for member in chat.members if member != sender)


def _keys(store: ChatStore) -> int:
    recorder: Any = store.recorder
    with recorder.datastore.get_connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM message_keys").fetchone()
    return int(row["n"]) if row else 0


def test_a_processor_fenced_off_its_partitions_stores_nothing(
    store: ChatStore, scratch: Settings
) -> None:
    """Claiming a partition makes the claimer its only writer: the last owner's save
    is refused whole (`Fenced`), and a save by the owner moves its publish mark."""
    chat, sender = _chat()
    conninfo = scratch.pg_conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        publish_marks.claim(conn, "first", [0], None)
    [recording] = store.save(chat, writer=Writer("first", frozenset({0})))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert publish_marks.marks(conn) == {0: ("first", recording.notification.id)}
        publish_marks.move(conn, "first", {0: None})
        assert publish_marks.claim(conn, "second", [0], None) == {0: None}
    before, keys_before = max_position(store), _keys(store)
    _send(chat, sender, 1)
    with pytest.raises(Fenced):
        store.save(chat, writer=Writer("first", frozenset({0})))
    assert (max_position(store), _keys(store)) == (before, keys_before)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        publish_marks.move(conn, "first", {0: 1})  # the old owner moves nothing either
        assert publish_marks.marks(conn) == {0: ("second", None)}


def test_concurrent_saves_commit_positions_in_order(store: ChatStore) -> None:
    """Writers in parallel: a reader following positions never sees one fill in later."""
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(20):
                chat, sender = _chat()
                _send(chat, sender, 1)
                store.save(chat)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    seen: list[int] = []
    for t in threads:
        t.start()
    position = 0
    while any(t.is_alive() for t in threads) or position < max_position(store):
        for n in store.recorder.select_notifications(
            start=position, limit=500, inclusive_of_start=False
        ):
            seen.append(n.id)
            position = n.id
    for t in threads:
        t.join()
    assert not errors
    every = [n.id for n in store.recorder.select_notifications(start=1, limit=1_000)]
    assert seen == every  # nothing was passed over while the writers ran
