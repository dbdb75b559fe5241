"""The cache's replay pieces on real Redis: recent sets expire on the log's clock, the
key swap installs the shadow under the live names and removes what it lacks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from domain.chat import Chat
from infra.log_envelope import decode_envelope, encode_event
from infra.settings import Settings
from projections.cache import PREFIX, apply_cache, recent_key
from projections.projector import Record
from projections.replay.cache_shadow import finish_recent, swap_keys
from projections.schema import migrate
from tests.projections.model import user

SCHEMA = "replay_cache_test"


@pytest.fixture(scope="module")
def schema(settings: Settings) -> Iterator[str]:
    migrate(settings, SCHEMA)
    yield SCHEMA
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


def sends(chat: Chat, moments: list[datetime]) -> list[Record]:
    """A message at each moment (the envelope's timestamp is the event's)."""
    out = []
    for n, moment in enumerate(moments, 1):
        chat.send(user(0), "d", f"l{n}-{uuid.uuid4().hex[:4]}", "text", b"x", None, n, 0)
        (event,) = chat.collect_events()
        object.__setattr__(event, "timestamp", moment)
        out.append(Record(0, n, decode_envelope(encode_event(event, n)[1])))
    return out


async def replay(settings: Settings, records: list[Record], prefix: str) -> dict[uuid.UUID, float]:
    clock: dict[uuid.UUID, float] = {}
    client = aioredis.Redis.from_url(settings.redis_url)
    async with await psycopg.AsyncConnection.connect(settings.pg_conninfo) as conn:
        for record in records:  # one record per batch: gaps across batches
            await apply_cache(client, conn, [record], SCHEMA, prefix, recent_clock=clock)
    await client.aclose()
    return clock


def test_recent_sets_expire_on_the_log_clock(settings: Settings, schema: str) -> None:
    now = datetime.now(UTC)
    prefix = f"{PREFIX}replay:test{uuid.uuid4().hex[:6]}:"
    busy = Chat.open_direct(user(0), user(1), opened_by=user(0))
    busy.collect_events()
    quiet = Chat.open_direct(user(0), user(2), opened_by=user(0))
    quiet.collect_events()
    old = now - timedelta(days=3)
    records = sends(busy, [old, old + timedelta(hours=1), now - timedelta(hours=1)])
    records += sends(quiet, [now - timedelta(days=2)])

    async def go() -> tuple[list[float], int, int, int]:
        clock = await replay(settings, records, prefix)
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            entries: Any = await client.zrange(recent_key(busy.id, prefix), 0, -1, withscores=True)
            scores = [float(score) for _, score in entries]
            await finish_recent(client, prefix, clock, set(clock))
            ttl = int(await client.ttl(recent_key(busy.id, prefix)))
            gone = int(await client.exists(recent_key(quiet.id, prefix)))
            live = f"{PREFIX}unit{uuid.uuid4().hex[:6]}:"  # stands for the live names
            await client.zadd(recent_key(quiet.id, live), {b"stale": 1})
            swapped = await swap_keys(client, prefix, live)
            assert (swapped.renamed, swapped.deleted) == (2, 1)  # + the checkpoint hash
            live_ttl = int(await client.ttl(recent_key(busy.id, live)))
            assert not await client.exists(recent_key(quiet.id, live))
            await client.delete(recent_key(busy.id, live))
            return scores, ttl, gone, live_ttl
        finally:
            await client.aclose()

    scores, ttl, gone, live_ttl = asyncio.run(go())
    assert scores == [3.0]  # more than a day between 2 and 3: 1 and 2 had expired
    assert 22 * 3600 < ttl <= 23 * 3600  # a day after message 3, an hour ago
    assert gone == 0  # its only message is two days old
    assert 22 * 3600 < live_ttl <= 23 * 3600  # RENAME keeps the TTL
