"""Fixtures for the replay tests: the real pipeline (processor, relay, workers) and
helpers to drive traffic, snapshot the read model and the cache, and break them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
import redis

from commands.command import CommandType
from domain.ids import direct_chat_id
from infra.settings import Settings
from projections.cache import PREFIX
from projections.replay.cache_shadow import live_keys
from projections.schema import LIVE_SCHEMA
from tests.commands.client import new_users, send
from tests.projections.model import comparable, read_back
from tests.projections.test_pipeline import (
    conversation_script,
    receipt,
    run_commands,
    wait_projected,
)
from tests.services import Service, running


@pytest.fixture(scope="package")
def pipeline(
    topics: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Service]]:
    logs = tmp_path_factory.mktemp("replay-pipeline")
    # Consumer groups of their own: other modules' pipelines never share a group with it.
    env = {
        "PARLEY_PROCESSOR_GROUP": f"{topics.processor_group}-replay",
        "PARLEY_WORKERS_APP_ID": f"{topics.workers_app_id}-replay",
    }
    with (
        running("processor", logs / "processor.log", env) as processor,
        running("relay", logs / "relay.log", env) as relay,
        running("workers", logs / "workers.log", env) as workers,
    ):
        processor.wait_for_log(r"partitions_assigned partitions=\[\d")
        relay.wait_for_log(r"event=relay_active")
        workers.wait_for_log(r"Worker ready")
        yield {"processor": processor, "relay": relay, "workers": workers}


def conversation(settings: Settings) -> dict[str, UUID]:
    """1:1 and group traffic with receipts, a removal and a re-add; return the chat ids."""
    ids, script = conversation_script(settings, 12, delivered=8, read=4)
    outcomes = run_commands(settings, script)
    assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok]
    return ids


def chatter(settings: Settings, pairs: int = 10, messages: int = 5, tag: str = "") -> None:
    """Some 1:1 traffic: `pairs` chats with `messages` each, then a read receipt each."""
    users = [new_users(settings, 2) for _ in range(pairs)]
    tag = tag or uuid.uuid4().hex[:6]

    def script(r: str) -> list[Any]:
        return [
            [
                send(direct_chat_id(a, b), a, f"{tag}-{i}", "x", r, to=b)
                for a, b in users
                for i in range(messages)
            ],
            [receipt(direct_chat_id(a, b), b, CommandType.MARK_READ, 2, r) for a, b in users],
        ]

    outcomes = run_commands(settings, script)
    assert all(o.ok for o in outcomes)


def settle(settings: Settings, deadline_s: float = 60.0) -> None:
    """Wait until the projections and the cache have every event of the store."""
    import time

    from projections.cache import checkpoint_key

    wait_projected(settings, deadline_s)
    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            with psycopg.connect(settings.pg_conninfo) as conn:
                rows = conn.execute(
                    f'SELECT partition, "offset" FROM "{LIVE_SCHEMA}".checkpoints '
                    "WHERE projection = 'messages'"
                ).fetchall()
            cached: Any = client.hgetall(checkpoint_key())
            marks = {int(k): int(v) for k, v in cached.items()}
            if all(marks.get(p, -1) >= offset for p, offset in rows):
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise AssertionError("the cache did not catch up")


def read_model(settings: Settings) -> dict[str, Any]:
    return comparable(read_back(settings.pg_conninfo, LIVE_SCHEMA))


def cache_dump(settings: Settings) -> dict[str, Any]:
    """Every live cache key's content (not TTLs, not the checkpoint hash)."""

    async def keys() -> set[str]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await live_keys(client)
        finally:
            await client.aclose()

    client = redis.Redis.from_url(settings.redis_url)
    out: dict[str, Any] = {}
    try:
        for key in sorted(asyncio.run(keys()) - {"proj:cache:checkpoints"}):
            kind = client.type(PREFIX + key)
            if kind == b"zset":
                out[key] = client.zrange(PREFIX + key, 0, -1, withscores=True)
            elif kind == b"hash":
                out[key] = client.hgetall(PREFIX + key)
    finally:
        client.close()
    return out


def table_oids(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.pg_conninfo) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.oid::int8 FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (LIVE_SCHEMA,),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def leftover_schemas(settings: Settings) -> list[str]:
    with psycopg.connect(settings.pg_conninfo) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'read\\_%%'"
        ).fetchall()
    return [r[0] for r in rows]


__all__ = ["chatter", "conversation", "settle", "wait_projected"]
