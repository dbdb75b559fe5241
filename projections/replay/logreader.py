"""Read `parley.events` for a replay: a plain consumer, every partition assigned by hand.

No consumer group, no offset commits: a replay's progress lives in its shadow
checkpoints, and the live workers' group is never touched. `LogReader.read(targets)`
yields batches of decoded records up to (and never past) a target offset per partition,
so a replay can stop exactly where the live projections are. Each batch comes with its
sealed message content opened (one key lookup; an erased message reads as a tombstone:
`projections.opening`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from infra.log_envelope import EnvelopeError, decode_envelope
from infra.message_keys import MessageKeys, PgMessageKeys
from infra.settings import Settings
from infra.topics import EVENTS
from projections.opening import open_with
from projections.projector import Record
from projections.replay.errors import LogMissing
from projections.upcasting import upcast_envelope

log = logging.getLogger("parley.replay")

POLL_MS = 200


@dataclass
class ReadStats:
    records: int = 0  # records taken from the log, applied or not
    bad: int = 0  # records that are not envelopes (logged and skipped, as live)


class LogReader:
    """A manually assigned consumer over every partition of the events topic."""

    def __init__(
        self, settings: Settings, topic: str | None = None, keys: MessageKeys | None = None
    ) -> None:
        self.topic = topic or settings.topic(EVENTS)
        self.keys = keys or PgMessageKeys(
            lambda: psycopg.connect(settings.pg_conninfo, autocommit=True)
        )
        self.consumer: Any = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="parley-replay",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.replay_batch_max,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        found = self.consumer.partitions_for_topic(self.topic)
        if not found:
            self.consumer.close()
            raise LogMissing(self.topic)
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
        self.consumer.assign(self.partitions)
        self.position: dict[int, int] = {}  # next offset to hand out, per partition
        self._buffer: dict[int, deque[Any]] = {tp.partition: deque() for tp in self.partitions}
        self.stats = ReadStats()

    def close(self) -> None:
        self.consumer.close()

    def log_end(self) -> dict[int, int]:
        """The offset the next record of each partition will get."""
        ends = self.consumer.end_offsets(self.partitions)
        return {tp.partition: int(end) for tp, end in ends.items()}

    def beginnings(self) -> dict[int, int]:
        starts = self.consumer.beginning_offsets(self.partitions)
        return {tp.partition: int(start) for tp, start in starts.items()}

    def start_at(self, offset: int | None = None, moment: datetime | None = None) -> dict[int, int]:
        """Seek every partition to the start (an offset, the first record at/after a time,
        or the beginning); return where each starts."""
        starts = self.beginnings()
        ends = self.log_end()
        if moment is not None:
            found = self.consumer.offsets_for_times(
                {tp: int(moment.timestamp() * 1000) for tp in self.partitions}
            )
            for tp, hit in found.items():
                starts[tp.partition] = ends[tp.partition] if hit is None else int(hit.offset)
        elif offset is not None:
            starts = {p: min(max(offset, b), ends[p]) for p, b in starts.items()}
        for tp in self.partitions:
            self.consumer.seek(tp, starts[tp.partition])
            self.position[tp.partition] = starts[tp.partition]
        return dict(starts)

    def remaining(self, targets: Mapping[int, int]) -> int:
        """Records still to read to reach `targets` (the next offset not to read)."""
        return sum(max(0, targets[p] - self.position[p]) for p in self.position)

    def read(self, targets: Mapping[int, int], batch_max: int) -> Iterator[list[Record]]:
        """Batches of records, in offset order per partition, up to offset `targets[p]`
        (exclusive) for each partition."""
        while self.remaining(targets) > 0:
            wanted = [
                tp for tp in self.partitions if self.position[tp.partition] < targets[tp.partition]
            ]
            batch: list[Record] = []
            for tp in wanted:
                self._take(tp.partition, targets[tp.partition], batch, batch_max)
            if len(batch) < batch_max:
                self._fetch(wanted)
                for tp in wanted:
                    self._take(tp.partition, targets[tp.partition], batch, batch_max)
            if batch:
                yield open_with(self.keys, batch)

    def _fetch(self, wanted: list[TopicPartition]) -> None:
        self.consumer.resume(*wanted)
        idle = [tp for tp in self.partitions if tp not in wanted]
        if idle:
            self.consumer.pause(*idle)
        for tp, messages in self.consumer.poll(timeout_ms=POLL_MS).items():
            self._buffer[tp.partition].extend(messages)
        for tp in wanted:  # skip offsets that hold no record (e.g. transaction markers)
            if not self._buffer[tp.partition]:
                fetched = int(self.consumer.position(tp))
                self.position[tp.partition] = max(self.position[tp.partition], fetched)

    def _take(self, partition: int, target: int, batch: list[Record], batch_max: int) -> None:
        buffer = self._buffer[partition]
        while buffer and len(batch) < batch_max and buffer[0].offset < target:
            message = buffer.popleft()
            self.position[partition] = message.offset + 1
            self.stats.records += 1
            try:
                envelope = upcast_envelope(decode_envelope(message.value))
            except EnvelopeError as exc:
                self.stats.bad += 1
                log.error(
                    "event=bad_envelope partition=%d offset=%d error=%s",
                    partition,
                    message.offset,
                    exc,
                )
                continue
            batch.append(Record(partition, message.offset, envelope))
