"""The one-statement save against the real PostgreSQL: ids in order, stale writers refused."""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterator

import pytest
from eventsourcing.persistence import IntegrityError

from domain.chat import Chat
from infra.event_store import ChatStore, OneStatementRecorder, max_position, open_store
from infra.scratch import fresh_database
from infra.settings import Settings


@pytest.fixture()
def store(settings: Settings) -> Iterator[ChatStore]:
    scratch = settings.replace(pg_db=f"{settings.pg_db}_store")
    fresh_database(settings, scratch.pg_db)
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
    with pytest.raises(IntegrityError):
        store.save(stale, other)
    assert max_position(store) == before  # nothing of the batch was stored


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
