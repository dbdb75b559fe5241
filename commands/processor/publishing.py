"""The processor publishes what it stored: each saved batch's events to `parley.events`.

Once a batch is saved, its events go to the producer (`saved`) with the stored, sealed
state the relay used to read back: the same envelope, the same `event_id`, keyed by
chat. The producer is the shared idempotent configuration (`infra.producer`), ordered
per partition while it retries, so a chat's events reach the log in the order they
were stored.

What Kafka has not acknowledged yet is held here per command partition, and the
partition's publish mark (`infra.publish_marks`) never passes it: the save sets the mark
in its own statement, `sync_marks` moves it forward once Kafka acknowledged. A
processor that gets partitions (`claim`) fences their previous owner and publishes
again what that owner may not have (the store's events of those partitions' chats from
the marks on) before it decides anything of theirs. One that loses partitions
(`release`) waits a few seconds for their acknowledgements and leaves the marks at what
is still missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
from confluent_kafka import KafkaError, Producer
from eventsourcing.persistence import Recording
from kafka.partitioner.default import murmur2

from infra import publish_marks
from infra.event_store import EVENTS_TABLE, ChatStore, Writer
from infra.log_envelope import encode_event, encode_fields
from infra.producer import librdkafka_logger, producer_config
from infra.retry import Backoff
from infra.settings import Settings
from infra.topics import EVENTS

log = logging.getLogger("parley.processor")

RELEASE_WAIT_S = 5.0
"""How long a processor losing partitions waits for Kafka to take their events."""
RECOVERY_PAGE = 1_000
WAIT_SLICE_S = 0.1


def command_partition(chat_id: UUID, partitions: int) -> int:
    """The `parley.commands` partition of a chat: Kafka's murmur2 of its key, as the
    gateways' producer places the chat's commands."""
    return int(murmur2(str(chat_id).encode()) & 0x7FFFFFFF) % partitions


class EventPublisher:
    """Publishes saved events and keeps the publish marks true (module docstring)."""

    def __init__(self, settings: Settings, store: ChatStore, client_id: str, owner: str) -> None:
        self.settings = settings
        self.store = store
        self.topic = settings.topic(EVENTS)
        self.client_id = client_id
        self.owner = owner
        self._producer: Producer | None = None
        # command partition -> position -> (key, value), in position order
        self._pending: dict[int, dict[int, tuple[bytes, bytes]]] = defaultdict(dict)
        self._marked: dict[int, int | None] = {}  # each owned partition's mark, as stored
        self._failed: KafkaError | None = None
        self._generation = 0  # of the producer: reports of a dropped one are not failures

    def writer(self, partitions: Iterable[int]) -> Writer:
        """What the save checks: this processor still owns `partitions`."""
        return Writer(self.owner, frozenset(partitions))

    # Publishing.

    def saved(
        self, recordings: Sequence[Recording[UUID]], partition_of: Mapping[UUID, int]
    ) -> None:
        """Hand a saved batch's events to the producer, in stored order."""
        if not recordings:
            return
        ordered = sorted(recordings, key=lambda r: r.notification.id)
        first = ordered[0].notification.id
        # The envelope from the domain event and the state the mapper stored for it
        # (sealed): the relay's envelope, without reading the stored event back.
        stored_fields = self.store.seal.stored_fields
        batch: list[dict[str, Any]] = []
        for recording in ordered:
            event = recording.domain_event
            position = recording.notification.id
            partition = partition_of[event.originator_id]
            if self._marked.get(partition) is None:
                self._marked[partition] = first  # what the save's statement stored
            key, value = encode_fields(type(event), stored_fields(event), position)
            self._pending[partition][position] = (key, value)
            acked = partial(self._acked, self._generation, partition, position)
            batch.append({"key": key, "value": value, "callback": acked})
        try:  # one call: librdkafka wakes its threads once, not once per event
            self._connect().produce_batch(self.topic, batch)
        except BufferError:
            self._failed = self._failed or KafkaError(KafkaError._QUEUE_FULL)
        if any("_error" in record for record in batch):
            self._failed = self._failed or KafkaError(KafkaError._QUEUE_FULL)
        self.serve()

    def serve(self) -> None:
        """Deliver acknowledgements; after a failed record, send everything again."""
        producer = self._connect()
        producer.poll(0)
        if self._failed is not None:
            self._restart()

    def _connect(self) -> Producer:
        if self._producer is None:
            config = producer_config(self.settings, self.client_id)
            config["linger.ms"] = self.settings.processor_publish_linger_ms
            self._producer = Producer(config, logger=librdkafka_logger("processor"))
        return self._producer

    def _produce(self, partition: int, position: int, key: bytes, value: bytes) -> None:
        producer = self._connect()
        delivered = partial(self._acked, self._generation, partition, position)
        while True:
            try:
                producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: let some of it go out
                producer.poll(0.05)

    def _acked(
        self, generation: int, partition: int, position: int, error: KafkaError | None, _: Any
    ) -> None:
        if error is not None:
            if generation == self._generation:
                self._failed = self._failed or error
            return
        self._pending[partition].pop(position, None)

    def _restart(self) -> None:
        """A record failed (a fatal producer error): nothing after it may land first, so
        the producer is dropped and everything unacknowledged is sent again, in order."""
        error, self._failed = self._failed, None
        log.warning("event=publish_failed error=%s pending=%d", error, self.pending())
        producer, self._producer = self._producer, None
        self._generation += 1
        if producer is not None:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(0)
        everything = sorted(
            (position, partition, record)
            for partition, records in self._pending.items()
            for position, record in records.items()
        )
        for position, partition, (key, value) in everything:
            self._produce(partition, position, key, value)

    def pending(self, partitions: Collection[int] | None = None) -> int:
        """Events saved and not yet acknowledged by Kafka (of `partitions`, or all)."""
        chosen = self._pending.keys() if partitions is None else partitions
        return sum(len(self._pending.get(p, ())) for p in chosen)

    def wait(self, partitions: Collection[int], timeout_s: float, stop: threading.Event) -> bool:
        """Until Kafka acknowledged every event of `partitions` (True), or the time is up."""
        deadline = time.monotonic() + timeout_s
        while self.pending(partitions):
            if stop.is_set() or time.monotonic() >= deadline:
                return False
            self._connect().poll(WAIT_SLICE_S)
            if self._failed is not None:
                self._restart()
        return True

    # The marks.

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection of the store's pool (the marks live beside the events)."""
        recorder: Any = self.store.recorder
        connection: AbstractContextManager[psycopg.Connection[Any]] = (
            recorder.datastore.get_connection()
        )
        return connection

    def sync_marks(self) -> None:
        """Move the owned partitions' marks up to what Kafka has not acknowledged yet."""
        moved: dict[int, int | None] = {}
        for partition, mark in self._marked.items():
            if mark is None:
                continue
            low = next(iter(self._pending.get(partition, {})), None)
            if low != mark:
                moved[partition] = low
        if not moved:
            return
        with self._connection() as conn:
            publish_marks.move(conn, self.owner, moved)
        self._marked.update(moved)

    def claim(self, partitions: Collection[int], count: int, stop: threading.Event) -> int:
        """Own `partitions` (of `count`) and publish what their last owner may not have;
        return how many events that was. Retries while Kafka or the database is away."""
        backoff = Backoff()
        while True:
            try:
                return self._claim(partitions, count, stop)
            except Exception as exc:  # the database or Kafka away: nothing decided yet
                if stop.is_set():
                    raise
                log.warning(
                    "event=claim_failed error=%s detail=%r retry_in=%.1fs",
                    type(exc).__name__,
                    str(exc)[:200],
                    backoff.delay,
                )
                stop.wait(backoff.next())

    def _claim(self, partitions: Collection[int], count: int, stop: threading.Event) -> int:
        parts = set(partitions)
        with self._connection() as conn:
            initial = publish_marks.initial_mark(conn, EVENTS_TABLE, self.settings.relay_name)
            marks = publish_marks.claim(conn, self.owner, parts, initial)
        starts = [mark for mark in marks.values() if mark is not None]
        republished = 0
        if starts:
            start = min(starts)
            while True:
                page = self.store.recorder.select_notifications(
                    start=start, limit=RECOVERY_PAGE, inclusive_of_start=True
                )
                for stored in page:
                    partition = command_partition(UUID(str(stored.originator_id)), count)
                    if partition not in parts:
                        continue
                    event = self.store.mapper.to_domain_event(stored)
                    key, value = encode_event(event, stored.id)
                    self._pending[partition][stored.id] = (key, value)
                    self._produce(partition, stored.id, key, value)
                    republished += 1
                if len(page) < RECOVERY_PAGE:
                    break
                start = page[-1].id + 1
            while not self.wait(parts, RELEASE_WAIT_S, stop):
                if stop.is_set():
                    raise RuntimeError("stopped before the partitions' tail was published")
                log.warning("event=waiting_for_kafka pending=%d", self.pending(parts))
        with self._connection() as conn:
            publish_marks.move(conn, self.owner, {p: None for p in parts})
        for partition in parts:
            self._marked[partition] = None
        log.info(
            "event=partitions_claimed partitions=%s republished=%d", sorted(parts), republished
        )
        return republished

    def release(self, partitions: Collection[int]) -> None:
        """Give up `partitions`: wait a little for their events, leave the marks true."""
        parts = set(partitions)
        if not self.wait(parts, RELEASE_WAIT_S, threading.Event()):
            log.warning("event=released_unpublished pending=%d", self.pending(parts))
        try:
            self.sync_marks()
        except Exception as exc:  # the marks stay lower: the next owner publishes more
            log.warning("event=marks_not_moved error=%s", type(exc).__name__)
        for partition in parts:
            self._marked.pop(partition, None)
            if not self._pending.get(partition):
                self._pending.pop(partition, None)

    def close(self) -> None:
        """Wait a little for what is unacknowledged, record the marks, drop the producer."""
        self.release(list(self._marked))
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(0)
