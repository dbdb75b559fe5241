"""Shadow copies of the PostgreSQL projections, and the swap that puts one live.

A rebuild fills `read_shadow_<run>` (the same tables, made by `schema.migrate`) beside
the live schema `read`, which keeps serving. The swap is one transaction: move the
projection's checkpoints and chat versions over, lock the live tables, move them to
`read_old_<run>` and the shadow's into `read` (`ALTER TABLE .. SET SCHEMA`, a catalog
change: no data is copied), commit, then drop the old copy. Queries that arrive during
the swap wait for its lock (milliseconds) and then read the new tables: PostgreSQL looks
a table name up again when a lock it waited for came with a catalog change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from infra.settings import Settings
from projections.schema import LIVE_SCHEMA, PROJECTION_TABLES, migrate

log = logging.getLogger("parley.replay")

SHADOW_PREFIX = "read_shadow_"
OLD_PREFIX = "read_old_"
RUN_LOCK = "parley.replay.run:"

REPLAY_INDEXES = {
    "receipts_replay_sent": "receipts (chat_id, recipient, seq) WHERE status = 'SENT'",
    "receipts_replay_delivered": "receipts (chat_id, recipient, seq) WHERE status = 'DELIVERED'",
}
"""Built in a shadow only: a replay moves receipts by seq ranges and these find the ones
still to move without walking a user's whole history; dropped before the swap, so the
live schema stays exactly what `schema.py` says."""


def shadow_schema(run_id: str) -> str:
    return f"{SHADOW_PREFIX}{run_id}"


def old_schema(run_id: str) -> str:
    return f"{OLD_PREFIX}{run_id}"


def tables_of(projections: Iterable[str]) -> list[str]:
    return [t.name for p in projections for t in PROJECTION_TABLES.get(p, [])]


def create_shadow(settings: Settings, run_id: str) -> str:
    """An empty shadow schema with every read-model table; return its name."""
    schema = shadow_schema(run_id)
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        drop_schema(conn, schema)
    migrate(settings, schema)
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        for name, definition in REPLAY_INDEXES.items():
            conn.execute(
                sql.SQL("CREATE INDEX {n} ON {s}.{d}").format(
                    n=sql.Identifier(name), s=sql.Identifier(schema), d=sql.SQL(definition)
                )
            )
    return schema


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def swap_in(
    conn: psycopg.Connection[Any],
    projections: Sequence[str],
    shadow: str,
    old: str,
    lock_timeout_ms: int,
) -> None:
    """Make the shadow's tables of `projections` live, in one transaction.

    The caller holds the swap lock (no live worker writes meanwhile). Raises
    `psycopg.errors.LockNotAvailable` if a live table stays locked by a query for longer
    than `lock_timeout_ms`; nothing has changed then.
    """
    s, r, o = sql.Identifier(shadow), sql.Identifier(LIVE_SCHEMA), sql.Identifier(old)
    names = list(projections)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout_ms)))
        for index in REPLAY_INDEXES:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}.{}").format(s, sql.Identifier(index)))
        for table in ("checkpoints", "chat_versions"):
            t = sql.Identifier(table)
            conn.execute(
                sql.SQL("DELETE FROM {}.{} WHERE projection = ANY(%s)").format(r, t), (names,)
            )
            conn.execute(
                sql.SQL("INSERT INTO {}.{} SELECT * FROM {}.{} WHERE projection = ANY(%s)").format(
                    r, t, s, t
                ),
                (names,),
            )
        tables = tables_of(names)
        for table in tables:
            _copy_grants(conn, table, LIVE_SCHEMA, shadow)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(o))
        # Queries wait from here to the commit: only catalog changes follow.
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(LIVE_SCHEMA, t) for t in tables)
            )
        )
        for table in tables:
            t = sql.Identifier(table)
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(r, t, o))
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(s, t, r))


def _copy_grants(conn: psycopg.Connection[Any], table: str, source: str, target: str) -> None:
    """Give the shadow table the privileges other roles have on the live one."""
    grants = conn.execute(
        "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = %s AND table_name = %s AND grantee <> current_user",
        (source, table),
    ).fetchall()
    for grantee, privilege in grants:
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(privilege), sql.Identifier(target, table), sql.Identifier(grantee)
            )
        )


def hold_run(conn: psycopg.Connection[Any], run_id: str) -> None:
    """Mark `run_id` as alive for as long as `conn`'s session lasts."""
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (RUN_LOCK + run_id,))


def orphaned_runs(conn: psycopg.Connection[Any]) -> list[str]:
    """Runs that left a shadow or old schema behind and whose session is gone."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'read\\_shadow\\_%%' "
        "OR nspname LIKE 'read\\_old\\_%%'"
    ).fetchall()
    runs = {re.sub(f"^({SHADOW_PREFIX}|{OLD_PREFIX})", "", row[0]) for row in rows}
    return [run_id for run_id in sorted(runs) if run_is_orphan(conn, run_id)]


def run_is_orphan(conn: psycopg.Connection[Any], run_id: str) -> bool:
    """True if no session holds the run's lock: the run has ended or died."""
    key = RUN_LOCK + run_id
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    if row is not None and row[0]:
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        return True
    return False


def drop_run(conn: psycopg.Connection[Any], run_id: str) -> None:
    drop_schema(conn, shadow_schema(run_id))
    drop_schema(conn, old_schema(run_id))
    log.info("event=replay_shadow_dropped run=%s", run_id)
