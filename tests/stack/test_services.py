"""The stack is real: records, transactions and round trips through the three services."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from infra.settings import Settings


def _topic(settings: Settings, partitions: int = 1) -> str:
    name = settings.topic(f"stack-{uuid.uuid4().hex[:8]}")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def test_kafka_python_produces_and_consumes(settings: Settings) -> None:
    topic = _topic(settings)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    producer.send(topic, key=b"chat-1", value=b"hello").get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"g-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    try:
        first = next(iter(consumer), None)  # the first record, or None after 15 s idle
    finally:
        consumer.close()
    assert first is not None and (first.key, first.value) == (b"chat-1", b"hello")


def test_aiokafka_produces_and_consumes(settings: Settings) -> None:
    topic = _topic(settings, partitions=3)

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all"
        )
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic, f"m{i}".encode(), key=b"chat-7")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"g-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            async with asyncio.timeout(20):
                async for message in consumer:
                    assert message.value is not None
                    values.append(message.value)
                    if len(values) == 10:
                        break
        finally:
            await consumer.stop()
        return values

    # One key, one partition: the order sent is the order read.
    assert asyncio.run(round_trip()) == [f"m{i}".encode() for i in range(10)]


def test_postgres_commits_and_rolls_back(settings: Settings) -> None:
    with psycopg.connect(settings.pg_conninfo) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS stack_probe (id int PRIMARY KEY, note text)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO stack_probe VALUES (1, 'kept')")
        try:
            with conn.transaction():
                conn.execute("INSERT INTO stack_probe VALUES (2, 'dropped')")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        rows = conn.execute("SELECT id, note FROM stack_probe ORDER BY id").fetchall()
    assert rows == [(1, "kept")]


def test_redis_round_trip(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    key = f"probe:{uuid.uuid4().hex}"
    client.set(key, "v", ex=60)
    assert client.get(key) == b"v"
    if settings.is_managed("redis"):
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.close()
