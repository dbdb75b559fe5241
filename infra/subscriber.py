"""A Redis pub/sub subscription that outlives the server going away and coming back.

Pub/sub is the one use of Redis that fails silently: a subscriber whose connection died
receives nothing, and nothing tells the publisher. `Subscription` listens on its own
task; when the connection fails it reports the component down (`infra.health`), waits
(`infra.retry.Backoff`), opens a new connection and subscribes again, and reports it up
once Redis confirmed the subscription. Messages published while it was away are lost:
each user of it says what makes up for them (a resent command gets its answer again, a
missed push is recovered by `sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from infra.health import Health
from infra.retry import Backoff

CONFIRMATIONS = frozenset({"subscribe", "psubscribe"})


class Subscription:
    """Channels and patterns listened to on `redis` until `stop()`, resubscribed after
    every failure. `on_message` gets each message (as redis-py gives it); `on_subscribed`,
    if given, runs after every (re)subscription: what Redis may have lost meanwhile is
    written again there."""

    def __init__(
        self,
        redis_url: str,
        health: Health,
        component: str,
        on_message: Callable[[dict[str, Any]], None],
        channels: Sequence[str] = (),
        patterns: Sequence[str] = (),
        on_subscribed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        # A client of its own, without redis-py's retries: a retry would reconnect and
        # resubscribe inside redis-py, unseen here, so that neither `health` nor
        # `on_subscribed` would hear of it. Named, for CLIENT LIST.
        self.redis = aioredis.Redis(
            connection_pool=aioredis.ConnectionPool.from_url(
                redis_url, client_name=f"parley-{component}"
            )
        )
        self.health = health
        self.component = component
        self.on_message = on_message
        self.channels = list(channels)
        self.patterns = list(patterns)
        self.on_subscribed = on_subscribed
        self.subscribed = asyncio.Event()
        self.resubscriptions = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, and return once Redis confirmed it (as before any message is sent
        whose answer comes on these channels)."""
        self._task = asyncio.create_task(self._run(), name=f"listen-{self.component}")
        waiter = asyncio.create_task(self.subscribed.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            self._task.result()  # it ended: raise why

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.redis.aclose()

    async def _run(self) -> None:
        backoff = Backoff(first_s=0.05, cap_s=1.0)  # cheap to try: a reply may wait on it
        first = True
        while True:
            pubsub = self.redis.pubsub()
            try:
                if self.channels:
                    await pubsub.subscribe(*self.channels)
                if self.patterns:
                    await pubsub.psubscribe(*self.patterns)
                async for message in pubsub.listen():
                    if message.get("type") in CONFIRMATIONS:
                        if not self.subscribed.is_set():
                            await self._subscribed(first)
                            first = False
                            backoff.reset()
                        continue
                    self.on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection failed: subscribe again
                self.subscribed.clear()
                self.health.down(self.component, exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff.next())

    async def _subscribed(self, first: bool) -> None:
        if not first:
            self.resubscriptions += 1
            if self.on_subscribed is not None:
                await self.on_subscribed()
        self.subscribed.set()
        self.health.up(self.component)
