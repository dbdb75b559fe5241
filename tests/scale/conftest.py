"""Parley scaled out on one machine: three gateways behind HAProxy, two processors.

The processes are this fixture's own (`tests.services.running`, HAProxy and ZooKeeper by
their pid files in a temporary state folder), so stopping or killing one never touches
anything else running on the machine. Clients reach the gateways through the balancer's
address, or directly at the address the assignment endpoint names. Every test here runs
twice: with the Redis registry of gateways and with ZooKeeper's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.settings import Settings
from infra.stack.haproxy import HAProxy
from infra.stack.zookeeper import ZooKeeper
from tests.fullstack import free_port
from tests.gateway.conftest import GENEROUS_LIMITS, Stack
from tests.services import Service, running

GATEWAYS = 3
PROCESSORS = 2
BALANCER = {"balancer_check_ms": 500, "balancer_fall": 2, "gateway_drain_notice_s": 2.0}
REGISTRY_REPORT_S = 0.5
ZOOKEEPER_SESSION_MS = 4_000


@dataclass
class Balanced(Stack):
    """The stack, whose `base` is the balancer, with its gateways and the balancer."""

    gateways: list[Service]
    balancer: HAProxy
    env: dict[str, str]
    logs: Path

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
        "PARLEY_LOG_LEVEL": "debug",  # each command's trail of ids (test_trail.py)
    }
    # The services' state folder (their token secret) is the run's; HAProxy's is ours.
    settings = topics.replace(commands_port=front_port, registry=registry, **BALANCER)
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
    with ExitStack() as stack:
        back = [
            stack.enter_context(running("processor", logs / f"processor-{i}.log", env))
            for i in range(1, PROCESSORS + 1)
        ]
        relay = stack.enter_context(running("relay", logs / "relay.log", env))
        workers = stack.enter_context(running("workers", logs / "workers.log", env))
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
        balancer = HAProxy(settings.replace(state_dir=str(logs)), ports)
        balancer.up()
        stack.callback(balancer.down)
        services = {"relay": relay, "workers": workers}
        services.update({f"processor-{i}": p for i, p in enumerate(back, 1)})
        services.update({f"commands-{i}": g for i, g in enumerate(gateways, 1)})
        yield Balanced(settings, base, services, gateways, balancer, env, logs)
