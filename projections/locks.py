"""PostgreSQL advisory locks that keep replays and the live workers out of each other's way.

- The **swap lock** (`parley.projections:swap`): every live worker holds it *shared* for
  each batch, from its PostgreSQL transaction through its Redis writes; a replay takes it
  *exclusive* for the final catch-up and the swap, which pauses the workers between two
  batches (and waits for the batch in flight). Nothing else ever waits on it.
- A **rebuild lock** per projection (`parley.replay:<projection>`): held for the whole
  rebuild by the session that runs it, so a second rebuild of the same projection is
  refused (`RebuildRunning`, code `rebuild_running`) and `parley replay list` can show
  the projection as rebuilding. A crashed rebuild releases it with its session.

All keys are `hashtextextended(name, 0)`, the same scheme as the relay's lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from projections.replay_errors import RebuildRunning

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


@asynccontextmanager
async def worker_batch(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """Hold the swap lock shared for one live batch (its transaction and its Redis writes).

    The lock is session-level and taken in a transaction of its own that commits at once,
    so the batch's own transaction starts and commits exactly as without it.
    """
    await conn.execute("SELECT pg_advisory_lock_shared(hashtextextended(%s, 0))", (SWAP_LOCK,))
    await conn.commit()
    try:
        yield
    finally:
        if not conn.closed:
            with suppress(psycopg.Error):
                if conn.info.transaction_status == TransactionStatus.INERROR:
                    await conn.rollback()
                await conn.execute(
                    "SELECT pg_advisory_unlock_shared(hashtextextended(%s, 0))", (SWAP_LOCK,)
                )
