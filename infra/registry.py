"""The registry of live gateways: which are up, where to reach them, how loaded they are.

One small interface, `GatewayRegistry`, with two implementations chosen by
`PARLEY_REGISTRY` (`open_registry`):

- `redis` (the default): a lease key per gateway, `parley:gateway:<id>`, holding its
  record as JSON with a TTL of `GATEWAY_TTL_S`, rewritten at every `report`. A gateway
  that dies is gone when its key expires.
- `zookeeper` (the seed's choice, `infra.registry_zookeeper`): an ephemeral sequential
  znode per gateway under `<zookeeper_root>/gateways`, its data the same JSON. A gateway
  that dies is gone when its session expires (`zookeeper_session_timeout_ms`).

The registry holds service instances only. Which gateway a *user* is connected to
(presence) stays in Redis (`infra.routing`), whatever the registry.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from infra.routing import GATEWAY_TTL_S, gateway_key
from infra.settings import Settings

REGISTRIES = ("redis", "zookeeper")


@dataclass(frozen=True)
class GatewayRecord:
    """One live gateway as the registry holds it."""

    gateway_id: str
    url: str  # where clients connect: ws://host:port/ws
    connections: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {"gateway_id": self.gateway_id, "url": self.url, "connections": self.connections}
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> GatewayRecord | None:
        """The record in `raw`, or None if it is not one (a lease from an older gateway)."""
        try:
            value: Any = orjson.loads(raw)
            return cls(str(value["gateway_id"]), str(value["url"]), int(value["connections"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class GatewayRegistry(ABC):
    """Where a gateway announces itself and where the live ones are listed.

    A gateway calls `join` once it listens, `report` every `registry_report_s` with its
    connection count (which also keeps it alive, in the Redis registry), and `leave`
    when it drains or stops. `live` lists the gateways alive now."""

    @abstractmethod
    async def join(self, record: GatewayRecord) -> None: ...

    @abstractmethod
    async def report(self, connections: int) -> None: ...

    @abstractmethod
    async def leave(self) -> None: ...

    @abstractmethod
    async def live(self) -> list[GatewayRecord]: ...

    @abstractmethod
    async def close(self) -> None: ...


def listed_after_death_s(settings: Settings) -> float:
    """How long a gateway that died without leaving may stay listed: its lease's TTL in
    Redis, its session timeout in ZooKeeper."""
    if settings.registry == "zookeeper":
        return settings.zookeeper_session_timeout_ms / 1000
    return float(GATEWAY_TTL_S)


def least_loaded(records: list[GatewayRecord]) -> GatewayRecord | None:
    """The gateway with the fewest connections (ties broken at random), or None."""
    if not records:
        return None
    fewest = min(r.connections for r in records)
    return random.choice([r for r in records if r.connections == fewest])


class RedisRegistry(GatewayRegistry):
    """Gateways as lease keys in Redis, renewed by `report`."""

    SCAN_COUNT = 1000

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.record: GatewayRecord | None = None

    async def join(self, record: GatewayRecord) -> None:
        self.record = record
        await self.redis.set(gateway_key(record.gateway_id), record.encode(), ex=GATEWAY_TTL_S)

    async def report(self, connections: int) -> None:
        if self.record is None:
            return
        self.record = GatewayRecord(self.record.gateway_id, self.record.url, connections)
        await self.redis.set(
            gateway_key(self.record.gateway_id), self.record.encode(), ex=GATEWAY_TTL_S
        )

    async def leave(self) -> None:
        if self.record is not None:
            await self.redis.delete(gateway_key(self.record.gateway_id))
            self.record = None

    async def live(self) -> list[GatewayRecord]:
        keys = [
            key async for key in self.redis.scan_iter(match=gateway_key("*"), count=self.SCAN_COUNT)
        ]
        if not keys:
            return []
        values = await self.redis.mget(keys)
        records = (GatewayRecord.decode(v) for v in values if v is not None)
        return [r for r in records if r is not None]

    async def close(self) -> None:
        await self.redis.aclose()


def open_registry(settings: Settings) -> GatewayRegistry:
    """The registry `PARLEY_REGISTRY` names, not yet connected (its first call connects)."""
    if settings.registry == "redis":
        return RedisRegistry(Redis.from_url(settings.redis_url))
    if settings.registry == "zookeeper":
        from infra.registry_zookeeper import ZooKeeperRegistry

        return ZooKeeperRegistry(settings)
    raise ValueError(f"PARLEY_REGISTRY={settings.registry!r} is not one of {', '.join(REGISTRIES)}")
