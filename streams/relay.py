"""The relay: every stored event, in log order, to Kafka `parley.events`, nothing lost.

`parley serve relay` follows the event store's notification log from the position it
recorded last, wakes on the store's NOTIFY (with a fallback poll), publishes batches
with the idempotent producer of `infra.producer` (acks=all, key = chat id) and records
its new position in `relay_position` only after Kafka acknowledged every record of the
batch. A crash therefore re-publishes at most one batch, with the same event ids. Only
the holder of a PostgreSQL advisory lock publishes; other relays of the same name wait
as standbys and take over when the holder's session ends. See docs/log.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import sql

from infra.event_store import ChatStore, max_position, open_store
from infra.log_envelope import encode_event
from infra.producer import Publisher, Stopped
from infra.retry import Backoff
from infra.settings import Settings
from infra.topics import EVENTS
from streams import relay_metrics as metrics

log = logging.getLogger("parley.relay")

WAIT_SLICE_S = 0.25
STANDBY_RETRY_S = 1.0
MAX_BACKOFF_S = 5.0

# Only forwards: a relay that lost its lock without noticing cannot move the position back.
RECORD_POSITION = """
INSERT INTO relay_position (name, position, updated_at) VALUES (%s, %s, now())
ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()
WHERE relay_position.position < excluded.position
"""

Published = Callable[[Sequence[int]], None]
"""Called with the positions of a batch as soon as Kafka acknowledged all of it."""


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """What `parley relay status` prints."""

    name: str
    head: int
    position: int
    updated_at: datetime | None

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


class Relay:
    """One active term of the relay: it holds the lock on `conn` and publishes."""

    def __init__(
        self,
        settings: Settings,
        store: ChatStore,
        conn: psycopg.Connection[Any],
        on_published: Published | None = None,
    ) -> None:
        recorder = store.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)  # checked by run_relay
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.conn = conn
        self.publisher = Publisher(
            settings, settings.topic(EVENTS), f"parley-relay-{settings.relay_name}"
        )
        self.on_published = on_published
        self.position = 0
        self.published = 0
        self._unreported = [0, 0]  # events and batches published since the last log line
        self._reported_at = 0.0

    def follow(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Publish from the recorded position until `stop` is set."""
        self.position = read_position(self.conn, self.settings.relay_name)
        # Losing the last position update in a database crash only re-publishes a batch,
        # so it need not wait for the WAL flush (that would delay every next batch).
        self.conn.execute("SET synchronous_commit TO off")
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.recorder.channel_name)))
        log.info(
            "event=relay_active name=%s position=%d topic=%s",
            self.settings.relay_name,
            self.position,
            self.publisher.topic,
        )
        try:
            self.publisher.connect(stop)
            if ready is not None:
                ready.set()
            self._follow(stop)
        finally:
            self.publisher.close()

    def _follow(self, stop: threading.Event) -> None:
        while not stop.is_set():
            notifications = self.recorder.select_notifications(
                start=self.position, limit=self.settings.relay_batch_max, inclusive_of_start=False
            )
            if not notifications:
                if not self._wait_for_commit(stop):
                    self._report(idle=True)
                elif self.settings.relay_linger_ms > 0:
                    # Off the live path (the processor pushes): gather the commits of
                    # the next few milliseconds into one read and one produce.
                    stop.wait(self.settings.relay_linger_ms / 1000)
                continue
            with metrics.PUBLISH_SECONDS.time():
                self.publisher.publish(self._encode(notifications), stop)
            positions = [n.id for n in notifications]
            if self.on_published is not None:
                self.on_published(positions)
            self.position = positions[-1]
            self.conn.execute(RECORD_POSITION, (self.settings.relay_name, self.position))
            self.published += len(positions)
            metrics.note_batch(self.settings, len(positions), self.position, self._head)
            self._unreported[0] += len(positions)
            self._unreported[1] += 1
            self._report(idle=False)

    def _report(self, idle: bool) -> None:
        """Log what was published, at most once a second, and when the relay goes idle."""
        count, batches = self._unreported
        now = time.monotonic()
        if count and (idle or now - self._reported_at >= 1.0):
            log.info(
                "event=relay_published count=%d batches=%d position=%d",
                count,
                batches,
                self.position,
            )
            self._unreported = [0, 0]
            self._reported_at = now

    def _head(self) -> int:
        return max_position(self.store)

    def _encode(self, notifications: Sequence[Notification]) -> list[tuple[bytes, bytes]]:
        to_event = self.store.mapper.to_domain_event
        return [encode_event(to_event(n), n.id) for n in notifications]

    def _wait_for_commit(self, stop: threading.Event) -> bool:
        """Until the store NOTIFYs a commit (True), or the poll interval passes (False).

        A NOTIFY that arrived while this connection was busy is kept by psycopg and
        returned here at once, so no commit after the last read goes unnoticed.
        """
        deadline = time.monotonic() + self.settings.relay_poll_s
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for _ in self.conn.notifies(timeout=min(remaining, WAIT_SLICE_S), stop_after=1):
                return True
        return False


def run_relay(
    settings: Settings,
    stop: threading.Event,
    ready: threading.Event | None = None,
    on_published: Published | None = None,
) -> None:
    """The relay's main loop: stand by for the lock, then publish, until `stop` is set."""
    store = open_store(settings, AGGREGATE_CACHE_MAXSIZE="")
    if not isinstance(store.recorder, PostgresApplicationRecorder):
        store.close()
        raise RuntimeError("the relay needs the PostgreSQL event store (LISTEN/NOTIFY)")
    backoff = Backoff(cap_s=MAX_BACKOFF_S)
    published, position = 0, 0
    try:
        while not stop.is_set():
            relay: Relay | None = None
            try:
                with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
                    if not _hold_lock(conn, settings.relay_name, stop):
                        return
                    relay = Relay(settings, store, conn, on_published)
                    relay.follow(stop, ready)
            except Stopped:
                return
            except Exception as exc:
                if relay is not None and relay.published:
                    backoff.reset()  # it worked for a while: a new failure, not the same one
                metrics.ERRORS.inc(type(exc).__name__)
                log.warning(
                    "event=relay_error error=%s detail=%r retry_in=%.1fs",
                    type(exc).__name__,
                    str(exc)[:200],
                    backoff.delay,
                )
                if stop.wait(backoff.next()):
                    return
            finally:
                if relay is not None:
                    published += relay.published
                    position = max(position, relay.position)
    finally:
        store.close()
        log.info(
            "event=relay_stopped name=%s published=%d position=%d",
            settings.relay_name,
            published,
            position,
        )


def _hold_lock(conn: psycopg.Connection[Any], name: str, stop: threading.Event) -> bool:
    """Take the relay's advisory lock on `conn`, standing by until it is free."""
    standby = False
    while not stop.is_set():
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"parley.relay:{name}",)
        ).fetchone()
        if row is not None and row[0]:
            return True
        if not standby:
            log.info("event=relay_standby name=%s", name)
            standby = True
        stop.wait(STANDBY_RETRY_S)
    return False


def read_position(conn: psycopg.Connection[Any], name: str) -> int:
    """The last position the relay `name` recorded; 0 before its first batch."""
    row = conn.execute("SELECT position FROM relay_position WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row is not None else 0


def relay_status(settings: Settings) -> RelayStatus:
    """The store's head position, the relay's recorded position and when it was recorded."""
    with psycopg.connect(settings.pg_conninfo, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT position, updated_at FROM relay_position WHERE name = %s",
            (settings.relay_name,),
        ).fetchone()
    store = open_store(settings, AGGREGATE_CACHE_MAXSIZE="")
    try:
        head = max_position(store)
    finally:
        store.close()
    if row is None:
        return RelayStatus(settings.relay_name, head, 0, None)
    return RelayStatus(settings.relay_name, head, int(row[0]), row[1])
