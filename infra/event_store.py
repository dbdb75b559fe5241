"""The event store of the write side: eventsourcing's Application over PostgreSQL.

Configured for a single writer per chat (ARCHITECTURE.md decision 2): the aggregate
cache keeps chats in memory with fast-forward off (the processor that owns a chat's
partition is the only one appending to it; optimistic concurrency still rejects a stale
writer), and cached aggregates are not deep-copied on each get (the processor evicts a
chat whose save failed instead). A snapshot every ``SNAPSHOT_INTERVAL`` events bounds
the cost of loading a long chat after a restart or a rebalance; the processor takes it
from the chat it holds in memory, right after the save, instead of the library's way
(which reloads the chat from the database first).

Message content is stored sealed, each part under a key of its own that a delete or a
disappearing message's expiry erases (`infra.body_seal`, `infra.message_keys`): `save`
stores the keys first, the mapper seals, the event and snapshot stores open on load.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import psycopg
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.persistence import (
    EventStore,
    InterfaceError,
    JSONTranscoder,
    Mapper,
    OperationalError,
    StoredEvent,
    Transcoding,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import EnvType, retry
from psycopg import sql

from domain.chat import Chat
from infra.body_seal import BodySeal, SealingMapper, UnsealingEventStore
from infra.message_keys import (
    KEYS_DDL,
    MemoryMessageKeys,
    MessageKey,
    MessageKeys,
    PgMessageKeys,
    key_columns,
)
from infra.pg_arrays import bigints, byteas, integers, texts, uuids
from infra.publish_marks import DDL as MARKS_DDL
from infra.publish_marks import FENCED_SQLSTATE, Fenced
from infra.settings import Settings

SNAPSHOT_INTERVAL = 200


class BytesAsBase64(Transcoding):
    """Message bodies are opaque bytes; stored as base64 text inside the JSON event."""

    type = bytes
    name = "b64"

    def encode(self, obj: bytes) -> str:
        return base64.b64encode(obj).decode("ascii")

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


class ChatStore(Application[UUID]):
    """Stores and loads Chat aggregates; `save` returns recordings with log positions."""

    name = "parley"
    is_snapshotting_enabled = True

    def __init__(self, env: EnvType | None = None) -> None:
        self.seal = BodySeal()
        super().__init__(env)
        self.seal.keys = _keys_of(self.recorder)

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        if isinstance(self.recorder, OneStatementRecorder):
            # The keys go in the events' own statement and transaction.
            kwargs["keys"] = self.seal.prepare(objs, put=False)
        else:
            self.seal.prepare(objs)  # the keys, in their own transaction, first
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Chat):
                # What the library's `collect_events` does for an aggregate, without
                # its two checks against runtime Protocols: 24 us a chat in Python 3.11.
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)  # then as `Application.save`
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.seal.erase_deleted(r.domain_event for r in recordings)
        return recordings

    def snapshot(self, chats: list[Chat]) -> None:
        """Store a snapshot of each chat as it is now (it must have no pending events)."""
        assert self.snapshots is not None
        snapshots = [type(chat).Snapshot.take(chat) for chat in chats]
        self.seal.prepare_snapshots(snapshots)
        self.snapshots.put(snapshots)

    def construct_mapper(self) -> Mapper[UUID]:
        return SealingMapper(self.construct_transcoder(), self.seal)

    def construct_event_store(self) -> EventStore[UUID]:
        return UnsealingEventStore(self.mapper, self.recorder, self.seal)

    def construct_snapshot_store(self) -> EventStore[UUID]:
        recorder = self.factory.aggregate_recorder(purpose="snapshots")
        return UnsealingEventStore(self.mapper, recorder, self.seal)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(BytesAsBase64())


def _keys_of(recorder: Any) -> MessageKeys:
    """The message keys beside the events: in PostgreSQL, on the store's own pool."""
    if isinstance(recorder, PostgresApplicationRecorder):
        return PgMessageKeys(recorder.datastore.get_connection)
    return MemoryMessageKeys()


class OneStatementRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL recorder, saving a batch in one statement.

    The library's save sends seven statements in a pipeline (BEGIN, the lock timeout,
    the table lock, NOTIFY, the insert, a sync, COMMIT). Here one call of a function
    does the same in one statement, which is its own transaction: the table is locked
    in EXCLUSIVE mode so that notification ids commit in their order (the relay never
    passes a gap that fills later), the store's channel is notified, and the rows are
    inserted from plain arrays. Fewer messages and less Python a batch
    (docs/performance.md, "A save in one statement"); the table, its rows and every
    read are the library's own.

    The same statement stores the message keys that seal the batch's content
    (`infra.body_seal`), so keys and events commit together (no key without its event
    after a failed save), and, for a processor that publishes what it stores, checks and
    moves its partitions' publish marks (`infra.publish_marks`): a processor fenced off
    its partitions stores nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = sql.Identifier(self.datastore.schema)
        function = sql.Identifier(f"parley_insert_{self.events_table_name}")
        self.sql_create_statements.extend(sql.Composed([sql.SQL(ddl)]) for ddl in MARKS_DDL)
        self.sql_create_statements.append(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "ids uuid[], versions bigint[], topics text[], states bytea[], "
                "writer text, parts integer[], key_ids uuid[], key_chats uuid[], "
                "key_seqs bigint[], key_values bytea[], key_expiry timestamptz[], "
                "key_media text[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ "
                "DECLARE positions bigint[]; claimed integer; BEGIN "
                "SET LOCAL lock_timeout = '{timeout}s'; "
                "IF cardinality(key_ids) > 0 THEN "
                "INSERT INTO message_keys (key_id, chat_id, seq, key, expires_at, media_id) "
                "SELECT * FROM unnest(key_ids, key_chats, key_seqs, key_values, key_expiry, "
                "key_media); END IF; "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "WITH inserted AS (INSERT INTO {schema}.{table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING notification_id) "
                "SELECT array_agg(notification_id ORDER BY notification_id) INTO positions "
                "FROM inserted; "
                "IF writer IS NOT NULL THEN "
                "UPDATE {schema}.publish_marks SET unpublished_from = "
                "coalesce(unpublished_from, positions[1]) "
                "WHERE partition = ANY(parts) AND owner = writer; "
                "GET DIAGNOSTICS claimed = ROW_COUNT; "
                "IF claimed <> cardinality(parts) THEN "
                "RAISE EXCEPTION 'a partition of this save is claimed by another processor' "
                "USING ERRCODE = '{fenced}'; END IF; END IF; "
                "RETURN QUERY SELECT unnest(positions); "
                "END; $body$"
            ).format(
                schema=schema,
                function=function,
                timeout=sql.SQL(str(self.datastore.lock_timeout)),
                table=sql.Identifier(self.events_table_name),
                channel=sql.Identifier(self.channel_name),
                fenced=sql.SQL(FENCED_SQLSTATE),
            )
        )
        # Rendered once (psycopg renders a composed statement again at every call). The
        # arrays are typed (`infra.pg_arrays`): no casts. A batch without message keys
        # (receipts, most commands but sends) passes empty arrays as constants.
        call = "SELECT {schema}.{function}(%b, %b, %b, %b, %b, %b, {keys}) AS id"
        self._insert_in_one, self._insert_without_keys = (
            sql.SQL(call)
            .format(schema=schema, function=function, keys=sql.SQL(", ".join([key] * 6)))
            .as_bytes(None)
            for key in ("%b", "'{}'")
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        writer: Writer | None = None,
        keys: Sequence[MessageKey] = (),
        **_: Any,
    ) -> Sequence[int]:
        """Insert in one statement, with the message `keys` that seal the events; with
        `writer`, only if it still owns its partitions (`infra.publish_marks`), noting
        the batch as not yet published there."""
        if not stored_events:
            return []
        columns: tuple[Any, ...] = (
            uuids([cast(UUID, e.originator_id) for e in stored_events]),  # a uuid column
            bigints([e.originator_version for e in stored_events]),
            texts([e.topic for e in stored_events]),
            byteas([e.state for e in stored_events]),
            writer.name if writer is not None else None,
            integers(sorted(writer.partitions) if writer is not None else []),
        )
        statement = self._insert_without_keys
        if keys:
            columns += key_columns(keys)
            statement = self._insert_in_one
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            try:
                cursor.execute(statement, columns, prepare=True)
            except psycopg.Error as exc:
                if exc.sqlstate == FENCED_SQLSTATE:
                    raise Fenced(str(exc)) from None
                raise
            # The ids are drawn in the rows' order inside one locked statement.
            return sorted(row["id"] for row in cursor.fetchall())


@dataclass(frozen=True, slots=True)
class Writer:
    """Who saves (a processor's claim name) and the command partitions of the chats saved."""

    name: str
    partitions: frozenset[int]


RECORDER_TOPIC = f"{OneStatementRecorder.__module__}:{OneStatementRecorder.__qualname__}"

EVENTS_TABLE = f"{ChatStore.name}_events"
"""The stored events' table (eventsourcing names it after the application, in `public`)."""


def store_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The eventsourcing environment for the settings' PostgreSQL."""
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": settings.pg_db,
        "POSTGRES_HOST": settings.pg_host,
        "POSTGRES_PORT": str(settings.pg_port),
        "POSTGRES_USER": settings.pg_user,
        "POSTGRES_PASSWORD": settings.pg_password,
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "CREATE_TABLE": "y",
        "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
        "APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC,
    }
    env.update(overrides)
    return env


@contextlib.contextmanager
def tables_created_alone(settings: Settings) -> Iterator[None]:
    """Serialise the table creation an eventsourcing application does when it opens
    (and create the message keys' tables).

    Processes starting together on a fresh database would race on CREATE TABLE IF NOT
    EXISTS (PostgreSQL answers one of them with a duplicate-key or "tuple concurrently
    updated" error), so every store of Parley's opens under one advisory lock.
    """
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('parley:event-store-ddl'))")
        try:
            with conn.transaction():
                for statement in KEYS_DDL:
                    conn.execute(statement)
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('parley:event-store-ddl'))")


def open_store(settings: Settings, **overrides: str) -> ChatStore:
    """Open the store, creating its tables if needed (one process at a time)."""
    with tables_created_alone(settings):
        return ChatStore(env=store_env(settings, **overrides))


def max_position(store: ChatStore) -> int:
    """The log position (notification id) of the newest stored event, 0 if none."""
    value: Any = store.recorder.max_notification_id()
    return int(value or 0)


def chat_position(store: ChatStore, chat_id: UUID) -> int:
    """The log position of a chat's newest stored event, 0 if it has none."""
    from psycopg import sql

    recorder: Any = store.recorder
    statement = sql.SQL(
        "SELECT max(notification_id) AS max FROM {schema}.{table} WHERE originator_id = %s"
    ).format(
        schema=sql.Identifier(recorder.datastore.schema),
        table=sql.Identifier(recorder.events_table_name),
    )
    with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute(statement, (chat_id,))
        row = cursor.fetchone()
    return int(row["max"] or 0) if row else 0
