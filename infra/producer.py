"""Publishing to Kafka in order, nothing lost: one producer configuration for Parley.

The producer is librdkafka's (confluent-kafka): idempotent (acks=all, at most 5
requests in flight, ordered per partition while it retries), messages never time out
inside it (a broker that is down only delays them), and a gap would be a fatal error
rather than a reordering (`enable.gapless.guarantee`). It costs about a fifth of
kafka-python's CPU per record on this machine (docs/performance.md).

`Publisher.publish` hands over one batch (one `produce_batch` call) and returns once
Kafka acknowledged all of it.
If any record of the batch fails, the producer is dropped at once (nothing later of the
batch can land before the failed record is sent again) and the whole batch is sent again
by a new one, with backoff, until it is acknowledged or the caller stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from infra.retry import Backoff
from infra.settings import Settings

log = logging.getLogger("parley.producer")

WAIT_SLICE_S = 0.25
KAFKA_WAIT_LOG_S = 5.0
MAX_BACKOFF_S = 5.0


class Repeats(logging.Filter):
    """Lets through one of each librdkafka log line (by its first 100 characters) per
    `every_s`: while a broker is down librdkafka reports every reconnect attempt, tens a
    second, and the line says nothing new after the first."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()[:100]
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        if len(self._last) > 1_000:
            self._last.clear()
        self._last[key] = now
        return True


def librdkafka_logger(name: str) -> logging.Logger:
    """The logger a librdkafka client of service `name` writes to, repeats held back."""
    logger = logging.getLogger(f"parley.{name}.librdkafka")
    if not any(isinstance(f, Repeats) for f in logger.filters):
        logger.addFilter(Repeats())
    return logger


class Stopped(Exception):
    """Asked to stop in the middle of a batch: not all of it is acknowledged."""


class PublishFailed(Exception):
    """A record of the batch failed; the batch is sent again by a new producer."""


def producer_config(settings: Settings, client_id: str) -> dict[str, Any]:
    """The settings every producer of Parley's logs uses."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        # Kafka's murmur2 of the key, as the Java client, kafka-python and aiokafka
        # compute it: a chat stays in the partition its earlier events went to
        # (librdkafka's default, a CRC32 of the key, would move it).
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "enable.gapless.guarantee": True,
        "message.timeout.ms": 0,  # never expire: retried, in order, until Kafka is back
        "linger.ms": 0,  # a batch is handed over whole: nothing to wait for
        "batch.size": 256 * 1024,
        "request.timeout.ms": 10_000,
        "retry.backoff.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1_000,
    }


class Publisher:
    """Publishes batches of (key, value) to `topic` and waits for their acks."""

    def __init__(self, settings: Settings, topic: str, client_id: str) -> None:
        self.settings = settings
        self.topic = topic
        self.client_id = client_id
        self._producer: Producer | None = None

    def publish(self, records: Sequence[tuple[bytes, bytes]], stop: threading.Event) -> None:
        """Return once Kafka acknowledged every record; retry with backoff until then."""
        backoff = Backoff(cap_s=MAX_BACKOFF_S)
        while True:
            try:
                self._publish_once(records, stop)
                return
            except (KafkaException, PublishFailed) as exc:
                self.close(force=True)
                log.warning(
                    "event=publish_failed topic=%s count=%d detail=%r retry_in=%.1fs",
                    self.topic,
                    len(records),
                    str(exc)[:200],
                    backoff.delay,
                )
            if stop.wait(backoff.next()):
                raise Stopped()

    def connect(self, stop: threading.Event) -> Producer:
        """The producer, created (and the topic's metadata fetched) if need be."""
        backoff = Backoff(cap_s=MAX_BACKOFF_S)
        while self._producer is None:
            config = producer_config(self.settings, self.client_id)
            producer = Producer(config, logger=librdkafka_logger("producer"))
            try:
                metadata = producer.list_topics(self.topic, timeout=5)
                found = metadata.topics.get(self.topic)
                if found is None or found.error is not None:
                    raise KafkaException(found.error if found else KafkaError._UNKNOWN_TOPIC)
                self._producer = producer
                break
            except KafkaException as exc:
                _drop(producer)
                log.warning(
                    "event=kafka_unavailable topic=%s error=%s retry_in=%.1fs",
                    self.topic,
                    exc,
                    backoff.delay,
                )
            if stop.wait(backoff.next()):
                raise Stopped()
        return self._producer

    def close(self, force: bool = False) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        if force:
            _drop(producer)
        else:
            producer.flush(5)

    def _publish_once(self, records: Sequence[tuple[bytes, bytes]], stop: threading.Event) -> None:
        producer = self.connect(stop)
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _: Any) -> None:
            if error is not None:
                failures.append(error)

        # One call for the batch: librdkafka wakes its threads once per call, not once
        # per record (half the CPU per record, docs/performance.md). A record it could
        # not queue fails the batch, which a new producer then sends again whole.
        queued = [{"key": key, "value": value} for key, value in records]
        try:
            producer.produce_batch(self.topic, queued, on_delivery=delivered)
        except BufferError as exc:  # the local queue is full (Kafka away a long while)
            raise PublishFailed("the producer's queue is full") from exc
        refused = next((m["_error"] for m in queued if "_error" in m), None)
        if refused is not None:
            raise PublishFailed(str(refused))
        if failures:
            raise PublishFailed(failures[0].str())
        started = logged = time.monotonic()
        while True:
            pending = producer.flush(WAIT_SLICE_S)
            if failures:
                raise PublishFailed(failures[0].str())
            if not pending:
                return
            if stop.is_set():
                self.close(force=True)
                raise Stopped()
            now = time.monotonic()
            if now - logged >= KAFKA_WAIT_LOG_S:
                logged = now
                log.warning(
                    "event=waiting_for_kafka topic=%s pending=%d waited_s=%.0f",
                    self.topic,
                    pending,
                    now - started,
                )


def _drop(producer: Producer) -> None:
    """Forget what the producer still holds, so nothing more of it lands."""
    producer.purge(in_queue=True, in_flight=True, blocking=False)
    producer.flush(0)
