"""The gateways' registry in ZooKeeper, through kazoo (the seed's service discovery).

Each gateway is an ephemeral sequential znode `<zookeeper_root>/gateways/gateway-NNNNNNNNNN`
whose data is its record (JSON: id, URL, connections). ZooKeeper deletes it when the
gateway's session ends: at once on `leave` or a clean close, within
`zookeeper_session_timeout_ms` when the process dies without closing. If the session
expired while the gateway lived on (ZooKeeper restarted, a long pause), the next
`report` finds its znode gone and creates a new one.

kazoo is synchronous (its own threads); each call runs in a worker thread so the
gateway's event loop never waits on ZooKeeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from infra.registry import GatewayRecord, GatewayRegistry
from infra.settings import Settings

log = logging.getLogger("parley.registry")


class ZooKeeperRegistry(GatewayRegistry):
    """Gateways as ephemeral sequential znodes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.zookeeper_root.rstrip("/") + "/gateways"
        self.client = KazooClient(
            hosts=settings.zookeeper_hosts,
            timeout=settings.zookeeper_session_timeout_ms / 1000,
        )
        self.record: GatewayRecord | None = None
        self.path: str | None = None
        self._lock = threading.Lock()  # one caller at a time starts the client

    def _connected(self) -> KazooClient:
        with self._lock:
            if not self.client.connected:
                self.client.start(timeout=self.settings.zookeeper_session_timeout_ms / 1000)
        return self.client

    def _create(self, record: GatewayRecord) -> None:
        client = self._connected()
        self.path = client.create(
            self.folder + "/gateway-",
            record.encode(),
            ephemeral=True,
            sequence=True,
            makepath=True,
        )
        log.info("event=registry_joined gateway=%s znode=%s", record.gateway_id, self.path)

    def _report(self, connections: int) -> None:
        if self.record is None:
            return
        self.record = GatewayRecord(self.record.gateway_id, self.record.url, connections)
        if self.path is not None:
            try:
                self._connected().set(self.path, self.record.encode())
                return
            except NoNodeError:
                log.warning("event=registry_znode_lost znode=%s", self.path)
        self._create(self.record)

    def _leave(self) -> None:
        path, self.path, self.record = self.path, None, None
        if path is not None:
            with contextlib.suppress(NoNodeError):
                self._connected().delete(path)

    def _live(self) -> list[GatewayRecord]:
        client = self._connected()
        try:
            children = client.get_children(self.folder)
        except NoNodeError:
            return []
        records = []
        for child in children:
            try:
                data, _ = client.get(f"{self.folder}/{child}")
            except NoNodeError:  # gone between the listing and the read
                continue
            record = GatewayRecord.decode(data)
            if record is not None:
                records.append(record)
        return records

    async def join(self, record: GatewayRecord) -> None:
        self.record = record
        await asyncio.to_thread(self._create, record)

    async def report(self, connections: int) -> None:
        await asyncio.to_thread(self._report, connections)

    async def leave(self) -> None:
        await asyncio.to_thread(self._leave)

    async def live(self) -> list[GatewayRecord]:
        return await asyncio.to_thread(self._live)

    async def close(self) -> None:
        def close() -> None:
            self.client.stop()
            self.client.close()

        await asyncio.to_thread(close)
