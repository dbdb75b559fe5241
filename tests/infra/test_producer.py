"""Parley's producer (`infra/producer.py`) against the real broker."""

from __future__ import annotations

import threading
import uuid

from aiokafka.partitioner import DefaultPartitioner
from kafka import KafkaConsumer, TopicPartition

from infra.producer import Publisher
from infra.scratch import delete_topics
from infra.settings import Settings
from infra.topics import EVENTS, ensure_topics


def test_a_chat_lands_in_the_partition_every_other_client_computes(settings: Settings) -> None:
    """murmur2 of the key, as kafka-python, aiokafka and Java place it: a chat's events
    published before and after the move to librdkafka stay in one partition, in order."""
    own = settings.replace(topic_prefix=f"{settings.topic_prefix}pp{uuid.uuid4().hex[:6]}.")
    ensure_topics(own)
    topic = own.topic(EVENTS)
    chats = [str(uuid.uuid4()).encode() for _ in range(40)]
    records = [(chat, b"%d" % n) for n in range(3) for chat in chats]
    publisher = Publisher(own, topic, "parley-test-producer")
    consumer = KafkaConsumer(bootstrap_servers=own.kafka_bootstrap, auto_offset_reset="earliest")
    try:
        publisher.publish(records, threading.Event())
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        assert len(partitions) > 1
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        seen: list[tuple[int, bytes, bytes]] = []
        while len(seen) < len(records):
            polled = consumer.poll(timeout_ms=10_000)
            assert polled, "records missing"
            seen += [(tp.partition, r.key, r.value) for tp, rs in polled.items() for r in rs]
        murmur2 = DefaultPartitioner()
        for partition, key, _ in seen:
            assert partition == murmur2(key, partitions, partitions)
        for chat in chats:  # and in the order they were published
            assert [v for _, k, v in seen if k == chat] == [b"0", b"1", b"2"]
    finally:
        publisher.close()
        consumer.close()
        delete_topics(own)
