"""`parley replay republish`: the Kafka log rebuilt from the event store into a new topic:
every stored event, in store order, each chat in the same partition as in the live log;
the relay's position recorded; never appended to a topic that holds records."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from typing import Any
from uuid import UUID

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.log_envelope import decode_envelope
from infra.settings import Settings
from infra.topics import EVENTS
from projections.replay.errors import TopicExists
from streams.relay import read_position
from streams.republish import republish
from tests.projections.test_pipeline import store_envelopes
from tests.replay.conftest import chatter, conversation, settle
from tests.services import ROOT, Service


def by_partition(settings: Settings, topic: str) -> dict[int, list[Any]]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    out: dict[int, list[Any]] = defaultdict(list)
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for tp, messages in consumer.poll(timeout_ms=500).items():
            out[tp.partition].extend(decode_envelope(m.value) for m in messages)
    consumer.close()
    return dict(out)


def test_the_log_is_rebuilt_from_the_store_into_a_new_topic(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    conversation(topics)
    chatter(topics)
    settle(topics)
    topic = f"{topics.topic_prefix}parley.events.rebuilt"

    summary = republish(topics, topic, relay_name="rebuilt")

    stored = store_envelopes(topics)
    assert summary.events == len(stored) and summary.position == stored[-1].position
    rebuilt = by_partition(topics, topic)
    live = by_partition(topics, topics.topic(EVENTS))
    assert sum(len(v) for v in rebuilt.values()) == len(stored)
    home: dict[UUID, int] = {e.chat_id: p for p, envs in live.items() for e in envs}
    for partition, envs in rebuilt.items():
        assert all(home[e.chat_id] == partition for e in envs)
        assert [e.position for e in envs] == sorted(e.position for e in envs)
    assert sorted((e for envs in rebuilt.values() for e in envs), key=lambda e: e.position) == (
        stored
    )
    with psycopg.connect(topics.pg_conninfo) as conn:
        assert read_position(conn, "rebuilt") == summary.position

    with pytest.raises(TopicExists) as refused:
        republish(topics, topic)
    assert refused.value.code == "topic_exists"


def test_the_cli_lists_rebuilds_and_republishes(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    conversation(topics)
    settle(topics)

    def parley(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "parley.cli", "replay", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    listed = parley("list")
    assert listed.returncode == 0, listed.stderr
    assert "messages" in listed.stdout and "live" in listed.stdout
    assert "total lag:" in listed.stdout

    rebuilt = parley("rebuild", "messages", "receipts", "--verify")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "swapped    yes" in rebuilt.stdout
    assert "0 difference(s)" in rebuilt.stdout
    assert "events/s" in rebuilt.stdout and "building" in rebuilt.stderr  # the bar

    unknown = parley("rebuild", "nonsense")
    assert unknown.returncode == 3 and "error [unknown_projection]" in unknown.stderr

    topic = f"{topics.topic_prefix}parley.events.cli"
    again = parley("republish", "--to-topic", topic)
    assert again.returncode == 0, again.stderr
    assert f"PARLEY_EVENTS_TOPIC={topic}" in again.stdout
