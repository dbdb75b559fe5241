"""The Faust workers (`parley serve workers`): build the projections from `parley.events`.

Faust is treated as at-least-once. The agent takes events in batches, applies each batch
to the PostgreSQL projections in one transaction that also moves their checkpoints,
then updates the Redis projections and hands new messages, receipts and chat changes to
the gateways of the users online (`streams/delivery.py`); only after that does Faust
acknowledge the events.
A crash re-delivers at most the unacknowledged batches, which the checkpoints skip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
import psycopg
import redis.asyncio as aioredis

from infra.settings import Settings
from infra.topics import EVENTS
from projections.bulk import BulkProjector
from projections.cache import apply_cache
from projections.locks import worker_batch
from projections.projector import Projector, Record, expire_inbox
from projections.schema import LIVE_SCHEMA, migrate
from streams.delivery import deliver
from streams.envelope import EnvelopeError, decode_envelope

log = logging.getLogger("parley.workers")


def create_app(settings: Settings) -> faust.App:
    """The Faust app with the projection agent and the inbox expiry timer."""
    app = faust.App(
        settings.workers_group_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
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
    within = settings.workers_batch_within_ms / 1000

    @app.agent(topic)
    async def project(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        conn = await _connect(settings)
        redis = aioredis.Redis.from_url(settings.redis_url)
        try:
            batches = stream.take_events(settings.workers_batch_max, within)  # type: ignore[attr-defined]
            async for events in batches:
                records = []
                for event in events:
                    try:
                        envelope = decode_envelope(event.value)
                    except EnvelopeError as exc:
                        log.error(
                            "event=bad_envelope partition=%d offset=%d error=%s",
                            event.message.partition,
                            event.message.offset,
                            exc,
                        )
                        continue
                    records.append(Record(event.message.partition, event.message.offset, envelope))
                conn = await _apply_until_done(settings, conn, redis, projector, records)
                yield None
        finally:
            await conn.close()
            await redis.aclose()

    @app.timer(interval=settings.inbox_expiry_interval_s)  # type: ignore[untyped-decorator]
    async def expire() -> None:
        async with await _connect(settings) as conn:
            removed = await expire_inbox(conn, settings.inbox_ttl_days)
            await conn.commit()
        if removed:
            log.info("event=inbox_expired rows=%d", removed)

    return app


async def _connect(settings: Settings) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(settings.pg_conninfo)


async def _apply_until_done(
    settings: Settings,
    conn: psycopg.AsyncConnection[Any],
    redis: aioredis.Redis,
    projector: Projector,
    records: list[Record],
) -> psycopg.AsyncConnection[Any]:
    """Apply a batch, retrying with backoff while PostgreSQL or Redis is unreachable."""
    delay = 0.1
    while True:
        try:
            if conn.closed:
                conn = await _connect(settings)
            # A replay's swap takes this lock exclusive: it waits for this batch, and
            # the next one waits for the swap (projections/locks.py, docs/replay.md).
            async with worker_batch(conn):
                async with conn.transaction():
                    applied = await projector.apply_batch(conn, records)
                await apply_cache(redis, conn, records)
            await deliver(redis, conn, records)
            await conn.commit()
            if records:
                log.debug("event=projected records=%d applied=%d", len(records), applied)
            return conn
        except (psycopg.OperationalError, aioredis.RedisError, OSError) as exc:
            log.warning("event=projection_retry in=%.1fs error=%s", delay, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def run_workers(settings: Settings) -> None:
    """Migrate the read model, then run the Faust worker until it is stopped."""
    migrate(settings)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()
