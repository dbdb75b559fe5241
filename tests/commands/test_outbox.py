"""The gateway's outbox against the real Kafka: order per key, default partitions."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

from commands.gateway.outbox import Outbox, RecordTooLarge
from infra.settings import Settings

PARTITIONS = 6


async def test_records_keep_their_order_per_key_and_the_default_partition(
    settings: Settings,
) -> None:
    topic = f"{settings.topic_prefix}outbox-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    outbox = Outbox(settings, topic, "test-outbox")
    outbox.start()
    try:
        keys = [str(uuid.uuid4()).encode() for _ in range(20)]
        sent = []
        for i in range(3000):  # appended in bursts, while earlier batches are in flight
            key = keys[i % len(keys)]
            sent.append((key, f"{i}".encode(), outbox.append(key, f"{i}".encode())))
            if i % 500 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*(done for _, _, done in sent)), 30)
        # One record too big for Kafka fails alone; the others still go.
        huge = outbox.append(keys[0], b"x" * (2 << 20))
        after = outbox.append(keys[0], b"after")
        await asyncio.wait_for(asyncio.gather(huge, after, return_exceptions=True), 30)
        assert isinstance(huge.exception(), RecordTooLarge) and after.exception() is None
    finally:
        await outbox.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: dict[bytes, list[bytes]] = {}
    partition_of: dict[bytes, int] = {}
    try:
        while sum(len(v) for v in got.values()) < len(sent) + 1:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for tp, records in batch.items():
                for record in records:
                    got.setdefault(record.key, []).append(record.value)
                    partition_of[record.key] = tp.partition
    finally:
        await consumer.stop()
        admin.delete_topics([topic])
        admin.close()
    for key in keys:
        expected = [value for k, value, _ in sent if k == key]
        if key == keys[0]:
            expected.append(b"after")
        assert got[key] == expected
        # The partition every other producer (Kafka's default: murmur2) picks for the key.
        assert partition_of[key] == (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
