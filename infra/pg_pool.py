"""An async PostgreSQL pool that survives a PostgreSQL restart quickly.

Each connection is checked at checkout (an empty query): after a restart every pooled
connection is dead. The pool waits longer after each dead one it meets (1 s, then 2 s,
4 s, ...: a `sync` after a restart outlasted a client's 10 s timeout), so the first one
found has the pool check all the others at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool


def checked_pool(conninfo: str, min_size: int, max_size: int) -> AsyncConnectionPool:
    """A pool (not open yet) whose first dead connection has it check all the others."""
    recheck: list[asyncio.Task[None]] = []

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            if not recheck or recheck[0].done():
                recheck[:] = [asyncio.create_task(pool.check(), name="pool-check")]
            raise

    pool = AsyncConnectionPool(
        conninfo, min_size=min_size, max_size=max_size, open=False, check=check
    )
    return pool
