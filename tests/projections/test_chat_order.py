"""The chat lists in Redis are a function of the log, whatever the batches.

Random events of a group and a 1:1 chat (joins, leaves, removals among the sends), in
random batches with redeliveries and re-publications, go through the PostgreSQL
projector and `apply_cache`: every member's score for a chat must be the time of the
chat's last activity after which they were a member, as a plain fold of the events says.
A replay reads the log in batches other than the live workers' (`parley replay rebuild
cache --verify` compares the two key by key).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.chat import Chat
from infra.log_envelope import Envelope
from infra.settings import Settings
from projections.cache import PREFIX, apply_cache
from projections.fold import RECEIPT_EVENTS
from projections.projector import Projector, Record
from projections.schema import metadata, migrate
from tests.projections.model import delivered_at_least_once, envelopes, records, user
from tests.projections.test_fold_property import _events, op

SCHEMA = "prop_chat_order"


@pytest.fixture(scope="module")
def conninfo(settings: Settings) -> Iterator[str]:
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    migrate(settings, SCHEMA)
    yield settings.pg_conninfo
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


def expected(envs: list[Envelope]) -> dict[tuple[str, str], float]:
    """(user, chat) -> the time (ms) of the chat's last activity after which the user was
    a member: the fold the chat lists must equal."""
    members: dict[UUID, set[str]] = {}
    scores: dict[tuple[str, str], float] = {}
    seen: set[UUID] = set()
    for e in envs:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        p = e.payload
        if e.type in ("DirectChatOpened", "GroupCreated"):
            members[e.chat_id] = {str(u) for u in p["members"]}
        elif e.type == "MemberAdded":
            members[e.chat_id].add(str(p["user_id"]))
        elif e.type in ("MemberRemoved", "MemberLeft"):
            members[e.chat_id].discard(str(p["user_id"]))
        if e.type in RECEIPT_EVENTS:
            continue
        for member in members[e.chat_id]:
            key = (member, str(e.chat_id))
            scores[key] = max(scores.get(key, 0.0), e.timestamp.timestamp() * 1000)
    return scores


async def project(
    settings: Settings, batches: list[list[Record]], prefix: str
) -> dict[tuple[str, str], float]:
    """Apply `batches` to the schema and the cache under `prefix`; read the chat lists
    back (and delete every key under the prefix)."""
    projector = Projector(schema=SCHEMA)
    redis = aioredis.Redis.from_url(settings.redis_url)
    out: dict[tuple[str, str], float] = {}
    try:
        async with await psycopg.AsyncConnection.connect(settings.pg_conninfo) as conn:
            for batch in batches:
                async with conn.transaction():
                    await projector.apply_batch(conn, batch)
                await apply_cache(redis, conn, batch, SCHEMA, prefix)
                await conn.commit()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        for key in keys:
            name = key.decode()[len(prefix) :]
            if name.startswith("user:") and name.endswith(":chats"):
                owner = name.split(":")[1]
                entries: Any = await redis.zrange(key, 0, -1, withscores=True)
                out.update({(owner, chat.decode()): score for chat, score in entries})
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
    return out


def _truncate(conninfo: str) -> None:
    names = ", ".join(f'"{SCHEMA}"."{t.name}"' for t in metadata.sorted_tables)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {names}")


def _prefix() -> str:
    return f"{PREFIX}test:order{uuid.uuid4().hex[:8]}:"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, max_size=40), data=st.data())
def test_chat_lists_equal_the_fold_whatever_the_batches(
    settings: Settings, conninfo: str, ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    envs = envelopes(_events(ops))
    batches = delivered_at_least_once(envs, data.draw, max_batch=15)
    _truncate(conninfo)
    assert asyncio.run(project(settings, batches, _prefix())) == expected(envs)


def test_a_member_removed_in_the_batch_of_a_message_keeps_its_time(
    settings: Settings, conninfo: str
) -> None:
    admin, stays, removed = user(0), user(1), user(2)
    group = Chat.create_group(uuid.uuid4(), "g", admin, [stays, removed])
    group.send(admin, "d", "l1", "text", b"hi", None, 1, 0)
    group.remove_member(removed, by=admin)
    group.send(admin, "d", "l2", "text", b"after", None, 2, 0)
    recs = records(envelopes(group.collect_events()))
    lists = []
    for batches in ([recs], [[r] for r in recs], [recs[:2], recs[2:]]):
        _truncate(conninfo)
        lists.append(asyncio.run(project(settings, batches, _prefix())))
    assert lists[0] == lists[1] == lists[2]
    sent, gone, after = (r.envelope.timestamp.timestamp() * 1000 for r in recs[1:])
    assert lists[0][(str(removed), str(group.id))] == sent  # the message before the removal
    assert lists[0][(str(stays), str(group.id))] == after
    assert gone < after
