"""The processor's Kafka loop: poll the commands topic, decide each batch, commit offsets.

A batch is decided and stored (`CommandProcessor.process`), retried while the database is
away, and only then are its offsets committed, at most every `COMMIT_EVERY_S`. A revoked
partition's chats leave the processor's cache; a broker that is away is waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError, OperationalError, PersistenceError
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError

from commands.processor.processor import CommandProcessor
from infra.retry import Backoff
from infra.settings import Settings
from infra.topics import COMMANDS

log = logging.getLogger("parley.processor")

COMMIT_EVERY_S = 0.5
"""The consumed offsets are committed at most this often (idempotent commands: a crash
redoes at most this much, answering each as before)."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: CommandProcessor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        parts = [tp.partition for tp in revoked]
        log.info("event=partitions_revoked partitions=%s", parts)
        self.processor.drop_partitions(parts)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("event=partitions_assigned partitions=%s", [tp.partition for tp in assigned])


def _await_partitions(consumer: KafkaConsumer, topic: str, stop: threading.Event) -> None:
    """After `subscribe`, wait until the consumer's metadata lists the topic's partitions.

    kafka-python joins the group with the partitions its metadata held when it last
    looked; a fresh consumer that joins before looking assigns itself nothing ("No
    partition metadata for topic") or compares against an empty snapshot, and rejoins
    at the next metadata update. That rejoin now and then hung for more than 90 s,
    leaving the processor without partitions. Fetched once after subscribing, the first
    join has them and stays.
    """
    waited = 0.0
    while not stop.is_set():
        consumer.topics()  # a metadata request; the group coordinator sees it too
        if consumer.partitions_for_topic(topic):
            return
        if waited and waited % 10 < 0.5:
            log.warning("event=waiting_for_topic topic=%s waited_s=%.0f", topic, waited)
        stop.wait(0.5)
        waited += 0.5


def consume_commands(
    settings: Settings,
    processor: CommandProcessor,
    consumer: KafkaConsumer,
    stop: threading.Event,
    ready: threading.Event | None = None,
) -> None:
    """Decide what `consumer` polls from the commands topic until `stop` is set.

    The processor and the consumer (and what they hold: the store, the id lease, the
    reply channel) are built and closed by the composition root (`parley.wiring`).
    """
    topic = settings.topic(COMMANDS)
    consumer.subscribe([topic], listener=_Rebalance(processor))
    _await_partitions(consumer, topic, stop)
    log.info("event=processor_started topic=%s", topic)
    committed = 0.0
    backoff = Backoff()
    try:
        while not stop.is_set():
            polled = _poll(consumer, stop, backoff, timeout_ms=200)
            if ready is not None and consumer.assignment():
                ready.set()
            if not polled:
                continue
            total = sum(len(v) for v in polled.values())
            if total < settings.processor_batch_max and settings.processor_linger_ms > 0:
                more = _poll(
                    consumer,
                    stop,
                    backoff,
                    timeout_ms=settings.processor_linger_ms,
                    max_records=settings.processor_batch_max - total,
                )
                for tp, records in more.items():
                    polled.setdefault(tp, []).extend(records)
            batch = [(tp.partition, r.value) for tp, rs in polled.items() for r in rs]
            _process_until_stored(processor, batch, stop)
            # The outcomes are stored and sent; a lost commit only redelivers idempotent
            # commands, so it need not hold up the next batch, nor go out for every batch
            # (at light load a batch is one command, and a commit costs a round trip).
            if time.monotonic() - committed >= COMMIT_EVERY_S:
                consumer.commit_async()
                committed = time.monotonic()
        # Stopped between batches (SIGTERM): every batch polled is stored, so commit
        # them all before leaving the group; the next owner of these partitions then
        # starts after them instead of deciding the last commands again.
        _commit_before_leaving(consumer)
    finally:
        consumer.close(autocommit=False)
        log.info("event=processor_stopped decided=%d", processor.decided_total)


def _poll(
    consumer: KafkaConsumer, stop: threading.Event, backoff: Backoff, **options: Any
) -> dict[TopicPartition, list[Any]]:
    """One poll; nothing if the broker is away. kafka-python raises from `poll` when it
    cannot find the group's coordinator (a broker restart did it): that ended the
    processor, which then stayed down. The consumer rejoins by itself at a later poll."""
    try:
        polled: dict[TopicPartition, list[Any]] = consumer.poll(**options)
    except KafkaError as exc:
        log.warning(
            "event=kafka_unavailable retry_in=%.1fs error=%s", backoff.delay, type(exc).__name__
        )
        stop.wait(backoff.next())
        return {}
    backoff.reset()
    return polled


def _commit_before_leaving(consumer: KafkaConsumer) -> None:
    try:
        consumer.commit()
        log.info("event=offsets_committed_on_stop")
    except KafkaError as exc:  # redelivered then, and decided idempotently
        log.warning("event=commit_on_stop_failed error=%s", type(exc).__name__)


def _process_until_stored(
    processor: CommandProcessor, batch: list[tuple[int, bytes]], stop: threading.Event
) -> None:
    """Retry a batch while the database is unreachable; offsets wait until it is stored."""
    backoff = Backoff()
    while True:
        try:
            processor.process(batch)
            return
        except (OperationalError, PersistenceError, psycopg.OperationalError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            log.warning(
                "event=store_unavailable retry_in=%.1fs error=%s",
                backoff.delay,
                type(exc).__name__,
            )
            if stop.wait(backoff.next()):
                raise
