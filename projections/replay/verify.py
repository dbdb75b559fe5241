"""Compare a shadow projection with the live one before it is swapped in.

PostgreSQL: per table, per chat, the number of rows and an md5 of the chat's rows (each
row as text, in a fixed order), live against shadow in one query; chats whose checksums
differ are counted and a few named. Redis: each cache key's content (sorted set members
and scores, hash fields), live against shadow; TTLs and the checkpoint hash are
bookkeeping and not compared. Both sides must be at the same point of the log: the
replay takes the comparison's snapshot while the live workers are paused with the shadow
stopped at their checkpoints (projections/replay/rebuild.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from projections.cache import PREFIX
from projections.replay.cache_shadow import CHUNK, live_keys
from projections.replay.shadow import tables_of
from projections.schema import LIVE_SCHEMA

EXAMPLES = 5


@dataclass(frozen=True)
class TableDiff:
    table: str
    live_rows: int
    shadow_rows: int
    chats_differing: int
    examples: list[str]


@dataclass(frozen=True)
class CacheDiff:
    live_keys: int
    shadow_keys: int
    keys_differing: int
    examples: list[str]


@dataclass
class VerifyReport:
    tables: list[TableDiff] = field(default_factory=list)
    cache: CacheDiff | None = None
    ahead_partitions: list[int] = field(default_factory=list)

    @property
    def differences(self) -> int:
        cache = self.cache.keys_differing if self.cache else 0
        return sum(t.chats_differing for t in self.tables) + cache


def verify_tables(
    conn: psycopg.Connection[Any], projections: list[str], shadow: str
) -> list[TableDiff]:
    """Per table of `projections`: rows on each side and the chats whose rows differ."""
    out = []
    for table in tables_of(projections):
        query = sql.SQL(
            "WITH a AS (SELECT chat_id, count(*) AS n, "
            "  md5(string_agg(t::text, E'\\n' ORDER BY t::text)) AS h FROM {live} t GROUP BY 1), "
            "b AS (SELECT chat_id, count(*) AS n, "
            "  md5(string_agg(t::text, E'\\n' ORDER BY t::text)) AS h FROM {shadow} t GROUP BY 1) "
            "SELECT (SELECT coalesce(sum(n), 0) FROM a), (SELECT coalesce(sum(n), 0) FROM b), "
            "count(*), (array_agg(coalesce(a.chat_id, b.chat_id)::text "
            "  ORDER BY coalesce(a.chat_id, b.chat_id)))[1:{k}] "
            "FROM a FULL JOIN b ON a.chat_id = b.chat_id WHERE a.h IS DISTINCT FROM b.h"
        ).format(
            live=sql.Identifier(LIVE_SCHEMA, table),
            shadow=sql.Identifier(shadow, table),
            k=sql.Literal(EXAMPLES),
        )
        row = conn.execute(query).fetchone()
        assert row is not None
        out.append(TableDiff(table, int(row[0]), int(row[1]), int(row[2]), list(row[3] or [])))
    return out


async def verify_cache(redis: aioredis.Redis, shadow_prefix: str) -> CacheDiff:
    """Every live cache key against its shadow copy, by content."""
    live = await live_keys(redis, PREFIX)
    shadow = await live_keys(redis, shadow_prefix)
    bookkeeping = {"proj:cache:checkpoints"}
    keys = sorted((live | shadow) - bookkeeping)
    differing: list[str] = []
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        mine = await _contents(redis, [PREFIX + k for k in chunk])
        theirs = await _contents(redis, [shadow_prefix + k for k in chunk])
        differing.extend(k for k, a, b in zip(chunk, mine, theirs, strict=True) if a != b)
    return CacheDiff(
        live_keys=len(live - bookkeeping),
        shadow_keys=len(shadow - bookkeeping),
        keys_differing=len(differing),
        examples=differing[:EXAMPLES],
    )


async def _contents(redis: aioredis.Redis, keys: list[str]) -> list[Any]:
    """Each key's value in a comparable form (None if missing)."""
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in await pipe.execute()]
    pipe = redis.pipeline(transaction=False)
    for key, kind in zip(keys, kinds, strict=True):
        if kind == "zset":
            pipe.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            pipe.hgetall(key)
        else:
            pipe.exists(key)
    values = await pipe.execute()
    return [
        (kind, value) if kind in ("zset", "hash") else None
        for kind, value in zip(kinds, values, strict=True)
    ]
