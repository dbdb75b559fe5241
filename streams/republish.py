"""`parley replay republish`: rebuild the Kafka log from the event store, into a new topic.

For the day `parley.events` is lost or damaged. It reads the store's notification log
from the first position, exactly as the relay does (the store's mapper, so old events
are upcast; `infra.log_envelope.encode_event`; the relay's idempotent `Publisher`, one
acknowledged batch at a time) and writes every event to a new topic created with the
events topic's settings and partition count (one chat -> one partition depends on it).
At the end it records the last position under a relay name, so a relay started with
`PARLEY_RELAY_NAME=<that name> PARLEY_EVENTS_TOPIC=<topic>` continues right after it.
Consumers switch with `PARLEY_EVENTS_TOPIC` (docs/replay.md has the whole procedure).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from infra.event_store import max_position, open_store
from infra.log_envelope import encode_event
from infra.producer import Publisher
from infra.settings import Settings
from infra.topics import EVENTS, topic_specs
from projections.replay.errors import TopicExists
from streams.relay import RECORD_POSITION

log = logging.getLogger("parley.replay")

BATCH = 2_000


@dataclass(frozen=True)
class RepublishSummary:
    topic: str
    partitions: int
    events: int
    position: int
    relay_name: str
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def republish(
    settings: Settings,
    to_topic: str,
    relay_name: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> RepublishSummary:
    """Publish every stored event, in store order, to `to_topic` (created here).

    `on_batch(published, head)` is called after each acknowledged batch. Raises
    `TopicExists` if the topic already holds records.
    """
    stop = stop or threading.Event()
    name = relay_name or f"republish:{to_topic}"
    partitions = create_topic(settings, to_topic)
    store = open_store(settings, AGGREGATE_CACHE_MAXSIZE="")
    publisher = Publisher(settings, to_topic, f"parley-republish-{name}")
    started = time.monotonic()
    published, position = 0, 0
    try:
        head = max_position(store)
        to_event = store.mapper.to_domain_event
        while not stop.is_set():
            notifications = store.recorder.select_notifications(
                start=position, limit=BATCH, inclusive_of_start=False
            )
            if not notifications:
                break
            publisher.publish([encode_event(to_event(n), n.id) for n in notifications], stop)
            position = notifications[-1].id
            published += len(notifications)
            head = max(head, position)
            if on_batch is not None:
                on_batch(published, head)
    finally:
        publisher.close()
        store.close()
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(RECORD_POSITION, (name, position))
    summary = RepublishSummary(
        to_topic, partitions, published, position, name, time.monotonic() - started
    )
    log.info(
        "event=replay_republished topic=%s events=%d position=%d relay_name=%s seconds=%.1f",
        to_topic,
        published,
        position,
        name,
        summary.seconds,
    )
    return summary


def create_topic(settings: Settings, topic: str) -> int:
    """Create `topic` like the events topic (partitions from the live one if it exists);
    accept an existing empty topic with the same partitions; return the partition count."""
    spec = next(s for s in topic_specs(settings) if s.name == settings.topic(EVENTS))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="parley-replay")
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        live = consumer.partitions_for_topic(spec.name)
        partitions = len(live) if live else spec.partitions
        try:
            admin.create_topics(
                [
                    NewTopic(
                        topic, partitions, settings.replication_factor, topic_configs=spec.config
                    )
                ]
            )
            return partitions
        except TopicAlreadyExistsError:
            pass
        found = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in found]
        ends = consumer.end_offsets(tps)
        if len(found) != partitions or any(ends.values()):
            raise TopicExists(
                f"topic {topic!r} exists already ({len(found)} partitions, "
                f"{sum(ends.values())} records); republish only into a new topic"
            ) from None
        return partitions
    finally:
        consumer.close()
        admin.close()
