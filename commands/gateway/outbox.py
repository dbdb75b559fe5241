"""Records to one Kafka topic through librdkafka, without blocking the event loop.

`Outbox.append` queues the record for librdkafka's producer (`infra.producer`'s shared
configuration: idempotent, acks=all, murmur2 partitions, ordered per partition while it
retries) and returns a future set once Kafka has the record. The records appended in
one turn of the event loop are handed over together, by one `produce_batch` call at the
end of the turn: librdkafka wakes its threads once per call, so a call per record cost
twice the CPU (docs/performance.md, "The hot path, third step"). librdkafka batches in its
own threads, per partition and across partitions into one request per
`PARLEY_GATEWAY_LINGER_MS`; a thread of the outbox waits for its delivery reports and
settles their futures on the event loop, one wake-up of the loop per report batch. The
gateway's Kafka client was aiokafka, which encoded every batch in Python on the event
loop (docs/performance.md, "The gateway's producer").

Order per key is call order. A record Kafka cannot take now is retried inside the
producer until Kafka is back (it never expires there); the gateway bounds its own wait
(`CommandBus`), and a command that lands after its sender gave up is answered to no
one and recognised when resent (commands are idempotent). A fatal producer error fails
what it held and the next record starts a new producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from infra.producer import librdkafka_logger, producer_config
from infra.settings import Settings

log = logging.getLogger("parley.outbox")

MAX_RECORD_BYTES = 1_000_000
"""Larger records are refused before they reach the producer (the broker's default
limit is 1 MiB: one it refused would fail, and take the client's time, for nothing)."""
POLL_S = 0.2
"""How long the report thread waits for a delivery report before it looks at `stop`."""


class RecordTooLarge(Exception):
    """The record is over `MAX_RECORD_BYTES`."""


class Unavailable(Exception):
    """The producer could not take or deliver the record."""


Report = tuple[asyncio.Future[None], KafkaError | None]


class Outbox:
    """Queue records for `topic`; each `append` returns a future set once Kafka has it."""

    def __init__(self, settings: Settings, topic: str, client_id: str) -> None:
        self._config = producer_config(settings, client_id)
        self._config["linger.ms"] = settings.gateway_linger_ms
        self._topic = topic
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[Report] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._retired: list[Producer] = []  # failed for good: their last reports to collect
        # Appended in this turn of the loop, handed over at its end: the records (as
        # `produce_batch` takes them) and their futures.
        self._turn: list[dict[str, Any]] = []
        self._turn_done: list[asyncio.Future[None]] = []

    def start(self) -> None:
        """Begin on the running loop: the producer and its report thread."""
        self._loop = asyncio.get_running_loop()
        self._producer = self._new_producer()
        self._thread = threading.Thread(target=self._wait_for_reports, name="outbox-reports")
        self._thread.daemon = True
        self._thread.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Wait (up to `timeout_s`) for what was appended to reach Kafka, then stop."""
        producer = self._producer
        if producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, producer.flush, timeout_s)
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._settle()

    def append(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        assert self._loop is not None, "start() the outbox first"
        done: asyncio.Future[None] = self._loop.create_future()
        if len(key) + len(value) > MAX_RECORD_BYTES:
            done.set_exception(RecordTooLarge())
            return done
        self._turn.append({"key": key, "value": value, "callback": partial(self._delivered, done)})
        self._turn_done.append(done)
        if len(self._turn) == 1:
            self._loop.call_soon(self._hand_over)
        return done

    def _hand_over(self) -> None:
        """The turn's records to the producer, in order, in one call."""
        records, futures = self._turn, self._turn_done
        self._turn, self._turn_done = [], []
        if self._producer is None:  # the last one failed for good
            self._producer = self._new_producer()
            log.info("event=producer_replaced")
        try:
            self._producer.produce_batch(self._topic, records)
        except BufferError:  # librdkafka's queue is full: Kafka has been away a while
            _fail(futures, "the producer's queue is full")
            return
        except KafkaException as exc:
            _fail(futures, str(exc))
            return
        for record, done in zip(records, futures, strict=True):
            error = record.get("_error")  # not queued: no delivery report will come
            if error is not None:
                _fail([done], str(error))

    def _new_producer(self) -> Producer:
        return Producer(self._config, logger=librdkafka_logger("gateway"))

    def _delivered(self, done: asyncio.Future[None], error: KafkaError | None, _: Any) -> None:
        """In the report thread: keep the report; wake the loop once per batch of them."""
        if error is not None and error.fatal() and self._producer is not None:
            log.error("event=producer_fatal error=%s", error.str())
            retired, self._producer = self._producer, None  # the next record starts one
            retired.purge(in_queue=True, in_flight=True, blocking=False)
            self._retired.append(retired)
        with self._lock:
            self._reports.append((done, error))
            first = len(self._reports) == 1
        if first and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed while stopping
                self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            reports, self._reports = self._reports, []
        for done, error in reports:
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(Unavailable(error.str()))
                done.exception()  # retrieved: a caller that stopped waiting is not told

    def _wait_for_reports(self) -> None:
        while not self._stopping.is_set():
            for retired in list(self._retired):  # what it held fails, and is reported
                retired.poll(0)
                if len(retired) == 0:
                    self._retired.remove(retired)
            producer = self._producer
            if producer is None:
                self._stopping.wait(POLL_S)
                continue
            producer.poll(POLL_S)


def _fail(futures: list[asyncio.Future[None]], reason: str) -> None:
    for done in futures:
        if not done.done():
            done.set_exception(Unavailable(reason))
