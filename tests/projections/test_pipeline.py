"""The whole write-to-read pipeline on the real stack: processor -> store -> relay ->
Kafka -> Faust workers -> PostgreSQL and Redis projections.

Projections are compared with the pure fold of every event in the store (the oracle),
after a scripted conversation, after duplicates injected into the topic, and after the
worker was SIGKILLed mid-stream several times.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest
import redis
from kafka import KafkaProducer

from commands.command import Command, CommandType, Outcome
from commands.gateway.bus import CommandBus
from domain.ids import direct_chat_id
from infra.body_seal import open_envelopes
from infra.event_store import max_position
from infra.log_envelope import Envelope, decode_envelope, encode_event
from infra.settings import Settings
from infra.topics import EVENTS
from projections.cache import chats_key, recent_key, unread_key
from projections.fold import ReadModel
from projections.schema import LIVE_SCHEMA
from tests.commands.client import create_group, fresh_store, new_users, send
from tests.projections.model import comparable, read_back
from tests.services import Service, running


@pytest.fixture(scope="module")
def pipeline(
    topics: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Service]]:
    logs = tmp_path_factory.mktemp("pipeline")
    with (
        running("processor", logs / "processor.log") as processor,
        running("relay", logs / "relay.log") as relay,
        running("workers", logs / "workers.log") as workers,
    ):
        processor.wait_for_log(r"partitions_assigned partitions=\[\d")
        relay.wait_for_log(r"event=relay_active")
        workers.wait_for_log(r"Worker ready")
        yield {"processor": processor, "relay": relay, "workers": workers}


def store_envelopes(settings: Settings, opened: bool = False) -> list[Envelope]:
    """Every event in the store, as the relay publishes it (message content sealed), or
    `opened` as the workers project it."""
    store = fresh_store(settings)
    try:
        out: list[Any] = []
        start = 1
        while True:
            batch = store.recorder.select_notifications(start=start, limit=1000)
            if not batch:
                return open_envelopes(out, store.seal.keys) if opened else out
            for n in batch:
                event = store.mapper.to_domain_event(n)
                out.append(decode_envelope(encode_event(event, n.id)[1]))
            start = batch[-1].id + 1
    finally:
        store.close()


def oracle(settings: Settings) -> ReadModel:
    model = ReadModel()
    for envelope in store_envelopes(settings, opened=True):
        model.apply(envelope)
    return model


def wait_projected(settings: Settings, deadline_s: float = 60.0) -> None:
    """Wait until every Kafka partition's records are behind the projections' checkpoints."""
    from kafka import KafkaConsumer, TopicPartition

    store = fresh_store(settings)
    head = max_position(store)
    store.close()
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    topic = settings.topic(EVENTS)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            ends = consumer.end_offsets(parts)
            with psycopg.connect(settings.pg_conninfo) as conn:
                rows = conn.execute(
                    f'SELECT projection, partition, "offset" FROM "{LIVE_SCHEMA}".checkpoints'
                ).fetchall()
                relayed = conn.execute(
                    "SELECT coalesce(max(position), 0) FROM relay_position"
                ).fetchone()
            marks = {(r[0], r[1]): r[2] for r in rows}
            caught_up = all(
                marks.get((proj, tp.partition), -1) >= end - 1
                for tp, end in ends.items()
                if end > 0
                for proj in ("chats", "messages", "receipts", "inbox")
            )
            if caught_up and relayed is not None and relayed[0] >= head:
                return
            time.sleep(0.1)
    finally:
        consumer.close()
    raise AssertionError(f"projections did not catch up within {deadline_s}s")


def run_commands(settings: Settings, build: Any) -> list[Outcome]:
    async def go() -> list[Outcome]:
        bus = CommandBus(settings, reply_to=f"test-{uuid.uuid4().hex[:8]}")
        await bus.start()
        try:
            outcomes = []
            for step in build(bus.reply_to):
                if isinstance(step, list):
                    outcomes.extend(await asyncio.gather(*(bus.submit(c) for c in step)))
                else:
                    outcomes.append(await bus.submit(step))
            return outcomes
        finally:
            await bus.stop()

    return asyncio.run(go())


def receipt(chat: UUID, actor: UUID, kind: CommandType, up_to: int, r: str) -> Command:
    return Command(kind, chat, actor, {"up_to": up_to}, reply_to=r)


def conversation_script(
    settings: Settings, members: int, delivered: int, read: int
) -> tuple[dict[str, UUID], Callable[[str], list[Any]]]:
    """A 1:1 chat and a group of `members` (the admin included): sends, receipts of the
    first `delivered` and `read` members, a removal, a send, the re-add and a send.
    Returns the ids (direct, group, bob, removed) and the commands for a reply channel."""
    alice, bob = new_users(settings, 2)
    direct = direct_chat_id(alice, bob)
    admin, *crowd = new_users(settings, members)
    group = uuid.uuid4()
    removed = crowd[0]

    def script(r: str) -> list[Any]:
        return [
            send(direct, alice, "a1", "hello", r, to=bob),
            send(direct, alice, "a2", "are you there", r, to=bob),
            send(direct, bob, "b1", "yes", r, to=alice),
            receipt(direct, bob, CommandType.MARK_DELIVERED, 2, r),
            receipt(direct, bob, CommandType.MARK_READ, 1, r),
            create_group(group, admin, crowd, r),
            send(group, admin, "g1", "welcome", r),
            send(group, crowd[5], "g2", "thanks", r),
            [receipt(group, u, CommandType.MARK_DELIVERED, 2, r) for u in crowd[:delivered]],
            [receipt(group, u, CommandType.MARK_READ, 1, r) for u in crowd[:read]],
            Command(CommandType.REMOVE_MEMBER, group, admin, {"user_id": str(removed)}, reply_to=r),
            send(group, admin, "g3", "after the removal", r),
            Command(CommandType.ADD_MEMBER, group, admin, {"user_id": str(removed)}, reply_to=r),
            send(group, admin, "g4", "welcome back", r),
        ]

    return {"direct": direct, "group": group, "bob": bob, "removed": removed}, script


def test_a_scripted_conversation_is_projected_exactly(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    ids, script = conversation_script(topics, 256, delivered=100, read=50)
    direct, bob, group, removed = ids["direct"], ids["bob"], ids["group"], ids["removed"]
    outcomes = run_commands(topics, script)
    assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok]
    wait_projected(topics)

    model = read_back(topics.pg_conninfo, LIVE_SCHEMA)
    assert comparable(model) == comparable(oracle(topics))
    # What the events imply, spelled out for the 256-member group:
    assert model.counts[(group, 1)] == [255, 100, 50]
    assert model.counts[(group, 3)][0] == 254  # the removed member is not a recipient
    assert (group, 3, removed) not in model.receipts
    assert (removed, group, 4) in model.inbox
    assert model.unread[(bob, direct)] == 1
    assert model.members[(direct, bob)].read_up_to == 1
    assert sorted(k[2] for k in model.inbox if k[0] == bob) == []  # delivered up to 2

    cache = redis.Redis.from_url(topics.redis_url)
    recent: list[tuple[bytes, float]] = cache.zrange(recent_key(group), 0, -1, withscores=True)  # type: ignore[assignment]
    assert [int(score) for _, score in recent] == [1, 2, 3, 4]
    assert [orjson.loads(m)["seq"] for m, _ in recent] == [1, 2, 3, 4]
    assert cache.hget(unread_key(bob), str(direct)) == b"1"
    # Each member's chat list holds the chat, scored by its last activity (ms).
    assert cache.zscore(chats_key(bob), str(direct)) is not None
    assert cache.zscore(chats_key(removed), str(group)) is not None
    cache.close()


def test_duplicates_in_the_topic_change_nothing(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    alice, bob, carol = new_users(topics, 3)
    group = uuid.uuid4()
    run_commands(
        topics,
        lambda r: [
            create_group(group, alice, [bob, carol], r),
            *[send(group, alice, f"m{i}", "x", r) for i in range(5)],
            receipt(group, bob, CommandType.MARK_READ, 3, r),
        ],
    )
    wait_projected(topics)
    before = comparable(read_back(topics.pg_conninfo, LIVE_SCHEMA))

    # Re-publish every event of the store again, as a relay crash would, with the same ids.
    producer = KafkaProducer(bootstrap_servers=topics.kafka_bootstrap, acks="all")
    for envelope in store_envelopes(topics):
        key = str(envelope.chat_id).encode()
        producer.send(topics.topic(EVENTS), key=key, value=_republish(envelope))
    producer.flush()
    producer.close()
    wait_projected(topics)
    assert comparable(read_back(topics.pg_conninfo, LIVE_SCHEMA)) == before


def _republish(envelope: Envelope) -> bytes:
    import orjson

    return orjson.dumps(
        {
            "v": envelope.v,
            "event_id": str(envelope.event_id),
            "type": envelope.type,
            "type_version": envelope.type_version,
            "chat_id": str(envelope.chat_id),
            "seq": envelope.seq,
            "aggregate_id": str(envelope.aggregate_id),
            "aggregate_version": envelope.aggregate_version,
            "position": envelope.position,
            "timestamp": envelope.timestamp.isoformat(),
            "payload": dict(envelope.payload),
        }
    )


def test_a_worker_killed_mid_batch_resumes_to_the_same_projections(
    topics: Settings, pipeline: dict[str, Service], tmp_path: Path
) -> None:
    workers = pipeline["workers"]
    pairs = [new_users(topics, 2) for _ in range(20)]

    def traffic(round_: int) -> Any:
        return lambda r: [
            [
                send(direct_chat_id(a, b), a, f"r{round_}-{i}", "x", r, to=b)
                for a, b in pairs
                for i in range(10)
            ],
            [
                receipt(direct_chat_id(a, b), b, CommandType.MARK_READ, 5 * (round_ + 1), r)
                for a, b in pairs
            ],
        ]

    for round_ in range(2):
        run_commands(topics, traffic(round_))
        # Kill while it is still working through the round's events.
        workers.kill()
        workers.start()
        workers.wait_for_log(r"Worker ready", after=len(workers.text()) - 1)
    wait_projected(topics, deadline_s=90)
    assert comparable(read_back(topics.pg_conninfo, LIVE_SCHEMA)) == comparable(oracle(topics))
