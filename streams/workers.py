"""The Faust workers (`parley serve workers`): build the projections from `parley.events`.

Faust is treated as at-least-once. The agent takes events in batches, applies each batch
to the PostgreSQL projections in one transaction that also moves their checkpoints,
then updates the Redis projections; only after that does Faust acknowledge the events.
The workers are not on the live path: the processor pushes each committed batch to the
users online itself (`commands/processor/live.py`).
A crash re-delivers at most the unacknowledged batches, which the checkpoints skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import psycopg
import redis.asyncio as aioredis
import uvloop
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from psycopg.pq import TransactionStatus

from infra.log_envelope import EnvelopeError, decode_envelope
from infra.lua import execute
from infra.message_keys import erase_expired_keys
from infra.retry import Backoff
from infra.settings import Settings
from infra.topics import EVENTS
from projections.bulk import BulkProjector
from projections.cache import members_by_chat, members_query, plan_cache, queue_cache, unread_query
from projections.cache_heal import CHECK_EVERY_S, CacheWatch
from projections.expiry import erase_expired
from projections.opening import open_live
from projections.projector import Projector, Record, expire_inbox
from projections.replay.locks import WORKER_LOCK, WORKER_UNLOCK
from projections.schema import LIVE_SCHEMA
from projections.upcasting import upcast_envelope
from streams import workers_metrics as metrics

log = logging.getLogger("parley.workers")

PACE_EVERY_S = 10.0


FETCH_MAX_WAIT_MS = 20
"""How long the broker may hold the workers' fetch when the partitions asked for have no
new records. Faust fixes it at 1,500 ms, and aiokafka sends one fetch at a time to a
broker, leaving out partitions whose records are still being consumed: a fetch that
went out for the quiet partitions only then holds the busy ones back for up to 1.5 s.
That showed as a steady 1.2-1.4 s commit->projection lag at 1,000 messages/s with the
worker idle 60 % of the time (`parley bench projection`). 20 ms bounds it; the cost is
up to 50 empty fetches a second while nothing happens. (50 ms, tried once the workers
were off the live path, doubled commit->projection p50 at 1,000 msgs/s and saved
nothing measurable: docs/performance.md.)"""


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _faust_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by `start()`, which builds the fetcher
    return consumer


_faust_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def create_app(settings: Settings) -> faust.App:
    """The Faust app with the projection agent and the inbox and message expiry timers."""
    # Faust creates a data directory on start (empty with the memory store): keep it in
    # the stack's state directory, not in whatever directory the worker was started from.
    datadir = Path(settings.state_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.workers_group_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=settings.workers_batch_max,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # A worker that died is noticed in seconds, not Faust's default minute.
        broker_session_timeout=settings.workers_session_timeout_s,
        broker_heartbeat_interval=1.0,
    )
    topic = app.topic(settings.topic(EVENTS), value_serializer="raw", key_serializer="raw")
    # Set-based SQL for runs of messages and receipts (projections/bulk.py), checked
    # against the per-event Projector and the fold; it falls back to the per-event one
    # by itself if their SQL ever drifts apart.
    projector: Projector = BulkProjector(schema=LIVE_SCHEMA)

    @app.agent(topic)
    async def project(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        conn = await _connect(settings)
        redis = aioredis.Redis.from_url(settings.redis_url)
        pace = Pace()
        manual = stream.noack()  # type: ignore[attr-defined]  # acked below, once applied
        try:
            linger_s = settings.workers_linger_ms / 1000
            async for events in ready_batches(manual, settings.workers_batch_max, linger_s):
                started = time.monotonic()
                taken_at = time.time()
                records = decode_batch(
                    [(e.message.partition, e.message.offset, e.value) for e in events]
                )
                conn = await _apply_until_done(settings, conn, redis, projector, records, pace)
                done_at = time.time()
                pace.lags(
                    [taken_at - e.message.timestamp for e in events],
                    [done_at - e.message.timestamp for e in events],
                )
                pace.batch(len(events), time.monotonic() - started)
                metrics.note_lags(app.consumer, events)
                for event in events:
                    await manual.ack(event)
                yield None
        finally:
            await conn.close()
            await redis.aclose()

    # Redis restarted (and may have lost its last second of writes): heal the cache.
    watch_redis = aioredis.Redis.from_url(settings.redis_url)
    watch = CacheWatch(settings, watch_redis)

    @app.timer(interval=CHECK_EVERY_S)  # type: ignore[untyped-decorator]
    async def watch_cache() -> None:
        await watch.check()

    @app.timer(interval=settings.inbox_expiry_interval_s)  # type: ignore[untyped-decorator]
    async def expire() -> None:
        async with await _connect(settings) as conn:
            removed = await expire_inbox(conn, settings.inbox_ttl_days, datetime.now(UTC))
        if removed:
            log.info("event=inbox_expired rows=%d", removed)

    @app.timer(interval=settings.message_expiry_interval_s)  # type: ignore[untyped-decorator]
    async def disappear() -> None:
        try:
            now = datetime.now(UTC)
            async with await _connect(settings) as conn:
                gone = await erase_expired(conn, watch_redis, now)
                keys = await erase_expired_keys(conn, now)  # what the log keeps of them
        except (psycopg.OperationalError, aioredis.RedisError, OSError) as exc:
            log.warning("event=message_expiry_failed error=%s", type(exc).__name__)
            return
        if gone or keys:
            log.info("event=messages_expired messages=%d keys=%d", len(gone), keys)

    return app


class Pace:
    """Batches and events projected, logged every PACE_EVERY_S while there are any."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.since = time.monotonic()
        self.batches = self.events = 0
        self.busy_s = 0.0
        self.stage_s = [0.0, 0.0]  # PostgreSQL (projections and reads), Redis (cache)
        self.taken: list[float] = []  # per event: Kafka append time -> handed to the agent
        self.done: list[float] = []  # ... -> projected and cached

    def lags(self, taken: list[float], done: list[float]) -> None:
        self.taken += taken
        self.done += done
        for lag in done:
            metrics.PROJECTED_SECONDS.observe(lag)

    def stages(self, marks: list[float]) -> None:
        for i in range(len(self.stage_s)):
            self.stage_s[i] += marks[i + 1] - marks[i]
        metrics.POSTGRES_SECONDS.observe(marks[1] - marks[0])
        metrics.REDIS_SECONDS.observe(marks[2] - marks[1])

    def batch(self, events: int, took_s: float) -> None:
        metrics.BATCH_SECONDS.observe(took_s)
        metrics.BATCH_EVENTS.observe(events)
        metrics.EVENTS.inc(amount=events)
        self.batches += 1
        self.events += events
        self.busy_s += took_s
        elapsed = time.monotonic() - self.since
        if elapsed >= PACE_EVERY_S:
            log.info(
                "event=projection_pace events_per_s=%.0f batches=%d mean_batch=%.1f "
                "mean_batch_ms=%.1f busy=%.0f%% postgres_ms=%.1f redis_ms=%.1f "
                "taken_ms_p50=%.0f done_ms_p50=%.0f done_ms_p99=%.0f",
                self.events / elapsed,
                self.batches,
                self.events / self.batches,
                1000 * self.busy_s / self.batches,
                100 * self.busy_s / elapsed,
                *(1000 * s / self.batches for s in self.stage_s),
                1000 * _median(self.taken),
                1000 * _median(self.done),
                1000 * _p99(self.done),
            )
            self._reset()


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def _p99(values: list[float]) -> float:
    return sorted(values)[int(0.99 * (len(values) - 1))] if values else 0.0


async def ready_batches(
    stream: Any, max_events: int, linger_s: float = 0.0
) -> AsyncIterator[list[Any]]:
    """The stream's events in batches of what is ready: a batch ends at `max_events` or
    when no further event is waiting in the stream's queue, and the next one starts
    with whatever arrived meanwhile.

    Faust's `take_events` instead waits a fixed window after every batch (unless the
    batch fills), which at light load added the window to every event's latency
    (commit->projection p50 17.5 ms at 100 messages/s against 8-9 ms this way). Under
    load the queue fills while a batch is applied, so batches grow by themselves. The
    stream must not acknowledge (`stream.noack()`): the caller acknowledges a batch's
    events after applying it, so a crash redelivers it.
    """
    queue = stream.channel.queue
    batch: list[Any] = []
    first = 0.0
    async for event in stream.events():
        if not batch:
            first = time.monotonic()
        batch.append(event)
        if len(batch) < max_events and queue.empty() and linger_s > 0:
            wait = first + linger_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if len(batch) < max_events and not queue.empty():
            continue
        yield batch
        batch = []


def decode_batch(values: list[tuple[int, int, bytes]]) -> list[Record]:
    """(partition, offset, value) from the topic as records, each envelope upcast to its
    event class's current version (an event published before an upgrade reads as the
    code projecting it expects, as in a replay). One that cannot be read is logged and
    left out."""
    records = []
    for partition, offset, value in values:
        try:
            envelope = upcast_envelope(decode_envelope(value))
        except EnvelopeError as exc:
            log.error("event=bad_envelope partition=%d offset=%d error=%s", partition, offset, exc)
            metrics.BAD_ENVELOPES.inc()
            continue
        records.append(Record(partition, offset, envelope))
    return records


async def _connect(settings: Settings) -> psycopg.AsyncConnection[Any]:
    # Autocommit: a batch sends its own BEGIN and COMMIT inside its pipelines, where
    # psycopg's implicit BEGIN would cost a round trip of its own.
    return await psycopg.AsyncConnection.connect(settings.pg_conninfo, autocommit=True)


async def _apply_until_done(
    settings: Settings,
    conn: psycopg.AsyncConnection[Any],
    redis: aioredis.Redis,
    projector: Projector,
    records: list[Record],
    pace: Pace,
) -> psycopg.AsyncConnection[Any]:
    """Apply a batch, retrying with backoff while PostgreSQL or Redis is unreachable.

    A retry applies the whole batch again: what PostgreSQL committed is skipped by its
    checkpoints, and the Redis writes and pushes are computed from the records again.
    The sealed content is opened first, once (`projections.opening`: one round trip)."""
    backoff = Backoff()
    plain: list[Record] | None = None
    while True:
        try:
            if conn.closed:
                conn = await _connect(settings)
            if plain is None:
                plain = await open_live(conn, records)
            applied = await apply_live(conn, redis, projector, plain, pace)
            if records:
                log.debug("event=projected records=%d applied=%d", len(records), applied)
            return conn
        except (psycopg.OperationalError, aioredis.RedisError, OSError) as exc:
            metrics.RETRIES.inc(type(exc).__name__)
            log.warning(
                "event=projection_retry in=%.1fs error=%s", backoff.delay, type(exc).__name__
            )
            await asyncio.sleep(backoff.next())


async def apply_live(
    conn: psycopg.AsyncConnection[Any],
    redis: aioredis.Redis,
    projector: Projector,
    records: list[Record],
    pace: Pace | None = None,
) -> int:
    """One live batch in four round trips, whatever its size; count the events applied.

    1. PostgreSQL: BEGIN, the replay's swap lock (shared; projections/replay/locks.py), the
       checkpoints, chat versions and cursors the projector reads first;
    2. PostgreSQL: the projections' writes and checkpoints, then what Redis needs from
       the result (active members, unread counts), then COMMIT;
    3. Redis, once committed: the cache writes, in one MULTI;
    4. PostgreSQL: the swap lock released.

    Each round trip is a wait for another process on a machine whose cores are busy,
    so their number, more than the work in them, sets the batch's fixed cost (it was
    about eighteen).
    """
    chats = {r.envelope.chat_id for r in records}
    plan = plan_cache(records)
    marks = [time.monotonic()]
    async with conn.cursor() as members_cur, conn.cursor() as unread_cur:

        async def reads() -> None:
            if chats:
                await members_cur.execute(*members_query(chats))
            if plan.unread_chats:
                await unread_cur.execute(*unread_query(plan.unread_chats))
            await conn.execute("COMMIT")

        try:
            applied = await projector.apply_batch(
                conn, records, before=[("BEGIN", None), (WORKER_LOCK, None)], after=reads
            )
            marks.append(time.monotonic())
            members = members_by_chat(await members_cur.fetchall()) if chats else {}
            unread_rows = await unread_cur.fetchall() if plan.unread_chats else []
            await execute(redis, lambda pipe: queue_cache(pipe, plan, members, unread_rows))
            marks.append(time.monotonic())
        finally:
            await _end_batch(conn)
    if pace is not None:
        pace.stages(marks)
    return applied


async def _end_batch(conn: psycopg.AsyncConnection[Any]) -> None:
    """Roll back what a failed batch left open, and release the swap lock."""
    if conn.closed:
        return  # the session, and its lock, are gone
    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.execute("ROLLBACK")
        await conn.execute(WORKER_UNLOCK)


def run_workers(settings: Settings) -> None:
    """Run the Faust worker until it is stopped (the tables exist: `migrate`).

    On uvloop's event loop, as the gateway (uvicorn picks it): the asyncio loop's own
    machinery (handles, timers, the selector, socket writes) runs in C there, 10-15 %
    less of the workers' CPU at 100 msgs/s (docs/performance.md)."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_app(settings)
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()
