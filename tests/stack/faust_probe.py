"""A minimal Faust app for the stack test: copies each record's value into Redis."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust
import redis.asyncio as aioredis

from infra.settings import load_settings

settings = load_settings()
app = faust.App(
    f"parley-probe-{os.environ['PROBE_ID']}",
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    datadir=os.environ["PROBE_DATADIR"],
    web_enabled=False,
    topic_replication_factor=1,
    topic_allow_declare=True,
)
topic = app.topic(os.environ["PROBE_TOPIC"], value_serializer="raw", key_serializer="raw")


@app.agent(topic)  # type: ignore[arg-type]
async def copy_to_redis(stream: AsyncIterator[bytes]) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    async for value in stream:
        await client.rpush(f"probe:{os.environ['PROBE_ID']}", value)
