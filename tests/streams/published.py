"""Read `parley.events` back from the beginning and check it against the event store."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID

from kafka import KafkaConsumer, TopicPartition

from infra.event_store import open_store
from infra.log_envelope import Envelope, decode_envelope, event_id_for
from infra.settings import Settings
from infra.topics import EVENTS


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes
    envelope: Envelope


def stored_event_ids(settings: Settings) -> set[UUID]:
    """The event id of every event in the store's notification log."""
    store = open_store(settings, AGGREGATE_CACHE_MAXSIZE="")
    ids: set[UUID] = set()
    try:
        start = 0
        while True:
            batch = store.recorder.select_notifications(
                start=start, limit=5_000, inclusive_of_start=False
            )
            if not batch:
                return ids
            ids.update(
                event_id_for(UUID(str(n.originator_id)), n.originator_version) for n in batch
            )
            start = batch[-1].id
    finally:
        store.close()


def read_until(settings: Settings, expected: set[UUID], deadline_s: float = 30.0) -> list[Record]:
    """Every record of the events topic, read from the start until all `expected` are in."""
    topic = settings.topic(EVENTS)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Record] = []
        missing = set(expected)
        deadline = time.monotonic() + deadline_s
        while missing:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(missing)} of {len(expected)} events not in {topic}")
            for tp, batch in consumer.poll(timeout_ms=200).items():
                for r in batch:
                    envelope = decode_envelope(r.value)
                    records.append(Record(tp.partition, r.offset, r.key, envelope))
                    missing.discard(envelope.event_id)
        # Whatever else is already there (duplicates of the tail) counts too.
        for tp, batch in consumer.poll(timeout_ms=500).items():
            records.extend(
                Record(tp.partition, r.offset, r.key, decode_envelope(r.value)) for r in batch
            )
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def check_order(records: list[Record]) -> int:
    """Assert the log's guarantees; return how many records are duplicates.

    Every chat lives in one partition under its own key; a duplicate is the same
    envelope as the first copy; keeping first copies only, each chat's events come in
    aggregate-version order with no gap (1, 2, 3, ...), its positions increase, and
    its message seqs are 1, 2, 3, ...
    """
    first: dict[UUID, Envelope] = {}
    by_chat: dict[UUID, list[Envelope]] = defaultdict(list)
    partition_of: dict[UUID, int] = {}
    duplicates = 0
    for record in records:
        env = record.envelope
        assert record.key == str(env.chat_id).encode()
        assert env.event_id == event_id_for(env.aggregate_id, env.aggregate_version)
        assert partition_of.setdefault(env.chat_id, record.partition) == record.partition
        if env.event_id in first:
            assert env == first[env.event_id], "a duplicate differs from its first copy"
            duplicates += 1
            continue
        first[env.event_id] = env
        by_chat[env.chat_id].append(env)
    for chat_id, events in by_chat.items():
        versions = [e.aggregate_version for e in events]
        assert versions == list(range(1, len(events) + 1)), f"chat {chat_id}: {versions[:20]}"
        positions = [e.position for e in events]
        assert positions == sorted(set(positions)), f"chat {chat_id}: positions out of order"
        seqs = [e.seq for e in events if e.type == "MessageSent"]
        assert seqs == list(range(1, len(seqs) + 1)), f"chat {chat_id}: seqs {seqs[:20]}"
    return duplicates


def event_ids(records: list[Record]) -> set[UUID]:
    return {r.envelope.event_id for r in records}
