"""The commands topic emptied behind the processor: a decided command leaves Kafka.

A `send` command carries its body in plaintext, while the event store and
`parley.events` keep content sealed under a key that a delete erases (docs/replay.md).
So every `PARLEY_COMMANDS_TRUNCATE_INTERVAL_S` each processor deletes the records of
the commands topic before the offsets its own consumer committed (Kafka's
DeleteRecords moves a partition's start forward; nothing below it can be fetched
again). The consumer commits an offset only once every command before it is decided,
stored and answered (`consumer.py`), and hands over only what the group accepted
(`committed`, its commit callback): what goes was decided, and what was not committed
stays to be redelivered after a crash. A partition the processor has lost since is
still cut up to what it committed there, never further: its next owner starts there.

Only forward, and only partitions whose offset moved: a pass with nothing to delete
sends nothing. The admin client is kafka-python's, made on the first pass that needs it
and made again after a failed one, all in the truncator's thread (librdkafka's admin
client once aborted a processor on an assertion as Kafka came back: docs/log.md). A
broker that is away is logged once per outage and retried with backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from kafka import KafkaAdminClient
from kafka import TopicPartition as AdminPartition
from kafka.errors import KafkaError as AdminError
from kafka.net.compat import KafkaNetClient
from kafka.protocol.consumer import OffsetSpec

from commands.processor import metrics
from infra.retry import Backoff
from infra.settings import Settings

log = logging.getLogger("parley.processor")

REQUEST_TIMEOUT_S = 5.0
"""One admin request's longest wait (and the client's first connection's): a broker
that is away fails a pass after this."""
OUTAGE_CAP_S = 60.0
"""While Kafka is away, passes are retried from the interval, doubling up to this."""
LAST_PASS_S = 1.0
"""How long a stopping processor waits for the truncator's last pass (the commands of
its final commit), at most: a broker away does not hold up the shutdown."""


def open_admin(settings: Settings, client_id: str) -> KafkaAdminClient:
    """The truncator's admin client; it connects before it returns (or raises)."""
    made: list[KafkaNetClient] = []

    def network(**config: Any) -> KafkaNetClient:
        made.append(KafkaNetClient(**config))
        return made[-1]

    timeout_ms = int(REQUEST_TIMEOUT_S * 1000)
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"{client_id}-truncate",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            reconnect_backoff_ms=100,
            reconnect_backoff_max_ms=5_000,
            kafka_client=network,
        )
    except BaseException:
        # The constructor starts its IO thread before it connects, and a client that
        # cannot connect is never returned to be closed: without this, each pass
        # while Kafka is away would leave a thread behind.
        for client in made:
            client.close()
        raise


class CommandTruncator:
    """Deletes the commands of `topic` before the offsets handed to `committed`."""

    def __init__(self, open_admin: Callable[[], KafkaAdminClient], topic: str) -> None:
        self.open_admin = open_admin
        self.topic = topic
        self.admin: KafkaAdminClient | None = None
        self.truncated_to: dict[int, int] = {}
        """partition -> the committed offset deleted up to (or found the start past)."""
        self._committed: dict[int, int] = {}
        self._lock = threading.Lock()

    def committed(self, error: KafkaError | None, partitions: list[TopicPartition] | None) -> None:
        """The consumer's commit callback (librdkafka's `on_commit`, in the consumer's
        thread): the offsets the group accepted become due. A commit that failed, or a
        partition of it that did, hands nothing over."""
        if error is not None or not partitions:
            return
        accepted = [
            (tp.partition, tp.offset)
            for tp in partitions
            if tp.topic == self.topic and tp.error is None and tp.offset >= 0
        ]
        with self._lock:
            for partition, offset in accepted:
                if offset > self._committed.get(partition, -1):
                    self._committed[partition] = offset

    def due(self) -> dict[int, int]:
        """partition -> an offset committed there that the topic is not yet cut to."""
        with self._lock:
            return {p: o for p, o in self._committed.items() if o > self.truncated_to.get(p, -1)}

    def truncate(self) -> int:
        """One pass; the number of commands deleted. Raises kafka-python's `KafkaError`
        (or `OSError`) when Kafka cannot be asked or refuses a partition."""
        due = self.due()
        if not due:
            return 0
        try:
            if self.admin is None:
                self.admin = self.open_admin()
            starts = self._starts(self.admin, due)
            cuts = {p: offset for p, offset in due.items() if offset > starts[p]}
            self.truncated_to.update({p: o for p, o in due.items() if p not in cuts})
            return self._delete(self.admin, cuts, starts) if cuts else 0
        except BaseException:
            self.close()  # the next pass starts afresh: new connections, new metadata
            raise

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """A pass every `interval_s` until `stop` is set, and a last one then; failures
        back off."""
        backoff = Backoff(first_s=interval_s, cap_s=max(interval_s, OUTAGE_CAP_S))
        failures = 0
        wait = interval_s
        try:
            while True:
                stopping = stop.wait(wait)
                try:
                    self.truncate()
                except Exception as exc:
                    metrics.TRUNCATE_ERRORS.inc()
                    if not failures:
                        expected = isinstance(exc, AdminError | OSError)
                        log.warning(
                            "event=commands_truncate_failed error=%s detail=%s",
                            type(exc).__name__,
                            exc,
                            exc_info=not expected,
                        )
                    failures += 1
                    wait = backoff.next()
                else:
                    if failures:
                        log.info("event=commands_truncate_resumed failed_passes=%d", failures)
                        failures = 0
                        backoff.reset()
                    wait = interval_s
                if stopping:
                    return
        finally:
            self.close()

    def close(self) -> None:
        admin, self.admin = self.admin, None
        if admin is not None:
            with suppress(Exception):
                admin.close()

    def _starts(self, admin: KafkaAdminClient, due: dict[int, int]) -> dict[int, int]:
        """partition -> its first offset still kept (deleted up to, or by retention)."""
        found = admin.list_partition_offsets(
            {AdminPartition(self.topic, p): OffsetSpec.EARLIEST for p in due},
            timeout_ms=REQUEST_TIMEOUT_S * 1000,
        )
        return {tp.partition: int(start.offset) for tp, start in found.items()}

    def _delete(self, admin: KafkaAdminClient, cuts: dict[int, int], starts: dict[int, int]) -> int:
        # Kafka applies each partition's cut on its own; if one is refused, this raises
        # for all of them, and the next pass finds the others' starts past their cuts.
        done = admin.delete_records(
            {AdminPartition(self.topic, p): offset for p, offset in cuts.items()},
            timeout_ms=REQUEST_TIMEOUT_S * 1000,
        )
        deleted = 0
        for tp, result in done.items():
            deleted += max(0, int(result["low_watermark"]) - starts[tp.partition])
            self.truncated_to[tp.partition] = cuts[tp.partition]
        metrics.TRUNCATED.inc(amount=deleted)
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
        thread.join(timeout=LAST_PASS_S)  # a pass stuck on a broker away is not waited for
