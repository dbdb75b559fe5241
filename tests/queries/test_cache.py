"""Warm and cold cache give the same answers: Redis only ever makes a read cheaper."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import redis.asyncio as aioredis

from commands.accounts.application import open_accounts
from domain.ids import direct_chat_id
from infra.settings import Settings
from projections.cache import chats_key, recent_key
from projections.directory import enrol_stand_ins
from tests.queries.conftest import World
from tests.queries.world import User, group, register, remove, run_commands, send, wait_projected

SOURCE = "x-parley-read-source"


@asynccontextmanager
async def restored(settings: Settings, keys: list[str]) -> AsyncIterator[aioredis.Redis]:
    """Redis, with `keys` put back as they were on the way out: tests that follow (a
    replay comparing the cache with a rebuild) find the cache the workers made."""
    cache = aioredis.Redis.from_url(settings.redis_url)
    saved = {key: (await cache.dump(key), await cache.pttl(key)) for key in keys}
    try:
        yield cache
    finally:
        for key, (dumped, ttl) in saved.items():
            await cache.delete(key)
            if dumped is not None:
                await cache.restore(key, max(ttl, 0), dumped, replace=True)
        await cache.aclose()


def requests(world: World) -> list[tuple[User, str, dict[str, Any]]]:
    return [
        (world.alice, "/v1/chats", {}),
        (world.alice, "/v1/chats", {"limit": 1}),
        (world.carol, "/v1/chats", {}),
        (world.dave, "/v1/chats", {}),
        (world.bob, f"/v1/chats/{world.ab}/messages", {}),
        (world.bob, f"/v1/chats/{world.trip}/messages", {"limit": 2}),
        (world.dave, f"/v1/chats/{world.trip}/messages", {}),
        (world.carol, f"/v1/chats/{world.long}/messages", {}),
        (world.carol, f"/v1/chats/{world.long}/messages", {"before_seq": 120, "limit": 30}),
        (world.carol, f"/v1/chats/{world.long}/messages", {"after_seq": 100}),
        (world.carol, f"/v1/chats/{world.long}/messages", {"before_seq": 50}),
    ]


async def ask(client: httpx.AsyncClient, user: User, url: str, params: Any) -> httpx.Response:
    answer = await client.get(url, params=params, headers=user.auth)
    assert answer.status_code == 200, answer.text
    return answer


async def test_cold_and_warm_caches_answer_the_same(
    client: httpx.AsyncClient, world: World, topics: Settings
) -> None:
    warm = [await ask(client, *request) for request in requests(world)]
    sources = [answer.headers[SOURCE] for answer in warm]
    # Everything but the old page of the long chat (beyond the last 50) is in Redis; dave's
    # list may be either: he is in no chat now, and if the workers applied his joining and
    # his removal in one batch, he never had a key.
    assert sources[:3] + sources[4:] == ["cache"] * 9 + ["database"], sources

    users = (world.alice, world.bob, world.carol, world.dave)
    keys = [chats_key(u.user_id) for u in users]
    keys += [recent_key(c) for c in (world.ab, world.trip, world.long)]
    async with restored(topics, keys) as cache:
        # A Redis that lost one of alice's chats: her list comes from PostgreSQL.
        await cache.zrem(chats_key(world.alice.user_id), str(world.ab))
        partial = await ask(client, world.alice, "/v1/chats", {})
        assert partial.headers[SOURCE] == "database"
        assert partial.json() == warm[0].json()
        # A cold Redis: nothing of these users and chats.
        await cache.delete(*keys)
        cold = [await ask(client, *request) for request in requests(world)]
    assert [answer.headers[SOURCE] for answer in cold] == ["database"] * len(cold)
    for request, hot, cool in zip(requests(world), warm, cold, strict=True):
        assert hot.json() == cool.json(), request


async def test_pages_of_a_long_list_are_the_same_warm_and_cold(
    client: httpx.AsyncClient, world: World, topics: Settings
) -> None:
    # hub has 40 chats (more than a page's cache window) and two groups it was removed
    # from, whose places in the list the cache cannot know.
    accounts = open_accounts(topics)
    try:
        hub = await asyncio.to_thread(register, accounts, topics, "hub")
    finally:
        accounts.close()
    peers = [uuid.uuid4() for _ in range(40)]
    enrol_stand_ins(topics.pg_conninfo, peers)
    groups = [uuid.uuid4(), uuid.uuid4()]

    def script(r: str) -> list[object]:
        steps: list[object] = []
        for n, peer in enumerate(peers):
            chat = direct_chat_id(hub.user_id, peer)
            steps.append(send(chat, hub.user_id, f"h{n}", "hi", r, to=peer))
            if n in (10, 25):
                g = groups[n // 25]
                steps += [
                    group(g, peers[0], [hub.user_id], "Left", r),
                    send(g, peers[0], "g1", "x", r),
                    remove(g, peers[0], hub.user_id, r),
                ]
        return steps

    outcomes = await asyncio.to_thread(run_commands, topics, script)
    await asyncio.to_thread(wait_projected, topics, outcomes)

    async def walk(limit: int) -> tuple[list[Any], set[str]]:
        chats: list[Any] = []
        sources: set[str] = set()
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            answer = await ask(client, hub, "/v1/chats", params)
            sources.add(answer.headers[SOURCE])
            chats += answer.json()["chats"]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                return chats, sources

    warm = {limit: await walk(limit) for limit in (1, 3, 7, 50)}
    assert warm[3][1] == {"cache"}
    async with restored(topics, [chats_key(hub.user_id)]) as cache:
        await cache.delete(chats_key(hub.user_id))
        cold = {limit: await walk(limit) for limit in warm}
    for limit, (chats, _) in warm.items():
        assert cold[limit][1] == {"database"}
        assert chats == cold[limit][0], limit
        assert len(chats) == 42
        left = [c for c in chats if not c["is_member"]]
        assert len(left) == 2 and all(c["last_message"]["seq"] == 1 for c in left)
