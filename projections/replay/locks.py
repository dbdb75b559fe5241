"""PostgreSQL advisory locks that keep replays and the live workers out of each other's way.

- The **swap lock** (`parley.projections:swap`): every live worker holds it *shared* for
  each batch, from its PostgreSQL transaction through its Redis writes (`WORKER_LOCK`);
  a replay takes it *exclusive* for the final catch-up and the swap, which pauses the
  workers between two batches (and waits for the batch in flight). Nothing else ever
  waits on it.
- A **rebuild lock** per projection (`parley.replay:<projection>`): held for the whole
  rebuild by the session that runs it, so a second rebuild of the same projection is
  refused (`RebuildRunning`, code `rebuild_running`) and `parley replay list` can show
  the projection as rebuilding. A crashed rebuild releases it with its session.

All keys are `hashtextextended(name, 0)`, the same scheme as the relay's lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql

from projections.replay.errors import RebuildRunning

SWAP_LOCK = "parley.projections:swap"


def rebuild_lock_name(projection: str) -> str:
    return f"parley.replay:{projection}"


def try_rebuild_locks(conn: psycopg.Connection[Any], projections: Sequence[str]) -> None:
    """Take every projection's rebuild lock on `conn` (autocommit), or none of them.

    Raises `RebuildRunning` naming the first projection another session holds.
    """
    taken: list[str] = []
    for projection in projections:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
            (rebuild_lock_name(projection),),
        ).fetchone()
        if row is None or not row[0]:
            release_rebuild_locks(conn, taken)
            raise RebuildRunning(projection)
        taken.append(projection)


def release_rebuild_locks(conn: psycopg.Connection[Any], projections: Iterable[str]) -> None:
    with suppress(psycopg.Error):
        for projection in projections:
            conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                (rebuild_lock_name(projection),),
            )


def held_rebuild_locks(conn: psycopg.Connection[Any], projections: Sequence[str]) -> set[str]:
    """Which of `projections` some session of this database is rebuilding right now."""
    rows = conn.execute(
        "SELECT n.name FROM unnest(%s::text[]) AS n(name) "
        "JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((l.classid::int8 << 32) | l.objid::int8) "
        "  = hashtextextended('parley.replay:' || n.name, 0)",
        (list(projections),),
    ).fetchall()
    return {row[0] for row in rows}


def pause_workers(conn: psycopg.Connection[Any]) -> None:
    """Wait for the live workers' batches in flight, then keep new ones from starting."""
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (SWAP_LOCK,))


def resume_workers(conn: psycopg.Connection[Any]) -> None:
    with suppress(psycopg.Error):
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (SWAP_LOCK,))


WORKER_LOCK = sql.SQL("SELECT pg_advisory_lock_shared(hashtextextended({}, 0))").format(SWAP_LOCK)
"""Taken by a live worker at the start of each batch, in the batch's first round trip.

The lock is session-level: it outlives the batch's transaction (committed or rolled
back) and covers the batch's Redis writes until `WORKER_UNLOCK`
(`streams/workers.py`)."""

WORKER_UNLOCK = sql.SQL("SELECT pg_advisory_unlock_shared(hashtextextended({}, 0))").format(
    SWAP_LOCK
)
