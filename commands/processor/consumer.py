"""The processor's Kafka loop: poll the commands topic, decide each batch, commit offsets.

A batch is what the consumer has fetched already, up to `processor_batch_max`, taken as
soon as one command is there and completed by waiting `processor_linger_ms` at most for
more: at light load a command waits 2 ms, not a fetch interval. It is decided and
stored (`CommandProcessor.process`), retried while the database is away, and only then
are its offsets committed, at most every `COMMIT_EVERY_S`, with the publish marks
(`publishing.py`). An assigned partition is claimed, and its last owner's unpublished
tail published, before any of its commands is decided; a revoked partition's events
are waited for a moment and its chats leave the processor's cache. A processor whose
save is refused because another one claimed a partition of it (it lost the partition
without noticing) leaves the group and joins again, committing nothing of that batch.
A broker that is away is waited for.

The client is librdkafka's (confluent-kafka): it fetches and decodes in its own C
threads, and costs a fifth of kafka-python's CPU per record here (docs/performance.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from eventsourcing.persistence import IntegrityError, OperationalError, PersistenceError

from commands.processor import metrics
from commands.processor.processor import CommandProcessor
from commands.processor.publishing import EventPublisher
from infra.producer import librdkafka_logger
from infra.publish_marks import Fenced
from infra.retry import Backoff
from infra.settings import Settings
from infra.topics import COMMANDS

log = logging.getLogger("parley.processor")

COMMIT_EVERY_S = 0.5
"""The consumed offsets are committed at most this often (idempotent commands: a crash
redoes at most this much, answering each as before)."""
POLL_S = 0.2

OnCommit = Callable[[KafkaError | None, list[TopicPartition] | None], None]
"""Told what a commit settled (librdkafka's `on_commit`): an error, or the offsets, each
with its own error (the commands truncator takes what the group accepted: truncate.py)."""


def consumer_config(
    settings: Settings, client_id: str, on_commit: OnCommit | None = None
) -> dict[str, Any]:
    """The processor's consumer: offsets committed by hand, after each batch is stored."""
    hooks = {} if on_commit is None else {"on_commit": on_commit}
    return {
        **hooks,
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.processor_group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # The broker's minimum. After a broker restart the coordinator waits this long
        # for the members it remembers before it assigns partitions again (librdkafka
        # rejoins with a new member id once its session ran out while the broker was
        # down): 10 s made a send wait 10 s for its ack after Kafka came back.
        "session.timeout.ms": 6_000,
        "heartbeat.interval.ms": 1_000,
        # The broker answers a fetch as soon as any record is there, and otherwise
        # after this long: it bounds idle polling, not a command's wait.
        "fetch.wait.max.ms": settings.processor_fetch_wait_ms,
        "fetch.min.bytes": 1,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1_000,
        "enable.partition.eof": False,
        "statistics.interval.ms": metrics.STATS_INTERVAL_MS,  # the lag per partition
        "stats_cb": metrics.kafka_stats,
    }


def open_consumer(
    settings: Settings, client_id: str, on_commit: OnCommit | None = None
) -> Consumer:
    return Consumer(
        consumer_config(settings, client_id, on_commit), logger=librdkafka_logger("processor")
    )


def consume_commands(
    settings: Settings,
    processor: CommandProcessor,
    consumer: Consumer,
    stop: threading.Event,
    ready: threading.Event | None = None,
    on_commit: OnCommit | None = None,
) -> None:
    """Decide what `consumer` polls from the commands topic until `stop` is set.

    `on_commit` is the consumer's own commit callback (`open_consumer`), which librdkafka
    calls for the asynchronous commits only: it is told the last, synchronous one here.

    The processor and the consumer (and what they hold: the store, the id lease, the
    reply channel) are built and closed by the composition root (`parley.wiring`).
    """
    topic = settings.topic(COMMANDS)
    publisher = processor.publisher

    def revoked(_: Consumer, partitions: list[TopicPartition]) -> None:
        parts = [tp.partition for tp in partitions]
        log.info("event=partitions_revoked partitions=%s", parts)
        if publisher is not None:
            publisher.release(parts)
        processor.drop_partitions(parts)

    def assigned(_: Consumer, partitions: list[TopicPartition]) -> None:
        parts = [tp.partition for tp in partitions]
        if publisher is not None and parts:
            count = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            publisher.claim(parts, count, stop)
        log.info("event=partitions_assigned partitions=%s", parts)
        if ready is not None and partitions:
            ready.set()

    def subscribe() -> None:
        consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    subscribe()
    log.info("event=processor_started topic=%s", topic)
    committed = 0.0
    uncommitted = False
    backoff = Backoff()
    try:
        while not stop.is_set():
            if publisher is not None:
                publisher.serve()
            batch = _next_batch(settings, consumer, stop, backoff)
            if batch:
                try:
                    with metrics.BATCH_SECONDS.time():
                        _process_until_stored(processor, batch, stop)
                except Fenced:
                    # Another processor owns a partition of this batch now: this one
                    # missed losing it. Nothing of the batch is stored or committed;
                    # leave the group and join again, from the committed offsets.
                    log.warning("event=fenced commands=%d", len(batch))
                    consumer.unsubscribe()
                    processor.drop_partitions(list(processor.owned))
                    subscribe()
                    continue
                metrics.BATCH_COMMANDS.observe(len(batch))
                uncommitted = True
            # The outcomes are stored and sent; a lost commit only redelivers idempotent
            # commands, so it need not hold up the next batch, nor go out for every batch
            # (at light load a batch is one command, and a commit costs a round trip).
            if time.monotonic() - committed >= COMMIT_EVERY_S:
                if uncommitted:
                    _commit(consumer, asynchronous=True)
                    uncommitted = False
                if publisher is not None:
                    _sync_marks(publisher)
                committed = time.monotonic()
        # Stopped between batches (SIGTERM): every batch polled is stored, so commit
        # them all before leaving the group; the next owner of these partitions then
        # starts after them instead of deciding the last commands again.
        if _commit(consumer, asynchronous=False, on_commit=on_commit):
            log.info("event=offsets_committed_on_stop")
        if publisher is not None:
            publisher.close()
    finally:
        consumer.close()
        log.info("event=processor_stopped decided=%d", processor.decided_total)


def _next_batch(
    settings: Settings, consumer: Consumer, stop: threading.Event, backoff: Backoff
) -> list[tuple[int, bytes]]:
    """(partition, command) of the next batch: what is fetched already, once one is there."""
    first = _records(consumer.consume(num_messages=1, timeout=POLL_S), stop, backoff)
    if not first:
        return first
    wanted = settings.processor_batch_max - len(first)
    batch = first + _records(consumer.consume(num_messages=wanted, timeout=0), stop, backoff)
    if len(batch) < settings.processor_batch_max and settings.processor_linger_ms > 0:
        wanted = settings.processor_batch_max - len(batch)
        more = consumer.consume(num_messages=wanted, timeout=settings.processor_linger_ms / 1000)
        batch += _records(more, stop, backoff)
    return batch


def _records(
    messages: list[Message], stop: threading.Event, backoff: Backoff
) -> list[tuple[int, bytes]]:
    """The commands among `messages`; an error (the broker away) is logged and waited on."""
    records = []
    for message in messages:
        error = message.error()
        if error is None:
            value = message.value()
            partition = message.partition()
            if value is not None and partition is not None:
                records.append((partition, value))
                metrics.observe_wait(message.timestamp())
            continue
        if error.fatal():
            raise KafkaException(error)
        log.warning("event=kafka_unavailable retry_in=%.1fs error=%s", backoff.delay, error.name())
        stop.wait(backoff.next())
        return records
    backoff.reset()
    return records


def _commit(consumer: Consumer, asynchronous: bool, on_commit: OnCommit | None = None) -> bool:
    """Commit what was consumed; False if there was nothing to commit or it failed
    (the commands are then redelivered, and decided idempotently)."""
    try:
        if asynchronous:
            consumer.commit(asynchronous=True)
        else:
            done = consumer.commit(asynchronous=False)
            if on_commit is not None:
                on_commit(None, done)
        return True
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not (isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET):
            log.warning("event=commit_failed error=%s", exc)
        return False


def _sync_marks(publisher: EventPublisher) -> None:
    try:
        publisher.sync_marks()
    except Exception as exc:  # the marks stay lower: a next owner publishes a few more
        log.warning("event=marks_not_moved error=%s", type(exc).__name__)


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
            metrics.STORE_RETRIES.inc()
            log.warning(
                "event=store_unavailable retry_in=%.1fs error=%s",
                backoff.delay,
                type(exc).__name__,
            )
            if stop.wait(backoff.next()):
                raise
