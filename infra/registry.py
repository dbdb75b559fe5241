"""The registry of live gateways: which are up, where to reach them, how loaded they are.

One small interface, `GatewayRegistry`, with two implementations chosen by
`PARLEY_REGISTRY` (`open_registry`):

- `redis` (the default): a lease key per gateway, `parley:gateway:<id>`, holding its
  record as JSON with a TTL of `registry_lease_s` (15 s), rewritten at every `report`. A
  gateway that dies is gone when its key expires.
- `zookeeper` (the seed's choice, `infra.registry_zookeeper`): an ephemeral sequential
  znode per gateway under `<zookeeper_root>/gateways`, its data the same JSON. A gateway
  that dies is gone when its session expires (`zookeeper_session_timeout_ms`).

Whatever routes to gateways reads them from a `GatewayWatch` (`registry.watch()`), a
cache of the live ones kept current in the background, not from the registry per
request: in ZooKeeper by watches on the folder and on each znode (a change arrives as it
happens), in Redis by listing the leases every `registry_report_s` (as often as the
gateways report). The assignment endpoint and HAProxy's slots (`infra.balancer`) read it.

The registry holds service instances only. Which gateway a *user* is connected to
(presence) stays in Redis (`infra.routing`), whatever the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from infra.routing import gateway_key
from infra.settings import Settings

log = logging.getLogger("parley.registry")

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
    def watch(self, refresh_s: float) -> GatewayWatch:
        """A cache of the live gateways on this registry's connection, not yet started;
        `refresh_s`: how often a registry without watches (Redis) lists them again."""

    @abstractmethod
    async def close(self) -> None: ...


class GatewayWatch(ABC):
    """The live gateways, kept current in the background (`start` … `close`).

    `gateways()` answers from memory. Until the first listing it raises
    `RegistryUnavailable`; afterwards, if the registry stops answering, it keeps the
    last list it had (a gateway that died meanwhile is still refused by its socket or
    its balancer's health check). `on_change`, if set, is called on the event loop
    after each change of the list or of a gateway's record."""

    def __init__(self) -> None:
        self.records: dict[str, GatewayRecord] | None = None
        self.on_change: Callable[[], None] | None = None

    def gateways(self) -> list[GatewayRecord]:
        if self.records is None:
            raise RegistryUnavailable("the registry of gateways has not answered yet")
        return list(self.records.values())

    def _replace(self, records: dict[str, GatewayRecord]) -> None:
        if records != self.records:
            self.records = records
            if self.on_change is not None:
                self.on_change()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class RegistryUnavailable(Exception):
    """The registry of gateways has not been read yet."""


def listed_after_death_s(settings: Settings) -> float:
    """How long a gateway that died without leaving may stay listed: its lease's TTL in
    Redis, its session timeout in ZooKeeper."""
    if settings.registry == "zookeeper":
        return settings.zookeeper_session_timeout_ms / 1000
    return settings.registry_lease_s


def least_loaded(records: list[GatewayRecord]) -> GatewayRecord | None:
    """The gateway with the fewest connections (ties broken at random), or None."""
    if not records:
        return None
    fewest = min(r.connections for r in records)
    return random.choice([r for r in records if r.connections == fewest])


class RedisRegistry(GatewayRegistry):
    """Gateways as lease keys in Redis, renewed by `report`; a lease lasts `lease_s`."""

    SCAN_COUNT = 1000

    def __init__(self, redis: Redis, lease_s: float) -> None:
        self.redis = redis
        self.lease_ms = round(lease_s * 1000)
        self.record: GatewayRecord | None = None

    async def join(self, record: GatewayRecord) -> None:
        self.record = record
        await self.redis.set(gateway_key(record.gateway_id), record.encode(), px=self.lease_ms)

    async def report(self, connections: int) -> None:
        if self.record is None:
            return
        self.record = GatewayRecord(self.record.gateway_id, self.record.url, connections)
        await self.redis.set(
            gateway_key(self.record.gateway_id), self.record.encode(), px=self.lease_ms
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

    def watch(self, refresh_s: float) -> GatewayWatch:
        return PolledWatch(self, refresh_s)

    async def close(self) -> None:
        await self.redis.aclose()


class PolledWatch(GatewayWatch):
    """Redis leases have no watch here: listed every `refresh_s` (SCAN + MGET), which is
    as fresh as the gateways' own reports of their load."""

    def __init__(self, registry: GatewayRegistry, refresh_s: float) -> None:
        super().__init__()
        self.registry = registry
        self.refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # a registry away: the loop retries
            await self._list()
        self._task = asyncio.create_task(self._follow(), name="gateway-watch")

    async def _list(self) -> None:
        self._replace({r.gateway_id: r for r in await self.registry.live()})

    async def _follow(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self._list()
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("event=registry_watch_failed error=%s", type(exc).__name__)
                failing = True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def open_registry(settings: Settings) -> GatewayRegistry:
    """The registry `PARLEY_REGISTRY` names, not yet connected (its first call connects)."""
    if settings.registry == "redis":
        return RedisRegistry(Redis.from_url(settings.redis_url), settings.registry_lease_s)
    if settings.registry == "zookeeper":
        from infra.registry_zookeeper import ZooKeeperRegistry

        return ZooKeeperRegistry(settings)
    raise ValueError(f"PARLEY_REGISTRY={settings.registry!r} is not one of {', '.join(REGISTRIES)}")
