"""The registry of gateways, both implementations against their real servers.

The same behaviour from `RedisRegistry` and `ZooKeeperRegistry`: a gateway that joins is
listed with its URL and load, a report changes its load, one that leaves is gone; and a
process that dies without leaving (SIGKILL) is gone within its lease or session timeout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from infra.registry import GatewayRecord, least_loaded, listed_after_death_s, open_registry
from infra.settings import Settings
from tests.scale.conftest import REGISTRY_LEASE_S
from tests.services import ROOT


@pytest.fixture(params=["redis", "zookeeper"])
def registry_settings(request: pytest.FixtureRequest, topics: Settings) -> Iterator[Settings]:
    if request.param == "zookeeper":
        yield request.getfixturevalue("zookeeper")
    else:
        yield topics.replace(registry="redis", registry_lease_s=REGISTRY_LEASE_S)


def _ids(records: list[GatewayRecord]) -> set[str]:
    return {r.gateway_id for r in records}


def test_join_report_leave(registry_settings: Settings) -> None:
    async def scenario() -> None:
        one, two, reader = (open_registry(registry_settings) for _ in range(3))
        try:
            await one.join(GatewayRecord("gw-one", "ws://127.0.0.1:1/ws", 0))
            await two.join(GatewayRecord("gw-two", "ws://127.0.0.1:2/ws", 0))
            await one.report(5)
            live = {r.gateway_id: r for r in await reader.live()}
            assert {"gw-one", "gw-two"} <= set(live)
            assert live["gw-one"] == GatewayRecord("gw-one", "ws://127.0.0.1:1/ws", 5)
            chosen = least_loaded([live["gw-one"], live["gw-two"]])
            assert chosen is not None and chosen.gateway_id == "gw-two"
            await two.leave()
            assert "gw-two" not in _ids(await reader.live())
            assert "gw-one" in _ids(await reader.live())
            await one.leave()
            assert "gw-one" not in _ids(await reader.live())
        finally:
            for registry in (one, two, reader):
                await registry.close()

    asyncio.run(scenario())


JOIN_AND_HANG = """
import asyncio, sys
from infra.registry import GatewayRecord, open_registry
from infra.settings import load_settings

async def main():
    registry = open_registry(load_settings())
    await registry.join(GatewayRecord("gw-doomed", "ws://127.0.0.1:3/ws", 0))
    print("joined", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_killed_process_leaves_the_registry_within_its_timeout(
    registry_settings: Settings,
) -> None:
    s = registry_settings
    env = {
        "PARLEY_REGISTRY": s.registry,
        "PARLEY_REDIS_URL": s.redis_url,
        "PARLEY_REGISTRY_LEASE_S": str(s.registry_lease_s),
        "PARLEY_ZOOKEEPER_HOSTS": s.zookeeper_hosts,
        "PARLEY_ZOOKEEPER_ROOT": s.zookeeper_root,
        "PARLEY_ZOOKEEPER_SESSION_TIMEOUT_MS": str(s.zookeeper_session_timeout_ms),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", JOIN_AND_HANG],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"joined"

        async def scenario() -> float:
            reader = open_registry(s)
            try:
                assert "gw-doomed" in _ids(await reader.live())
                child.kill()
                child.wait()
                killed = time.monotonic()
                timeout = listed_after_death_s(s)
                while "gw-doomed" in _ids(await reader.live()):
                    assert time.monotonic() - killed < timeout + 5, "still listed"
                    await asyncio.sleep(0.05)
                return time.monotonic() - killed
            finally:
                await reader.close()

        gone = asyncio.run(scenario())
        print(f"registry={s.registry} gone {gone:.2f}s after SIGKILL")
    finally:
        child.kill()
        child.wait()


def test_the_watch_follows_joins_reports_and_leaves(registry_settings: Settings) -> None:
    """The cache routing reads (assignment, HAProxy's slots) sees each change without a
    request to the registry: ZooKeeper's watches tell it, Redis is listed every
    `refresh_s`."""
    refresh_s = 0.2

    async def scenario() -> None:
        one, two, reader = (open_registry(registry_settings) for _ in range(3))
        watch = reader.watch(refresh_s)
        changes = 0

        def changed() -> None:
            nonlocal changes
            changes += 1

        watch.on_change = changed

        async def until(check: Callable[[dict[str, GatewayRecord]], bool], what: str) -> None:
            deadline = time.monotonic() + 10 * refresh_s + 5
            while not check({r.gateway_id: r for r in watch.gateways()}):
                assert time.monotonic() < deadline, f"the watch never saw {what}"
                await asyncio.sleep(0.02)

        try:
            await one.join(GatewayRecord("gw-w1", "ws://127.0.0.1:1/ws", 0))
            await watch.start()
            await until(lambda live: "gw-w1" in live, "the first gateway")
            await two.join(GatewayRecord("gw-w2", "ws://127.0.0.1:2/ws", 0))
            await until(lambda live: "gw-w2" in live, "a gateway join")
            await one.report(7)
            await until(lambda live: live["gw-w1"].connections == 7, "a report of load")
            await two.leave()
            await until(lambda live: "gw-w2" not in live, "a gateway leave")
            assert changes >= 4
        finally:
            await watch.close()
            for registry in (one, two, reader):
                await registry.close()

    asyncio.run(scenario())
