"""Presence: which of this gateway's users are online, and their last seen.

Redis holds the live values: each user's connections here (`presence_key`) and last
seen; the heartbeat renews them, a Redis that came back (and may have lost them) gets
them again at once. On disconnect, last seen goes to PostgreSQL too. A `presence` frame
is answered from Redis, as the owner's privacy allows the asker to see. (The gateway's
own liveness is in the registry of gateways, `infra.registry`.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from starlette.concurrency import run_in_threadpool

from commands.accounts.application import Accounts
from commands.gateway.connection import Connection, now_ms
from commands.gateway.protocol import ClientFrame
from domain.errors import DomainError
from domain.visibility import can_see_last_seen
from infra.health import Health
from infra.routing import GATEWAY_TTL_S, PRESENCE_TTL_S, last_seen_key, presence_key

log = logging.getLogger("parley.gateway")


class Presence:
    """The presence of one gateway's connections (`by_user` is the gateway's own map)."""

    def __init__(
        self,
        gateway_id: str,
        redis: Redis,
        pool: AsyncConnectionPool,
        accounts: Accounts,
        health: Health,
        by_user: dict[UUID, set[Connection]],
    ) -> None:
        self.gateway_id = gateway_id
        self.redis = redis
        self.pool = pool
        self.accounts = accounts
        self.health = health
        self.by_user = by_user

    async def register_again(self) -> None:
        """After Redis came back (it may have lost the last second of writes, or all of
        them): this gateway's users' presence, written again at once, so
        the workers route pushes here before the next heartbeat would."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue(pipe)
        await pipe.execute()
        log.info(
            "event=gateway_registered_again gateway=%s users=%d", self.gateway_id, len(self.by_user)
        )

    def _queue(self, pipe: Any) -> None:
        stamp = now_ms()
        for user, connections in list(self.by_user.items()):
            if not connections:
                continue
            key = presence_key(user)
            pipe.hset(key, mapping={c.id: self.gateway_id for c in connections})
            pipe.expire(key, PRESENCE_TTL_S)
            pipe.set(last_seen_key(user), stamp)

    async def mark(self, connection: Connection) -> None:
        """Register the connection: present here, last seen now."""
        key = presence_key(connection.user_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, connection.id, self.gateway_id)
        pipe.expire(key, PRESENCE_TTL_S)
        pipe.set(last_seen_key(connection.user_id), now_ms())
        await pipe.execute()

    async def forget(self, connections: list[Connection]) -> None:
        if not connections:
            return
        pipe = self.redis.pipeline(transaction=False)
        for connection in connections:
            pipe.hdel(presence_key(connection.user_id), connection.id)
            pipe.set(last_seen_key(connection.user_id), now_ms())
        try:
            await pipe.execute()
        except Exception as exc:
            log.warning("event=presence_cleanup_failed error=%s", type(exc).__name__)
        await self.persist_last_seen({c.user_id for c in connections})

    async def persist_last_seen(self, users: set[UUID]) -> None:
        """On disconnect, last seen goes to PostgreSQL too (Redis holds the live value)."""
        try:
            async with self.pool.connection() as conn:
                for user in users:
                    await conn.execute(
                        "INSERT INTO last_seen (user_id, at) VALUES (%s, now()) "
                        "ON CONFLICT (user_id) DO UPDATE SET at = excluded.at",
                        (user,),
                    )
        except (psycopg.Error, OSError) as exc:
            log.warning("event=last_seen_persist_failed error=%s", type(exc).__name__)

    async def heartbeat(self) -> None:
        """Check Redis often (a PING every `GATEWAY_TTL_S` / 3: `/readyz` says when it is
        down), its users' presence and last seen less often.

        Presence entries live `PRESENCE_TTL_S` and are renewed three times per that TTL,
        one hash write, one expiry and one last-seen stamp per user, not per connection.
        """
        lease_every = GATEWAY_TTL_S / 3
        presence_every = PRESENCE_TTL_S / 3
        last_presence = time.monotonic()
        while True:
            await asyncio.sleep(lease_every)
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.ping()
                if time.monotonic() - last_presence >= presence_every - 0.5:
                    last_presence = time.monotonic()
                    self._queue(pipe)
                await pipe.execute()
                self.health.up("heartbeat")
            except Exception as exc:
                self.health.down("heartbeat", exc)

    async def answer(self, connection: Connection, frame: ClientFrame) -> None:
        user_id = frame.uuid("user_id")
        assert user_id is not None
        online = bool(await self.redis.exists(presence_key(user_id)))
        seen = await self.redis.get(last_seen_key(user_id))
        visible = await self.may_see_last_seen(connection.user_id, user_id)
        connection.push(
            {
                "type": "presence",
                "id": frame.request_id,
                "user_id": str(user_id),
                "online": online if visible else None,
                "last_seen": int(seen) if seen is not None and visible else None,
            }
        )

    async def may_see_last_seen(self, viewer: UUID, owner: UUID) -> bool:
        if viewer == owner:
            return True
        try:
            theirs = await run_in_threadpool(self.accounts.privacy_of, owner)
            mine = await run_in_threadpool(self.accounts.privacy_of, viewer)
        except DomainError:
            return False
        return bool(can_see_last_seen(mine, theirs))
