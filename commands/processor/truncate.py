"""The commands topic emptied behind the processors: a decided command leaves Kafka.

A `send` command carries its body in plaintext, while the event store and
`parley.events` keep content sealed under a key that a delete erases (docs/replay.md).
So every `PARLEY_COMMANDS_TRUNCATE_INTERVAL_S` each processor deletes, in the partitions
of the commands topic it owns, the records before its group's committed offset
(Kafka's DeleteRecords moves the partition's start forward; nothing below it can be
fetched again). The group commits an offset only once every command before it is
decided, stored and answered (`consumer.py`), so what goes was decided, and what was
not committed stays to be redelivered after a crash.

Only forward, only up to the committed offset, only partitions whose offset moved, and
only the partitions this processor owns (the group's description names them by the
consumer's `client.id`): with several processors each record is deleted, and counted,
by one. A broker that is away is logged once per outage and retried with backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka import admin as kafka_admin
from confluent_kafka.admin import AdminClient

from commands.processor import metrics
from infra.retry import Backoff
from infra.settings import Settings

log = logging.getLogger("parley.processor")

REQUEST_TIMEOUT_S = 5.0
"""One admin request's longest wait: a broker that is away fails a pass after this."""
OUTAGE_CAP_S = 60.0
"""While Kafka is away, passes are retried from the interval, doubling up to this."""


def admin_config(settings: Settings, client_id: str) -> dict[str, Any]:
    """The truncator's admin client."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": f"{client_id}-truncate",
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 5_000,
    }


class CommandTruncator:
    """Deletes the decided commands of the partitions that `member` (a consumer's
    `client.id`) owns in `group`, up to the group's committed offsets."""

    def __init__(self, admin: AdminClient, topic: str, group: str, member: str) -> None:
        self.admin = admin
        self.topic = topic
        self.group = group
        self.member = member
        self.truncated_to: dict[int, int] = {}
        """partition -> the committed offset this processor deleted up to (or found
        the partition's start past)."""

    def truncate(self) -> int:
        """One pass; the number of commands deleted. Raises `KafkaException` (or
        `TimeoutError`) when Kafka cannot be asked or refuses a partition."""
        try:
            owned = self._owned()
            due = {
                partition: offset
                for partition, offset in self._committed(owned).items()
                if offset > self.truncated_to.get(partition, -1)
            }
            if not due:
                return 0
            starts = self._starts(due)
            cuts = {p: offset for p, offset in due.items() if offset > starts[p]}
            self.truncated_to.update({p: o for p, o in due.items() if p not in cuts})
            return self._delete(cuts, starts) if cuts else 0
        finally:
            self.admin.poll(0)  # hands librdkafka's queued log lines to the logger

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """A pass every `interval_s` until `stop` is set; failures back off."""
        backoff = Backoff(first_s=interval_s, cap_s=max(interval_s, OUTAGE_CAP_S))
        failures = 0
        wait = interval_s
        while not stop.wait(wait):
            try:
                self.truncate()
            except Exception as exc:
                metrics.TRUNCATE_ERRORS.inc()
                if not failures:
                    expected = isinstance(exc, KafkaException | TimeoutError)
                    log.warning(
                        "event=commands_truncate_failed error=%s detail=%s",
                        type(exc).__name__,
                        exc,
                        exc_info=not expected,
                    )
                failures += 1
                wait = backoff.next()
                continue
            if failures:
                log.info("event=commands_truncate_resumed failed_passes=%d", failures)
                failures = 0
                backoff.reset()
            wait = interval_s

    def _owned(self) -> list[int]:
        futures = self.admin.describe_consumer_groups(
            [self.group], request_timeout=REQUEST_TIMEOUT_S
        )
        group = futures[self.group].result(timeout=REQUEST_TIMEOUT_S + 1)
        return sorted(
            tp.partition
            for member in group.members
            if member.client_id == self.member and member.assignment is not None
            for tp in member.assignment.topic_partitions
            if tp.topic == self.topic
        )

    def _committed(self, partitions: list[int]) -> dict[int, int]:
        """partition -> the group's committed offset, for those that have one."""
        if not partitions:
            return {}
        asked = [TopicPartition(self.topic, p) for p in partitions]
        futures = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, asked)], request_timeout=REQUEST_TIMEOUT_S
        )
        answer = futures[self.group].result(timeout=REQUEST_TIMEOUT_S + 1)
        return {
            tp.partition: tp.offset
            for tp in answer.topic_partitions or []
            if tp.error is None and tp.offset >= 0
        }

    def _starts(self, partitions: dict[int, int]) -> dict[int, int]:
        """partition -> its first offset still kept (deleted up to, or by retention)."""
        earliest = kafka_admin.OffsetSpec.earliest()  # type: ignore[attr-defined,no-untyped-call]
        futures = self.admin.list_offsets(
            {TopicPartition(self.topic, p): earliest for p in partitions},
            request_timeout=REQUEST_TIMEOUT_S,
        )
        return {
            tp.partition: future.result(timeout=REQUEST_TIMEOUT_S + 1).offset
            for tp, future in futures.items()
        }

    def _delete(self, cuts: dict[int, int], starts: dict[int, int]) -> int:
        futures = self.admin.delete_records(
            [TopicPartition(self.topic, p, offset) for p, offset in cuts.items()],
            request_timeout=REQUEST_TIMEOUT_S,
            operation_timeout=REQUEST_TIMEOUT_S,
        )
        deleted = 0
        failed: BaseException | None = None
        for tp, future in futures.items():
            try:
                start = future.result(timeout=REQUEST_TIMEOUT_S + 1).low_watermark
            except (KafkaException, TimeoutError) as exc:
                failed = exc  # the other partitions' deletes stand; this one is retried
                continue
            deleted += max(0, start - starts[tp.partition])
            self.truncated_to[tp.partition] = cuts[tp.partition]
        metrics.TRUNCATED.inc(amount=deleted)
        if failed is not None:
            raise failed
        return deleted


@contextmanager
def truncating(truncator: CommandTruncator | None, interval_s: float) -> Iterator[None]:
    """`truncator.run` in a thread of its own while the block runs (none if None)."""
    if truncator is None:
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=truncator.run, args=(stop, interval_s), name="commands-truncate", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)  # a pass stuck on a broker away is not waited for
