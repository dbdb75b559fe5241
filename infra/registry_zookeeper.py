"""The gateways' registry in ZooKeeper, through kazoo (the seed's service discovery).

Each gateway is an ephemeral sequential znode `<zookeeper_root>/gateways/gateway-NNNNNNNNNN`
whose data is its record (JSON: id, URL, connections). ZooKeeper deletes it when the
gateway's session ends: at once on `leave` or a clean close, within
`zookeeper_session_timeout_ms` when the process dies without closing. If the session
expired while the gateway lived on (ZooKeeper restarted, a long pause), the next
`report` finds its znode gone and creates a new one.

kazoo is synchronous (its own threads); each call runs in a worker thread so the
gateway's event loop never waits on ZooKeeper. The watch (`ZooKeeperWatch`) is kazoo's
`ChildrenWatch` on the folder and a `DataWatch` on each gateway's znode: ZooKeeper tells
it of a gateway joining, leaving or reporting its load as it happens, and it hands the
new list to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from infra.registry import GatewayRecord, GatewayRegistry, GatewayWatch
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

    def watch(self, refresh_s: float) -> GatewayWatch:
        return ZooKeeperWatch(self)

    async def close(self) -> None:
        def close() -> None:
            self.client.stop()
            self.client.close()

        await asyncio.to_thread(close)


class ZooKeeperWatch(GatewayWatch):
    """The live gateways from ZooKeeper's watches (called on kazoo's thread, handed over
    to the event loop)."""

    def __init__(self, registry: ZooKeeperRegistry) -> None:
        super().__init__()
        self.registry = registry
        self._by_znode: dict[str, GatewayRecord] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._begin)
        self._replace(self._snapshot())

    def _begin(self) -> None:
        client = self.registry._connected()
        client.ensure_path(self.registry.folder)
        ChildrenWatch(client, self.registry.folder, self._children)

    def _children(self, children: list[str]) -> bool | None:
        if self._closed:
            return False  # kazoo: stop watching
        with self._lock:
            for gone in set(self._by_znode) - set(children):
                del self._by_znode[gone]
            new = [child for child in children if child not in self._watched]
            self._watched.update(new)
        for child in new:
            DataWatch(self.registry.client, f"{self.registry.folder}/{child}", self._data(child))
        self._hand_over()
        return None

    def _data(self, child: str) -> Any:
        def changed(data: bytes | None, stat: Any) -> bool | None:
            if self._closed:
                return False
            with self._lock:
                record = GatewayRecord.decode(data) if data is not None else None
                if record is None:
                    self._by_znode.pop(child, None)
                else:
                    self._by_znode[child] = record
                if data is None:  # the znode is gone: so is this watch
                    self._watched.discard(child)
            self._hand_over()
            return False if data is None else None

        return changed

    def _snapshot(self) -> dict[str, GatewayRecord]:
        with self._lock:
            return {r.gateway_id: r for r in self._by_znode.values()}

    def _hand_over(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._replace, self._snapshot())

    async def close(self) -> None:
        self._closed = True
