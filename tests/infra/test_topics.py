"""The events topic stamps each event with its append to the log, against the real broker."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from infra.scratch import delete_topics
from infra.settings import Settings
from infra.topics import EVENTS, ensure_topics

LOG_APPEND_TIME = 1  # Kafka's timestamp type of a record stamped by the broker


def test_an_event_carries_the_time_the_broker_appended_it(settings: Settings) -> None:
    own = settings.replace(topic_prefix=f"{settings.topic_prefix}ts{uuid.uuid4().hex[:6]}.")
    ensure_topics(own)
    topic = own.topic(EVENTS)
    producer = KafkaProducer(bootstrap_servers=own.kafka_bootstrap, acks="all")
    consumer = KafkaConsumer(bootstrap_servers=own.kafka_bootstrap, auto_offset_reset="earliest")
    try:
        # A send stamped an hour ago by the producer: the broker's stamp replaces it.
        before = time.time()
        an_hour_ago = int((before - 3600) * 1000)
        metadata = producer.send(topic, key=b"chat", value=b"x", timestamp_ms=an_hour_ago).get(30)
        after = time.time()
        assert before - 1 <= metadata.timestamp / 1000 <= after + 1

        consumer.assign([TopicPartition(topic, metadata.partition)])
        records = consumer.poll(timeout_ms=10_000)
        (record,) = [r for batch in records.values() for r in batch]
        assert record.timestamp_type == LOG_APPEND_TIME
        assert record.timestamp == metadata.timestamp
    finally:
        producer.close()
        consumer.close()
        delete_topics(own)
