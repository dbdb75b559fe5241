"""Parley scaled out on one machine: three gateways behind HAProxy, two processors.

The processes are this fixture's own (`tests.services.running`, HAProxy by its pid file
in a temporary state folder), so stopping or killing one never touches anything else
running on the machine. Clients reach the gateways only through the balancer's address.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.settings import Settings
from infra.stack.haproxy import HAProxy
from tests.fullstack import free_port
from tests.gateway.conftest import GENEROUS_LIMITS, Stack
from tests.services import Service, running

GATEWAYS = 3
PROCESSORS = 2
BALANCER = {"balancer_check_ms": 500, "balancer_fall": 2, "gateway_drain_notice_s": 2.0}


@dataclass
class Balanced(Stack):
    """The stack, whose `base` is the balancer, with its gateways and the balancer."""

    gateways: list[Service]
    balancer: HAProxy

    def gateway_of(self, gateway_id: str) -> Service:
        """The gateway process that said it runs as `gateway_id` (hello's gateway_id)."""
        for gateway in self.gateways:
            if f"event=gateway_started gateway={gateway_id}" in gateway.text():
                return gateway
        raise AssertionError(f"no gateway logged {gateway_id}")

    def balancer_log(self) -> str:
        return self.balancer.log.read_text(errors="replace") if self.balancer.log.exists() else ""


@pytest.fixture(scope="package")
def balanced(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    logs: Path = tmp_path_factory.mktemp("balanced")
    front_port = free_port()
    ports = [free_port() for _ in range(GATEWAYS)]
    base = f"http://127.0.0.1:{front_port}"
    env = {
        **GENEROUS_LIMITS,
        "PARLEY_WS_ALLOWED_ORIGINS": base,
        "PARLEY_BALANCER_FALL": str(BALANCER["balancer_fall"]),
        "PARLEY_GATEWAY_DRAIN_NOTICE_S": str(BALANCER["gateway_drain_notice_s"]),
    }
    # The services' state folder (their token secret) is the run's; HAProxy's is ours.
    settings = topics.replace(commands_port=front_port, **BALANCER)
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
        yield Balanced(settings, base, services, gateways, balancer)
