"""A Redis subscription whose connection the server drops (as a restart does) says it is
degraded, subscribes again, runs its re-registration, and hears what is published next.

Only this test's own connection is dropped (CLIENT KILL ID), never the server's others.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from infra.health import Health
from infra.settings import Settings
from infra.subscriber import Subscription


async def _until(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + deadline_s
    while not condition():
        assert asyncio.get_running_loop().time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def test_a_dropped_subscription_comes_back(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    component = f"test-{uuid.uuid4().hex[:8]}"
    channel = f"parley:test:{component}"

    async def scenario() -> None:
        health = Health()
        heard: list[bytes] = []
        registered_again = asyncio.Event()

        async def register_again() -> None:
            registered_again.set()

        subscription = Subscription(
            settings.redis_url,
            health,
            component,
            lambda message: heard.append(message["data"]),
            channels=[channel],
            on_subscribed=register_again,
        )
        admin = aioredis.Redis.from_url(settings.redis_url)
        try:
            await subscription.start()
            await admin.publish(channel, b"before")
            await _until(lambda: heard == [b"before"])

            clients = await admin.client_list(_type="pubsub")
            [mine] = [c for c in clients if c["name"] == f"parley-{component}"]
            await admin.client_kill_filter(_id=mine["id"])
            await asyncio.wait_for(registered_again.wait(), 10)
            assert health.degraded == {}
            assert subscription.resubscriptions == 1

            await admin.publish(channel, b"after")
            await _until(lambda: heard == [b"before", b"after"])
        finally:
            await subscription.stop()
            await admin.aclose()

    with caplog.at_level(logging.INFO, logger="parley.health"):
        asyncio.run(scenario())
    events = [r.getMessage() for r in caplog.records if component in r.getMessage()]
    assert events[0].startswith(f"event=degraded component={component} error=")
    assert events[1].startswith(f"event=recovered component={component} after_s=")
