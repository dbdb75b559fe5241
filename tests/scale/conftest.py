"""Parley scaled out on one machine: three gateways behind HAProxy, two processors.

The processes are this fixture's own (`tests.services.running`, HAProxy and ZooKeeper by
their pid files in a temporary state folder), so stopping or killing one never touches
anything else running on the machine. HAProxy learns of the gateways from the registry
(`parley serve balancer` fills its slots). Clients reach the gateways through the
balancer's address, or directly at the address the assignment endpoint names. Every
service without HTTP serves `/metrics` on a port of its own (`metrics`). Every test here
runs twice: with the Redis registry of gateways and with ZooKeeper's.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.servers import free_port
from infra.balancer import servers_state
from infra.settings import Settings
from infra.stack.haproxy import HAProxy
from infra.stack.zookeeper import ZooKeeper
from tests.gateway.conftest import GENEROUS_LIMITS, Stack
from tests.services import Service, running, stop_together

GATEWAYS = 3
PROCESSORS = 2
BALANCER = {"balancer_check_ms": 500, "balancer_fall": 2, "gateway_drain_notice_s": 2.0}
REGISTRY_REPORT_S = 0.5
ZOOKEEPER_SESSION_MS = 4_000
REGISTRY_LEASE_S = ZOOKEEPER_SESSION_MS / 1000
"""A Redis lease as long as a ZooKeeper session here (8 reports), not the default 15 s:
the tests that wait for a killed gateway to leave wait that long."""


@dataclass
class Balanced(Stack):
    """The stack, whose `base` is the balancer, with its gateways and the balancer."""

    gateways: list[Service]
    balancer: HAProxy
    env: dict[str, str]
    logs: Path
    sync: Service  # `parley serve balancer`: HAProxy's slots from the registry
    metrics: dict[str, str]  # service name -> base URL of its /metrics

    def routed(self) -> set[str]:
        """The addresses HAProxy routes new connections to now: up, neither in
        maintenance nor draining (its runtime API's `show servers state`)."""
        return {
            f"{row['srv_addr']}:{row['srv_port']}"
            for row in servers_state(self.balancer.api).values()
            if row["srv_op_state"] == "2" and not int(row["srv_admin_state"]) & 0x1B
        }

    def until_all_routed(self, deadline_s: float = 30.0) -> None:
        """Wait until HAProxy routes to every gateway of the fixture that runs."""
        running = {
            f"127.0.0.1:{g.env['PARLEY_COMMANDS_PORT']}"
            for g in self.gateways
            if g.proc is not None and g.proc.poll() is None
        }
        deadline = time.monotonic() + deadline_s
        while not running <= self.routed():
            assert time.monotonic() < deadline, f"routed {self.routed()}, running {running}"
            time.sleep(0.05)

    def slot_of(self, gateway: Service) -> str:
        """The HAProxy server slot (gw1…) the gateway was last given."""
        port = gateway.env["PARLEY_COMMANDS_PORT"]
        found = re.findall(rf"slot=(gw\d+) address=127\.0\.0\.1:{port} ", self.sync.text())
        assert found, f"no slot for the gateway on port {port}"
        return str(found[-1])

    def gateway_of(self, gateway_id: str) -> Service:
        """The gateway process that said it runs as `gateway_id` (hello's gateway_id)."""
        for gateway in self.gateways:
            if f"event=gateway_started gateway={gateway_id}" in gateway.text():
                return gateway
        raise AssertionError(f"no gateway logged {gateway_id}")

    def balancer_log(self) -> str:
        return self.balancer.log.read_text(errors="replace") if self.balancer.log.exists() else ""


@pytest.fixture(scope="package")
def zookeeper(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A ZooKeeper server of this package's own (the stack's scripts, a temporary state
    folder, a free port); the settings that name it, with a root of this run's."""
    home = tmp_path_factory.mktemp("zookeeper")
    settings = topics.replace(
        registry="zookeeper",
        zookeeper_hosts=f"127.0.0.1:{free_port()}",
        zookeeper_root=f"/{topics.topic_prefix.strip('.') or 'parley'}",
        zookeeper_session_timeout_ms=ZOOKEEPER_SESSION_MS,
    )
    server = ZooKeeper(settings.replace(state_dir=str(home), managed_services="zookeeper"))
    server.up()
    try:
        yield settings
    finally:
        server.down()


@pytest.fixture(scope="package", params=["redis", "zookeeper"])
def balanced(
    topics: Settings, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Balanced]:
    registry: str = request.param
    logs: Path = tmp_path_factory.mktemp(f"balanced-{registry}")
    front_port = free_port()
    ports = [free_port() for _ in range(GATEWAYS)]
    base = f"http://127.0.0.1:{front_port}"
    env = {
        **GENEROUS_LIMITS,
        "PARLEY_WS_ALLOWED_ORIGINS": base,
        "PARLEY_BALANCER_FALL": str(BALANCER["balancer_fall"]),
        "PARLEY_GATEWAY_DRAIN_NOTICE_S": str(BALANCER["gateway_drain_notice_s"]),
        "PARLEY_REGISTRY": registry,
        "PARLEY_REGISTRY_REPORT_S": str(REGISTRY_REPORT_S),
        "PARLEY_REGISTRY_LEASE_S": str(REGISTRY_LEASE_S),
        "PARLEY_LOG_LEVEL": "debug",  # each command's trail of ids (test_trail.py)
    }
    # The services' state folder (their token secret) is the run's; HAProxy's is ours.
    settings = topics.replace(
        commands_port=front_port, registry=registry, registry_lease_s=REGISTRY_LEASE_S, **BALANCER
    )
    if registry == "zookeeper":
        zk: Settings = request.getfixturevalue("zookeeper")
        settings = settings.replace(
            zookeeper_hosts=zk.zookeeper_hosts,
            zookeeper_root=zk.zookeeper_root,
            zookeeper_session_timeout_ms=zk.zookeeper_session_timeout_ms,
        )
        env["PARLEY_ZOOKEEPER_HOSTS"] = zk.zookeeper_hosts
        env["PARLEY_ZOOKEEPER_ROOT"] = zk.zookeeper_root
        env["PARLEY_ZOOKEEPER_SESSION_TIMEOUT_MS"] = str(zk.zookeeper_session_timeout_ms)
    metrics_ports = {
        name: free_port()
        for name in ["relay", "workers", *(f"processor-{i}" for i in range(1, PROCESSORS + 1))]
    }
    metrics_urls = {name: f"http://127.0.0.1:{port}" for name, port in metrics_ports.items()}
    metrics_urls.update({f"commands-{i}": f"http://127.0.0.1:{p}" for i, p in enumerate(ports, 1)})

    def own(name: str) -> dict[str, str]:
        kind = name.split("-")[0]
        return {**env, f"PARLEY_{kind.upper()}_METRICS_PORT": str(metrics_ports[name])}

    with ExitStack() as stack:
        back = [
            stack.enter_context(
                running("processor", logs / f"processor-{i}.log", own(f"processor-{i}"))
            )
            for i in range(1, PROCESSORS + 1)
        ]
        relay = stack.enter_context(running("relay", logs / "relay.log", own("relay")))
        workers = stack.enter_context(running("workers", logs / "workers.log", own("workers")))
        gateways = [
            stack.enter_context(
                running(
                    "commands",
                    logs / f"commands-{i}.log",
                    {**env, "PARLEY_COMMANDS_PORT": str(port)},
                )
            )
            for i, port in enumerate(ports, 1)
        ]
        for processor in back:
            processor.wait_for_log(r"partitions_assigned partitions=\[\d", deadline_s=90)
        relay.wait_for_log(r"event=relay_active", deadline_s=90)
        workers.wait_for_log(r"Worker ready", deadline_s=90)
        for gateway in gateways:
            gateway.wait_for_log(r"event=commands_listening", deadline_s=90)
        balancer = HAProxy(settings.replace(state_dir=str(logs)))
        balancer.up()
        stack.callback(balancer.down)
        sync_env = {**env, "PARLEY_BALANCER_API": balancer.api.path}
        sync = stack.enter_context(running("balancer", logs / "balancer.log", sync_env))
        sync.wait_for_log(rf"event=balancer_synced gateways={GATEWAYS}", deadline_s=60)
        _until_answers(base + "/healthz")
        services = {"relay": relay, "workers": workers}
        services.update({f"processor-{i}": p for i, p in enumerate(back, 1)})
        services.update({f"commands-{i}": g for i, g in enumerate(gateways, 1)})
        balanced = Balanced(
            settings, base, services, gateways, balancer, env, logs, sync, metrics_urls
        )
        balanced.until_all_routed()
        stack.callback(stop_together, [sync, *gateways, *back, relay, workers])
        yield balanced


def _until_answers(url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
