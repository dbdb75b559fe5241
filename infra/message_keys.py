"""The keys message bodies are sealed with in the event log (`infra.body_seal`), and
their erasure: a deleted or disappeared message's keys are deleted, so what the log
keeps of its content can never be read again (crypto-shredding).

One row per sealed part: `seq` is the message whose content the key protects (an
edit's or a reaction's key, and a reply's quote key, name the message they act on or
quote), so erasing a message deletes every key of its content in one statement.
`expires_at` is a disappearing message's time (its actions' keys share it), when the
workers erase it; `media_id` the object a message carries, noted in `erased_media`
when its key goes so the commands service can delete the object once no other live
message carries it (`commands.media.erasure`).

`PgMessageKeys` is the store's (the processor's pool), `MemoryMessageKeys` an in-memory
store's; the workers use the async statements at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from infra.pg_arrays import PgArray, bigints, byteas, texts, timestamptzs, uuids

KEYS_DDL = (
    "SELECT pg_advisory_xact_lock(hashtext('parley:message-keys-ddl'))",
    "CREATE TABLE IF NOT EXISTS message_keys ("
    " key_id uuid PRIMARY KEY,"
    " chat_id uuid NOT NULL,"
    " seq bigint NOT NULL,"
    " key bytea NOT NULL,"
    " expires_at timestamptz,"
    " media_id text,"
    " created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS message_keys_by_message ON message_keys (chat_id, seq)",
    "CREATE INDEX IF NOT EXISTS message_keys_by_expiry ON message_keys (expires_at) "
    "WHERE expires_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS message_keys_by_media ON message_keys (media_id) "
    "WHERE media_id IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS erased_media ("
    " media_id text PRIMARY KEY,"
    " erased_at timestamptz NOT NULL DEFAULT now())",
    # The store's writes, each one statement that is its own transaction and commits
    # without waiting for the WAL flush (`PgMessageKeys`: why that is safe).
    "CREATE OR REPLACE FUNCTION parley_put_message_keys(ids uuid[], chats uuid[], "
    "seqs bigint[], keys bytea[], expires timestamptz[], media text[]) RETURNS void "
    "LANGUAGE plpgsql AS $body$ BEGIN "
    "SET LOCAL synchronous_commit = off; "
    "INSERT INTO message_keys (key_id, chat_id, seq, key, expires_at, media_id) "
    "SELECT * FROM unnest(ids, chats, seqs, keys, expires, media); "
    "END; $body$",
    "CREATE OR REPLACE FUNCTION parley_erase_message_keys(chats uuid[], seqs bigint[]) "
    "RETURNS bigint LANGUAGE plpgsql AS $body$ DECLARE erased bigint; BEGIN "
    "SET LOCAL synchronous_commit = off; "
    "WITH gone AS (DELETE FROM message_keys k USING unnest(chats, seqs) AS m(chat_id, seq) "
    "  WHERE k.chat_id = m.chat_id AND k.seq = m.seq RETURNING k.media_id), "
    "noted AS (INSERT INTO erased_media (media_id) SELECT DISTINCT media_id FROM gone "
    "  WHERE media_id IS NOT NULL ON CONFLICT (media_id) DO NOTHING) "
    "SELECT count(*) INTO erased FROM gone; "
    "RETURN erased; END; $body$",
)
"""Created with the event store (`infra.event_store.open_store`) and by `migrate`, each
in one transaction (the lock keeps two processes starting together from colliding)."""

PUT_STATEMENT = (
    "INSERT INTO message_keys (key_id, chat_id, seq, key, expires_at, media_id) "
    "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::bytea[], "
    "%s::timestamptz[], %s::text[])"
)
_PUT_LAZILY = "SELECT parley_put_message_keys(%b, %b, %b, %b, %b, %b)"  # `key_columns`
_ERASE_LAZILY = "SELECT parley_erase_message_keys(%(chats)s::uuid[], %(seqs)s::bigint[])"
_GET = "SELECT key_id, key FROM message_keys WHERE key_id = ANY(%s)"
_OF_MESSAGES = (
    "SELECT DISTINCT ON (seq) seq, key_id, key, expires_at, media_id FROM message_keys "
    "WHERE chat_id = %s AND seq = ANY(%s) ORDER BY seq, created_at DESC"
)
_NOTE_MEDIA = (
    "noted AS (INSERT INTO erased_media (media_id) SELECT DISTINCT media_id FROM gone "
    "WHERE media_id IS NOT NULL ON CONFLICT (media_id) DO NOTHING) "
)
_ERASE_EXPIRED = (
    "WITH gone AS (DELETE FROM message_keys WHERE expires_at <= %(now)s RETURNING media_id), "
    f"{_NOTE_MEDIA}SELECT count(*) FROM gone"
)
_ERASE_AND_GET = (
    # The SELECT sees the rows as they were before the DELETE: a message and its delete
    # in one batch are opened, then the delete makes the message a tombstone.
    "WITH gone AS (DELETE FROM message_keys k "
    "USING unnest(%(chats)s::uuid[], %(seqs)s::bigint[]) AS m(chat_id, seq) "
    "WHERE k.chat_id = m.chat_id AND k.seq = m.seq RETURNING k.media_id), "
    f"{_NOTE_MEDIA}SELECT key_id, key FROM message_keys WHERE key_id = ANY(%(ids)s)"
)


@dataclass(frozen=True, slots=True)
class MessageKey:
    """One random key, sealing one part of the content of message `seq` of a chat."""

    key_id: UUID
    chat_id: UUID
    seq: int
    key: bytes
    expires_at: datetime | None = None
    media_id: str | None = None


Message = tuple[UUID, int]
"""(chat_id, seq) of a message."""


class MessageKeys(Protocol):
    """Where the keys live; every method is one round trip (or none, in memory)."""

    def put(self, keys: Sequence[MessageKey]) -> None:
        """Store new keys (their own transaction, before the events they seal)."""

    def get(self, key_ids: Collection[UUID]) -> dict[UUID, bytes]:
        """The keys that still exist among `key_ids`; an erased one is absent."""

    def of_messages(self, chat_id: UUID, seqs: Collection[int]) -> dict[int, MessageKey]:
        """A live key of each of these messages that has one (any will do: they are
        erased together)."""

    def erase(self, messages: Collection[Message]) -> int:
        """Delete every key of these messages; how many went."""

    def erase_expired(self, now: datetime) -> int:
        """Delete the keys of the disappearing messages whose time is up at `now`."""


Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
"""An autocommit connection, for as long as the context lasts (a pool's, usually)."""


class PgMessageKeys:
    """The keys in PostgreSQL's `message_keys`, on connections from `connect`.

    `put` and `erase` are one call each of a function (`KEYS_DDL`) that commits without
    waiting for the WAL flush. That is safe where the store uses them: keys are put just
    before the events they seal are saved, and the events' commit flushes the WAL up to
    and past the keys (WAL is one sequence), so a key can only be lost with events that
    were never stored; an erasure lost in a crash is done again by the workers when they
    project the delete. Waiting for the flush cost 2.0-2.7 ms a statement on this
    machine, against 0.1-0.2 ms for a round trip (docs/performance.md).
    """

    def __init__(self, connect: Connect) -> None:
        self.connect = connect

    def put(self, keys: Sequence[MessageKey]) -> None:
        if not keys:
            return
        with self.connect() as conn:
            conn.execute(_PUT_LAZILY, key_columns(keys), prepare=True)

    def get(self, key_ids: Collection[UUID]) -> dict[UUID, bytes]:
        if not key_ids:
            return {}
        with self.connect() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(_GET, (list(key_ids),))
            return {key_id: bytes(key) for key_id, key in cur.fetchall()}

    def of_messages(self, chat_id: UUID, seqs: Collection[int]) -> dict[int, MessageKey]:
        if not seqs:
            return {}
        with self.connect() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(_OF_MESSAGES, (chat_id, list(seqs)))
            return {
                seq: MessageKey(key_id, chat_id, seq, bytes(key), expires_at, media_id)
                for seq, key_id, key, expires_at, media_id in cur.fetchall()
            }

    def erase(self, messages: Collection[Message]) -> int:
        if not messages:
            return 0
        with self.connect() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(_ERASE_LAZILY, _messages(messages), prepare=True)
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def erase_expired(self, now: datetime) -> int:
        with self.connect() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(_ERASE_EXPIRED, {"now": now})
            row = cur.fetchone()
        return int(row[0]) if row else 0


class MemoryMessageKeys:
    """The keys of an in-memory event store (tests, tools)."""

    def __init__(self) -> None:
        self.keys: dict[UUID, MessageKey] = {}
        self.erased_media: set[str] = set()

    def put(self, keys: Sequence[MessageKey]) -> None:
        self.keys.update((key.key_id, key) for key in keys)

    def get(self, key_ids: Collection[UUID]) -> dict[UUID, bytes]:
        return {k: self.keys[k].key for k in key_ids if k in self.keys}

    def of_messages(self, chat_id: UUID, seqs: Collection[int]) -> dict[int, MessageKey]:
        wanted = set(seqs)
        return {k.seq: k for k in self.keys.values() if k.chat_id == chat_id and k.seq in wanted}

    def erase(self, messages: Collection[Message]) -> int:
        wanted = set(messages)
        return self._drop(k for k in self.keys.values() if (k.chat_id, k.seq) in wanted)

    def erase_expired(self, now: datetime) -> int:
        return self._drop(
            k for k in self.keys.values() if k.expires_at is not None and k.expires_at <= now
        )

    def _drop(self, keys: Iterable[MessageKey]) -> int:
        gone = list(keys)
        for key in gone:
            del self.keys[key.key_id]
            if key.media_id is not None:
                self.erased_media.add(key.media_id)
        return len(gone)


async def get_erasing(
    conn: AsyncConnection[Any], key_ids: Collection[UUID], erased: Collection[Message]
) -> dict[UUID, bytes]:
    """The keys among `key_ids` (as they were before this call), and every key of the
    messages `erased` deleted: one round trip for a batch of the workers."""
    if not erased:
        if not key_ids:
            return {}
        cur = await conn.execute(_GET, (list(key_ids),))
    else:
        cur = await conn.execute(_ERASE_AND_GET, {**_messages(erased), "ids": list(key_ids)})
    return {key_id: bytes(key) for key_id, key in await cur.fetchall()}


async def erase_expired_keys(conn: AsyncConnection[Any], now: datetime) -> int:
    """Delete the keys of the disappearing messages whose time is up; how many."""
    cur = await conn.execute(_ERASE_EXPIRED, {"now": now})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def key_columns(keys: Sequence[MessageKey]) -> tuple[PgArray, ...]:
    """The parameters of `PUT_STATEMENT` for these keys: six arrays, built whole."""
    return (
        uuids([k.key_id for k in keys]),
        uuids([k.chat_id for k in keys]),
        bigints([k.seq for k in keys]),
        byteas([k.key for k in keys]),
        timestamptzs([k.expires_at for k in keys]),
        texts([k.media_id for k in keys]),
    )


def _messages(messages: Collection[Message]) -> dict[str, list[Any]]:
    return {"chats": [chat for chat, _ in messages], "seqs": [seq for _, seq in messages]}
