"""The user directory: a read table of accounts, written by the accounts application.

Account events never reach the Kafka log (a `Registered` event holds a password hash),
so the read side cannot build users from it. Instead the accounts application upserts
one row per user right after each save: `directory.users` (user id, username, display
name, about, last-seen privacy, contacts, blocks, version). The upsert is guarded by the
aggregate's version, so writers racing with older states never move a row backwards.
The queries service reads profiles and privacy from here, never from the event store.

The table lives in its own schema, not in `read`: `read` is rebuilt from the log and
swapped whole by a replay, and this table cannot be rebuilt from the log. It can be
rebuilt from the accounts store with `rebuild_directory`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol
from uuid import UUID

import psycopg

from domain.user import User

DIRECTORY_SCHEMA = "directory"

DIRECTORY_DDL = (
    "SELECT pg_advisory_xact_lock(hashtext('parley:directory-ddl'))",
    f"CREATE SCHEMA IF NOT EXISTS {DIRECTORY_SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {DIRECTORY_SCHEMA}.users ("
    " user_id uuid PRIMARY KEY,"
    " username text NOT NULL,"
    " display_name text NOT NULL,"
    " about text NOT NULL DEFAULT '',"
    " last_seen_privacy text NOT NULL,"
    " contacts uuid[] NOT NULL DEFAULT '{}',"
    " blocks uuid[] NOT NULL DEFAULT '{}',"
    " version bigint NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
)

_UPSERT = (
    f"INSERT INTO {DIRECTORY_SCHEMA}.users AS u (user_id, username, display_name, about, "
    "last_seen_privacy, contacts, blocks, version) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (user_id) DO UPDATE SET username = excluded.username, "
    "display_name = excluded.display_name, about = excluded.about, "
    "last_seen_privacy = excluded.last_seen_privacy, contacts = excluded.contacts, "
    "blocks = excluded.blocks, version = excluded.version, updated_at = now() "
    "WHERE u.version < excluded.version"
)


class Cursor(Protocol):
    """What this module needs of a psycopg cursor (sync or inside a transaction)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


def record_user(cur: Cursor, user: User) -> None:
    """Upsert the user's row unless a newer version is there already."""
    cur.execute(
        _UPSERT,
        (
            user.id,
            user.username,
            user.display_name,
            user.about,
            user.last_seen.value,
            list(user.contacts),
            list(user.blocked),
            user.version,
        ),
    )


_STAND_IN = (
    f"INSERT INTO {DIRECTORY_SCHEMA}.users (user_id, username, display_name, last_seen_privacy, "
    "version) VALUES (%s, %s, %s, 'EVERYONE', 0) ON CONFLICT (user_id) DO NOTHING"
)


def record_stand_ins(cur: Any, user_ids: Iterable[UUID]) -> None:
    """Rows for user ids that have no account, so that the command processor knows they
    exist (`commands.processor.people`): for benchmarks and tests that drive the processor without
    the accounts service. Version 0, so a real account's row replaces it. The table
    exists: `projections.schema.migrate` made it."""
    cur.executemany(
        _STAND_IN, [(user_id, f"u{user_id.hex[:31]}", user_id.hex[:8]) for user_id in user_ids]
    )


def enrol_stand_ins(conninfo: str, user_ids: Iterable[UUID]) -> None:
    """`record_stand_ins` on a connection of its own (PostgreSQL conninfo)."""
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
        record_stand_ins(cur, user_ids)


def rebuild_directory(accounts: Any, cur_factory: Any, batch: int = 500) -> int:
    """Upsert every user of the accounts store (a repair after a lost write); count them.

    `accounts` is the accounts application; `cur_factory()` opens a transaction and
    yields a cursor (`accounts.recorder.datastore.transaction(commit=True)`).
    """
    count = 0
    start = 1
    while True:
        notifications = accounts.recorder.select_notifications(start=start, limit=batch)
        if not notifications:
            return count
        for notification in notifications:
            if notification.topic.endswith("User.Registered"):
                user = accounts.user(UUID(str(notification.originator_id)))
                with cur_factory() as cur:
                    record_user(cur, user)
                count += 1
        start = notifications[-1].id + 1
