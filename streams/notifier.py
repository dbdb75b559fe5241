"""The notifier (`parley serve notifier`): push notifications for messages a recipient's
devices have not received (docs/push.md).

Three loops in one process:

- the log consumer reads `parley.events` and records each `MessageSent` younger than
  `push_max_age_s` (but reactions, edits and deletes) in `push.pending`, due when its
  grace period (`push_grace_s`) is over, keyed by event id, and drops the pushes not
  yet sent of messages deleted for everyone; it commits its Kafka offsets only after
  that, so a crash reads the events again and the key drops the copies;
- the dispatcher (`streams/push_dispatch.py`) turns due messages into notifications per
  device and sends them, one push per (device, chat), retrying with backoff;
- the record of what was sent is trimmed after `push_record_days`.

Only one dispatcher sends at a time: it holds a PostgreSQL advisory lock for as long as
its session lives, and another notifier process waits as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from infra.log_envelope import EnvelopeError, decode_envelope
from infra.push.provider import Provider
from infra.retry import Backoff
from infra.settings import Settings
from infra.topics import EVENTS, PUSH_DEAD
from projections.projector import NOTICE_KINDS
from projections.push_store import PUSH_SCHEMA
from streams import notifier_metrics as metrics
from streams.push_dispatch import Sender, due_groups, fan_out

log = logging.getLogger("parley.notifier")

DISPATCH_LOCK = "SELECT pg_try_advisory_lock(hashtext('parley:push-dispatch'))"
TRIM_EVERY_S = 600.0

ENQUEUE = (
    f"INSERT INTO {PUSH_SCHEMA}.pending "
    '(event_id, chat_id, seq, sender, partition, "offset", due_at) '
    "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::uuid[], %s::int[], "
    "%s::bigint[], %s::timestamptz[]) ON CONFLICT DO NOTHING"
)
WITHDRAW_PENDING = (
    f"DELETE FROM {PUSH_SCHEMA}.pending p USING unnest(%s::uuid[], %s::bigint[]) AS d(chat, seq) "
    "WHERE p.chat_id = d.chat AND p.seq = d.seq"
)
WITHDRAW_DUE = (
    f"UPDATE {PUSH_SCHEMA}.notifications n SET state = 'skipped' "
    "FROM unnest(%s::uuid[], %s::bigint[]) AS d(chat, seq) "
    "WHERE n.chat_id = d.chat AND n.seq = d.seq AND n.state = 'due'"
)


def pending_rows(
    values: Sequence[tuple[int, int, bytes]], settings: Settings, now: datetime
) -> list[tuple[Any, ...]]:
    """The `push.pending` rows of a batch of (partition, offset, value): its messages
    younger than `push_max_age_s`, each due `push_grace_s` after it was stored."""
    grace = timedelta(seconds=settings.push_grace_s)
    oldest = now - timedelta(seconds=settings.push_max_age_s)
    rows = []
    for partition, offset, value in values:
        try:
            e = decode_envelope(value)
        except EnvelopeError as exc:
            log.error("event=bad_envelope partition=%d offset=%d error=%s", partition, offset, exc)
            continue
        if e.type != "MessageSent" or e.timestamp < oldest:
            continue
        p = e.payload
        if p["kind"] in NOTICE_KINDS:  # reactions, edits, deletes, timers: not announced
            continue
        rows.append(
            (e.event_id, e.chat_id, p["seq"], p["sender"], partition, offset, e.timestamp + grace)
        )
    return rows


async def enqueue(conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await conn.execute(ENQUEUE, [list(column) for column in zip(*rows, strict=True)])


def withdrawals(values: Sequence[tuple[int, int, bytes]]) -> list[tuple[UUID, int]]:
    """(chat, seq) of the messages a batch deletes for everyone."""
    found = []
    for _, _, value in values:
        with contextlib.suppress(EnvelopeError):
            e = decode_envelope(value)
            if e.type == "MessageSent" and e.payload["kind"] == "delete":
                found.append((e.chat_id, int(e.payload["ref"])))
    return found


async def withdraw(conn: psycopg.AsyncConnection[Any], deleted: list[tuple[UUID, int]]) -> None:
    """Deleted messages are not pushed: pending ones are dropped, due ones skipped."""
    if deleted:
        columns = [[chat for chat, _ in deleted], [seq for _, seq in deleted]]
        await conn.execute(WITHDRAW_PENDING, columns)
        await conn.execute(WITHDRAW_DUE, columns)


async def consume(settings: Settings, stop: asyncio.Event) -> None:
    """Record the log's messages as pending pushes until `stop` is set."""
    consumer = AIOKafkaConsumer(
        settings.topic(EVENTS),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.notifier_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    conn = await psycopg.AsyncConnection.connect(settings.pg_conninfo, autocommit=True)
    try:
        log.info("event=notifier_consuming topic=%s", settings.topic(EVENTS))
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=settings.push_batch_max)
            values = [
                (r.partition, r.offset, r.value)
                for records in batches.values()
                for r in records
                if r.value is not None
            ]
            if not values:
                continue
            metrics.note_batch(consumer, batches, len(values))
            with metrics.RECORD_SECONDS.time():
                rows = pending_rows(values, settings, datetime.now(UTC))
                await enqueue(conn, rows)
                await withdraw(conn, withdrawals(values))
            await consumer.commit()
    finally:
        await conn.close()
        await consumer.stop()


async def dispatch(settings: Settings, stop: asyncio.Event, sender: Sender) -> None:
    """Fan out and send due pushes until `stop` is set, once this process leads."""
    conn = await psycopg.AsyncConnection.connect(settings.pg_conninfo, autocommit=True)
    try:
        while not stop.is_set():
            row = await (await conn.execute(DISPATCH_LOCK)).fetchone()
            if row is not None and row[0]:
                break
            log.info("event=notifier_standby")
            await _wait(stop, 1.0)
        log.info("event=notifier_ready")
        trimmed = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await fan_out(conn, settings)
            groups = await due_groups(conn, settings.push_batch_max)
            if groups:
                await sender.send(conn, groups)
            if loop.time() - trimmed > TRIM_EVERY_S:
                await _trim(conn, settings)
                trimmed = loop.time()
            if len(groups) < settings.push_batch_max:
                await _wait(stop, settings.push_poll_s)
    finally:
        await conn.close()


async def _resilient(name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run `loop` until `stop`, starting it again (new connections) after PostgreSQL or
    Kafka went away: what it had not committed it does again, harmlessly (the keys)."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            await loop()
            return
        except (psycopg.OperationalError, KafkaError, OSError) as exc:
            wait = backoff.next()
            log.warning(
                "event=notifier_retry loop=%s in=%.1fs error=%s", name, wait, type(exc).__name__
            )
            await _wait(stop, wait)


async def _trim(conn: psycopg.AsyncConnection[Any], settings: Settings) -> None:
    cur = await conn.execute(
        f"DELETE FROM {PUSH_SCHEMA}.notifications WHERE state <> 'due' "
        "AND created_at < now() - make_interval(days => %s)",
        (int(settings.push_record_days),),
    )
    if cur.rowcount:
        log.info("event=push_record_trimmed rows=%d", cur.rowcount)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run(settings: Settings, stop: threading.Event, providers: dict[str, Provider]) -> None:
    """The notifier with the given providers (the composition root builds them)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()

    async def dead_letter(entry: dict[str, Any]) -> None:
        await producer.send_and_wait(settings.topic(PUSH_DEAD), orjson.dumps(entry))
        log.warning(
            "event=push_dead_letter provider=%s chat=%s", entry["provider"], entry["chat_id"]
        )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(
        target=lambda: (stop.wait(), loop.call_soon_threadsafe(stopping.set)), daemon=True
    ).start()
    log.info("event=notifier_started providers=%s", ",".join(sorted(providers)) or "none")
    sender = Sender(settings, providers, dead_letter)
    try:
        await asyncio.gather(
            _resilient("consumer", lambda: consume(settings, stopping), stopping),
            _resilient("dispatcher", lambda: dispatch(settings, stopping, sender), stopping),
        )
    finally:
        stop.set()
        await producer.stop()
        for provider in providers.values():
            await provider.close()
