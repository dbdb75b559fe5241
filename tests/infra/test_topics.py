"""Parley's topics against the real broker: the events topic stamps each event with its
append to the log; an existing topic's drift is reported by `ensure`, fixed by `align`."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from infra.scratch import delete_topics
from infra.settings import Settings
from infra.topics import (
    COMMANDS,
    COMMANDS_SEGMENT_MS,
    EVENTS,
    PARTITIONS,
    Difference,
    TopicOutcome,
    TopicReport,
    align_topics,
    ensure_topics,
    topic_specs,
)
from parley.cli import main

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


KAFKA_SEGMENT_MS = str(7 * 24 * 3600 * 1000)  # Kafka's default `segment.ms`


def test_a_topic_made_without_parleys_settings_is_reported_then_aligned_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    own = settings.replace(topic_prefix=f"{settings.topic_prefix}drift{uuid.uuid4().hex[:6]}.")
    specs = {spec.name: spec for spec in topic_specs(own)}
    commands, events = specs[own.topic(COMMANDS)], specs[own.topic(EVENTS)]
    admin = KafkaAdminClient(bootstrap_servers=own.kafka_bootstrap)
    try:
        # The commands topic as made before `segment.ms` was set, with a partition fewer,
        # and a config its operator set since; the events topic with more partitions.
        before = {k: v for k, v in commands.config.items() if k != "segment.ms"}
        operator = {"max.message.bytes": "2000000"}
        admin.create_topics(
            [
                NewTopic(
                    commands.name, commands.partitions - 1, 1, topic_configs=before | operator
                ),
                NewTopic(events.name, events.partitions + 2, 1, topic_configs=events.config),
            ]
        )
        fewer = Difference(PARTITIONS, str(commands.partitions - 1), str(commands.partitions))
        segment = Difference("segment.ms", KAFKA_SEGMENT_MS, str(COMMANDS_SEGMENT_MS))

        monkeypatch.setenv("PARLEY_TOPIC_PREFIX", own.topic_prefix)
        assert main(["topics", "ensure"]) == 0  # drift is reported, not failed on
        printed = capsys.readouterr().out
        assert (
            f"{commands.name} present, differs: segment.ms={KAFKA_SEGMENT_MS} (Parley sets "
            f"{COMMANDS_SEGMENT_MS}), {fewer}; run parley topics align; partitions are never "
            "changed (docs/log.md)" in " ".join(printed.split())
        )
        ensured = {r.name: r for r in ensure_topics(own)}
        assert ensured[commands.name].differences == (segment, fewer)
        assert ensured[events.name] == TopicReport(events.name, TopicOutcome.PRESENT)
        assert str(ensured[events.name]) == "present"  # more partitions are not drift

        aligned = {r.name: r for r in align_topics(own)}
        assert aligned[commands.name].outcome is TopicOutcome.ALIGNED
        assert str(aligned[commands.name]) == (
            f"aligned: segment.ms={COMMANDS_SEGMENT_MS} (was {KAFKA_SEGMENT_MS}); {fewer}; "
            "partitions are never changed (docs/log.md)"
        )
        assert {r.outcome for n, r in aligned.items() if n != commands.name} == {
            TopicOutcome.NOTHING_TO_ALIGN
        }

        # Set on the topic: Parley's keys, and the operator's one kept beside them.
        (topic,) = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, commands.name)]
        )["topic"].values()
        assert {k: c["value"] for k, c in topic.items()} == commands.config | operator
        (described,) = admin.describe_topics([commands.name])
        assert len(described["partitions"]) == commands.partitions - 1

        again = {r.name: r for r in align_topics(own)}
        assert again[commands.name] == TopicReport(
            commands.name, TopicOutcome.NOTHING_TO_ALIGN, (fewer,)
        )
        assert {r.outcome for r in again.values()} == {TopicOutcome.NOTHING_TO_ALIGN}
        assert main(["topics", "align"]) == 0
        assert "aligned" not in capsys.readouterr().out
        (after,) = [r for r in ensure_topics(own) if r.name == commands.name]
        assert "run parley topics align" not in str(after)
    finally:
        admin.close()
        delete_topics(own)


def test_align_leaves_a_missing_topic_to_ensure(settings: Settings) -> None:
    own = settings.replace(topic_prefix=f"{settings.topic_prefix}none{uuid.uuid4().hex[:6]}.")
    reports = align_topics(own)
    assert [r.outcome for r in reports] == [TopicOutcome.ABSENT] * len(topic_specs(own))
    assert str(reports[0]) == "absent; run parley topics ensure"
