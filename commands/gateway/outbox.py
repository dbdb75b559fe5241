"""Records to one Kafka topic, batched per partition without blocking the caller.

`AIOKafkaProducer.send` costs a metadata wait, a partitioner call and a future per
record, and makes its caller wait whenever the partition's batch is in flight (the
idempotent producer keeps one per partition): a gateway's read loop then stalls for a
Kafka round trip. `Outbox.append` only queues the record; one task per partition
drains that partition's queue in order into batches (`create_batch`/`send_batch`), so
records that arrive while a batch is in flight go out together in the next one.
Order per partition is call order; the partition is the producer's default for the
key (murmur2, as every other producer of the topic computes it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

PARTITION_CACHE = 100_000
"""Keys whose partition is remembered (chat ids: murmur2 in Python is not free)."""
MAX_RECORD_BYTES = 1_000_000
"""Larger records are refused before they reach a batch: one the broker refuses would
break the idempotent producer's sequence for every batch after it (as `send` checks
against `max_request_size`, 1 MiB by default)."""


Record = tuple[bytes, bytes, asyncio.Future[None]]
"""(key, value, set once Kafka has it)"""


class Outbox:
    """Queue records for `topic`; each `append` returns a future set once Kafka has it."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}
        self._queues: dict[int, deque[Record]] = {}
        self._drainers: dict[int, asyncio.Task[None]] = {}
        # Until the topic's partitions are known, records wait here, in order.
        self._unplaced: deque[Record] = deque()
        self._placer: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Wait for what was appended to be handed over (then stop the producer)."""
        while self._drainers or self._placer is not None:
            tasks = [*self._drainers.values(), *([self._placer] if self._placer else [])]
            await asyncio.gather(*tasks, return_exceptions=True)

    def append(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(key) + len(value) > MAX_RECORD_BYTES:
            done.set_exception(MessageSizeTooLargeError())
            return done
        if not self._partitions or self._unplaced:
            self._unplaced.append((key, value, done))
            if self._placer is None:
                self._placer = asyncio.create_task(self._place(), name="outbox-place")
        else:
            self._queue((key, value, done))
        return done

    def _queue(self, record: Record) -> None:
        key = record[0]
        partition = self._partition_of.get(key)
        if partition is None:
            partition = _DEFAULT(key, self._partitions, self._partitions)
            if len(self._partition_of) >= PARTITION_CACHE:
                self._partition_of.clear()
            self._partition_of[key] = partition
        self._queues.setdefault(partition, deque()).append(record)
        if partition not in self._drainers:
            self._drainers[partition] = asyncio.create_task(
                self._drain(partition), name=f"outbox-{partition}"
            )

    async def _place(self) -> None:
        """Learn the topic's partitions, then queue the records that waited, in order;
        if the topic cannot be found, they fail (the next record tries again)."""
        try:
            self._partitions = sorted(await self._producer.partitions_for(self._topic))
        except Exception as exc:
            failed = list(self._unplaced)
            self._unplaced.clear()
            _settle([done for _, _, done in failed], exc)
        else:
            while self._unplaced:
                self._queue(self._unplaced.popleft())
        finally:
            self._placer = None

    async def _drain(self, partition: int) -> None:
        queue = self._queues[partition]
        try:
            while queue:
                batch = self._producer.create_batch()
                waiting: list[asyncio.Future[None]] = []
                while queue:
                    key, value, done = queue[0]
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        if not waiting:  # alone it does not fit a batch
                            queue.popleft()
                            done.set_exception(MessageSizeTooLargeError())
                            continue
                        break  # the batch is full: send it, the rest go in the next
                    queue.popleft()
                    waiting.append(done)
                if waiting:
                    await self._send(batch, partition, waiting)
        finally:
            del self._drainers[partition]

    async def _send(self, batch: Any, partition: int, waiting: list[asyncio.Future[None]]) -> None:
        try:
            sent = await self._producer.send_batch(batch, self._topic, partition=partition)
        except Exception as exc:  # every waiter hears of it
            _settle(waiting, exc)
            return

        def acked(future: asyncio.Future[Any]) -> None:
            error = None if future.cancelled() else future.exception()
            _settle(waiting, error or (asyncio.CancelledError() if future.cancelled() else None))

        sent.add_done_callback(acked)


def _settle(waiting: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for done in waiting:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
    if error is not None:
        for done in waiting:  # retrieved here: the callers that wait on them see it too
            with contextlib.suppress(BaseException):
                done.exception()


_DEFAULT = DefaultPartitioner()
