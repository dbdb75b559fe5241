"""What the queries service reads with, opened once per app: PostgreSQL, Redis, tokens
and the object store's URL signer.

The composition root (`parley.wiring.open_read_side`) opens a pool of autocommit
PostgreSQL connections (each with a statement timeout), a Redis client and the token
checker; `create_app` keeps them on `app.state.read_side`, and routes reach them with
`read_side_of(request)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from infra.auth import Tokens
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


def read_side_of(conn: HTTPConnection) -> ReadSide:
    read_side = conn.app.state.read_side
    assert isinstance(read_side, ReadSide)
    return read_side
