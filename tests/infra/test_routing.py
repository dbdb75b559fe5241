"""Routing pushes to gateways through Redis: one script call per batch, against real Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis

from infra.lua import execute
from infra.routing import deliver_channel, presence_key, queue_route, route_many
from infra.settings import Settings


async def _published(client: aioredis.Redis, channels: list[str], send: Any) -> dict[str, Any]:
    """What each of `channels` receives while `send()` runs (up to 5 s for the first)."""
    pubsub = client.pubsub()
    await pubsub.subscribe(*channels)
    for _ in channels:  # the subscribe confirmations
        await pubsub.get_message(timeout=5)
    result = await send()
    got: dict[str, Any] = {"result": result}
    deadline = asyncio.get_running_loop().time() + 5
    while asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is None:
            if len(got) > 1:
                break  # everything published by `send` has arrived: one round trip
            continue
        got[message["channel"].decode()] = orjson.loads(message["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    return got


async def test_a_batch_reaches_each_gateway_once_with_only_its_online_users(
    settings: Settings,
) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    g1, g2 = f"gw-{uuid.uuid4().hex[:8]}", f"gw-{uuid.uuid4().hex[:8]}"
    a, b, offline = (str(uuid.uuid4()) for _ in range(3))
    # a is connected twice, to both gateways; b once, to the first; `offline` nowhere.
    await client.hset(presence_key(a), mapping={"c1": g1, "c2": g2})
    await client.hset(presence_key(b), mapping={"c3": g1, "c4": g1})
    message = {"type": "message", "chat_id": "x", "seq": 1, "body": 'quote " and \\ é'}
    receipt = {"type": "receipt", "chat_id": "x", "user_id": a, "delivered_up_to": 1}
    chat = {"type": "chat", "chat_id": "x", "event": "GroupRenamed"}
    items: list[tuple[list[str], dict[str, Any], tuple[str, str] | None]] = [
        ([a, b, offline], message, (a, "phone")),
        ([b], receipt, None),
        ([offline], {"type": "typing"}, None),
        ([], {"type": "nobody"}, None),
        ([a, b, offline], chat, None),  # the same users as the first: their list is shared
    ]
    channels = [deliver_channel(g1), deliver_channel(g2)]
    got = await _published(client, channels, lambda: route_many(client, items))
    assert got.pop("result") == 2
    assert got == {
        deliver_channel(g1): {
            "items": [
                {"users": [a, b], "frame": message, "except": [a, "phone"]},
                {"users": [b], "frame": receipt},
                {"users": [a, b], "frame": chat},
            ]
        },
        deliver_channel(g2): {
            "items": [
                {"users": [a], "frame": message, "except": [a, "phone"]},
                {"users": [a], "frame": chat},
            ],
        },
    }
    await client.aclose()


async def test_a_pipeline_whose_scripts_redis_lost_loads_them_and_runs_again(
    settings: Settings,
) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    gateway, user = f"gw-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    await client.hset(presence_key(user), mapping={"c1": gateway})
    await client.script_flush()  # as after a Redis restart
    frame = {"type": "message", "seq": 7}
    key = f"test:{uuid.uuid4().hex}"

    async def send() -> list[Any]:
        def build(pipe: Any) -> None:
            pipe.set(key, "done")
            queue_route(pipe, [([user], frame, None)])

        return await execute(client, build)

    got = await _published(client, [deliver_channel(gateway)], send)
    assert got.pop("result") == [True, 1]
    assert got == {deliver_channel(gateway): {"items": [{"users": [user], "frame": frame}]}}
    assert await client.get(key) == b"done"
    await client.aclose()
