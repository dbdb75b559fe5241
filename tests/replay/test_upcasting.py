"""Events written by an older version of an event class replay through the current code.

The test makes `MemberAdded` version 2 (its v1 called the new member `user`; v2 calls it
`user_id`, with `upcast_v1_v2` renaming it) and replays logs holding v1 events:

- the store holds a v1 event: `republish` reads it through the store's mapper, which
  upcasts it, and a rebuild from the republished topic projects it;
- the Kafka log holds a v1 envelope (published before the upgrade): the rebuild's reader
  upcasts it with the same upcaster, and so do the live workers.

It uses a database of its own (no live workers) so the pipeline of other tests never
meets the hand-made events.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from domain.chat import Chat
from infra.event_store import open_store
from infra.log_envelope import decode_envelope, encode_event
from infra.settings import Settings
from projections.fold import ReadModel
from projections.projector import ORDER
from projections.replay.rebuild import RebuildOptions, rebuild
from projections.schema import migrate
from projections.upcasting import upcast_envelope
from streams.republish import create_topic, republish
from streams.workers import decode_batch
from tests.projections.model import comparable
from tests.projections.test_pipeline import store_envelopes
from tests.replay.conftest import read_model


def rename_user(state: dict[str, Any]) -> None:
    state["user_id"] = state.pop("user")


@pytest.fixture
def scratch(topics: Settings) -> Iterator[Settings]:
    name = f"{topics.pg_db}_upcast"
    admin = topics.replace(pg_db="postgres").pg_conninfo
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    own = topics.replace(pg_db=name, topic_prefix=f"{topics.topic_prefix}upcast-")
    migrate(own)
    yield own
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def version_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Chat.MemberAdded, "class_version", 2)
    monkeypatch.setattr(Chat.MemberAdded, "upcast_v1_v2", staticmethod(rename_user), raising=False)


def test_an_old_event_in_the_store_is_republished_upcast_and_projected(
    scratch: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, a, b, late = (uuid.uuid4() for _ in range(4))
    group = uuid.uuid4()
    store = open_store(scratch, AGGREGATE_CACHE_MAXSIZE="")
    chat = Chat.create_group(group, "g", admin, [a, b])
    chat.send(admin, "d", "l1", "text", b"before", None, 1, 0)
    store.save(chat)
    chat.add_member(late, by=admin)
    (added,) = chat.collect_events()
    stored = store.mapper.to_stored_event(added)
    state = json.loads(stored.state)
    state["user"] = state.pop("user_id")  # as version 1 of the class wrote it
    old = json.dumps(state).encode()
    store.recorder.insert_events(
        [StoredEvent(stored.originator_id, stored.originator_version, stored.topic, old)]
    )

    version_2(monkeypatch)
    chat = store.repository.get(group)  # loads through the upcaster
    chat.send(late, "d", "l2", "text", b"after", None, 2, 0)
    store.save(chat)
    store.close()

    topic = f"{scratch.topic_prefix}parley.events.republished"
    summary = republish(scratch, topic)
    assert summary.events == 4
    published = _envelopes(scratch, topic)
    member_added = next(e for e in published if e.type == "MemberAdded")
    assert member_added.type_version == 2 and "user" not in member_added.payload
    assert member_added.payload["user_id"] == str(late)

    asyncio.run(rebuild(scratch.replace(events_topic=topic), RebuildOptions(ORDER)))

    model = read_model(scratch)
    fold = ReadModel()
    for envelope in store_envelopes(scratch, opened=True):
        fold.apply(envelope)
    assert model == comparable(fold)
    assert model["members"][(group, late)].active
    assert (group, 1, late) not in model["receipts"]  # joined after message 1
    assert model["receipts"][(group, 2, admin)].status == "SENT"


def test_an_old_envelope_in_the_log_is_upcast_by_the_replay(
    scratch: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, a, late = (uuid.uuid4() for _ in range(3))
    chat = Chat.create_group(uuid.uuid4(), "g", admin, [a])
    chat.add_member(late, by=admin)
    chat.send(late, "d", "l1", "text", b"hi", None, 1, 0)
    values = []
    for position, event in enumerate(chat.collect_events(), 1):
        key, value = encode_event(event, position)
        if type(event).__name__ == "MemberAdded":  # published by version 1 of the class
            data = orjson.loads(value)
            data["payload"]["user"] = data["payload"].pop("user_id")
            value = orjson.dumps(data)
        values.append((key, value))
    topic = f"{scratch.topic_prefix}parley.events.v1"
    create_topic(scratch, topic)
    producer = KafkaProducer(bootstrap_servers=scratch.kafka_bootstrap, acks="all")
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    version_2(monkeypatch)
    summary = asyncio.run(rebuild(scratch.replace(events_topic=topic), RebuildOptions(ORDER)))

    assert summary.bad_records == 0 and summary.records == 3
    fold = ReadModel()
    for _, value in values:
        fold.apply(upcast_envelope(decode_envelope(value)))
    model = read_model(scratch)
    assert model == comparable(fold)
    assert model["members"][(chat.id, late)].active
    assert model["receipts"][(chat.id, 1, admin)].status == "SENT"


@pytest.mark.unit
def test_the_live_workers_read_an_old_envelope_at_the_current_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A v1 event still in the topic when the workers restart on v2 code is upcast."""
    admin, late = uuid.uuid4(), uuid.uuid4()
    chat = Chat.create_group(uuid.uuid4(), "g", admin, [])
    chat.add_member(late, by=admin)
    values = []
    for position, event in enumerate(chat.collect_events(), 1):
        _, value = encode_event(event, position)
        if type(event).__name__ == "MemberAdded":
            data = orjson.loads(value)
            data["payload"]["user"] = data["payload"].pop("user_id")
            value = orjson.dumps(data)
        values.append((0, position, value))
    values.append((0, 99, b"not an envelope"))

    version_2(monkeypatch)
    records = decode_batch(values)

    assert [r.offset for r in records] == [1, 2]  # the unreadable one left out
    added = records[1].envelope
    assert (added.type, added.type_version) == ("MemberAdded", 2)
    assert added.payload["user_id"] == str(late) and "user" not in added.payload


def _envelopes(settings: Settings, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    out: list[Any] = []
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for messages in consumer.poll(timeout_ms=500).values():
            out.extend(decode_envelope(m.value) for m in messages)
    consumer.close()
    return sorted(out, key=lambda e: e.position)
