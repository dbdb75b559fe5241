"""What the queries service reads with, opened once per app: PostgreSQL, Redis, tokens
and the object store's URL signer.

`open_read_side(settings)` opens a pool of autocommit PostgreSQL connections (each with
a statement timeout), a Redis client and the token checker; `create_app` keeps them on
`app.state.read_side`, and routes reach them with `read_side_of(request)`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from commands.auth import Tokens
from commands.directory import DIRECTORY_DDL
from infra.objectstore import ObjectStore
from infra.settings import Settings

log = logging.getLogger("parley.queries")

POOL_WAIT_S = 5.0
"""How long a request waits for a PostgreSQL connection before it answers 503."""
APPLICATION_NAME = "parley-queries"
"""How the service's PostgreSQL sessions are named (pg_stat_activity)."""


@dataclass(frozen=True)
class ReadSide:
    """The read model's connections and the token checker of one queries process."""

    settings: Settings
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    redis: Redis
    tokens: Tokens
    objects: ObjectStore  # signs media download URLs; no bytes pass through here


@asynccontextmanager
async def open_read_side(settings: Settings) -> AsyncIterator[ReadSide]:
    """Open the pool, Redis and the token checker; close them on the way out."""
    conn = await psycopg.AsyncConnection.connect(settings.pg_conninfo)
    async with conn, conn.transaction():  # the table may not exist before any account
        for statement in DIRECTORY_DDL:
            await conn.execute(statement)
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        settings.pg_conninfo,
        min_size=1,
        max_size=settings.queries_pool_size,
        kwargs={
            "autocommit": True,
            "application_name": APPLICATION_NAME,
            "options": f"-c statement_timeout={settings.queries_statement_timeout_ms}",
        },
        open=False,
        name="queries",
        timeout=POOL_WAIT_S,
    )
    await pool.open()
    redis = Redis.from_url(settings.redis_url)
    try:
        yield ReadSide(settings, pool, redis, Tokens(settings, redis), ObjectStore(settings))
    finally:
        await redis.aclose()
        await pool.close()


def read_side_of(conn: HTTPConnection) -> ReadSide:
    read_side = conn.app.state.read_side
    assert isinstance(read_side, ReadSide)
    return read_side
