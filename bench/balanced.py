"""Parley privately with several gateways behind HAProxy (`parley bench connections
--gateways N --balancers M`).

The processor, relay and workers as in `bench.stack`, N gateways (`commands-1`…) on free
ports, M HAProxy processes sharing one front port, and `parley serve balancer` filling
the slots of all of them from the registry (Redis, the run's own database).

Why several HAProxy processes: a process here may open at most `ulimit -Hn` files
(20,000, and not raised even for root in this sandbox), and HAProxy holds two a
connection (client and gateway side): one process carries at most ~9,950 connections.
HAProxy binds its port with SO_REUSEPORT, so M processes listen on the same address and
the kernel hands each new connection to one of them (by a hash of its addresses), which
is how one balancer address takes 30,000+ connections here. The same holds for the
clients: one loopback source address has 28,232 ephemeral ports towards one address
(`ip_local_port_range` 32768-60999), so the load generators connect from 127.0.0.1,
127.0.0.2… (`--sources`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.stack import Services, private_resources, started
from infra.balancer import RuntimeApi, servers_state
from infra.settings import Settings
from infra.stack.haproxy import HAProxy

SYNC_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Balanced:
    """The private services, the gateways' names and the HAProxy processes in front."""

    services: Services
    gateways: list[str]
    balancers: list[HAProxy]

    def balancer_pids(self) -> list[int]:
        return [pid for front in self.balancers if (pid := front.pid()) is not None]

    def balancer_connections(self) -> dict[str, int]:
        """Connections each HAProxy process holds now (its `show info` CurrConns)."""
        held = {}
        for k, front in enumerate(self.balancers, 1):
            info = front.api.run(["show info"])
            current = [line for line in info.splitlines() if line.startswith("CurrConns:")]
            held[f"haproxy-{k}"] = int(current[0].split()[1]) if current else -1
        return held


class SharingHAProxy(HAProxy):
    """A second (third…) HAProxy process on the first one's port: the port is taken, on
    purpose, so it is not checked free before the start."""

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.commands_host, 0


@contextmanager
def balanced_services(
    settings: Settings, workdir: Path, gateways: int, balancers: int
) -> Iterator[Balanced]:
    """The services with `gateways` gateways behind `balancers` HAProxy processes."""
    names = [f"commands-{i}" for i in range(1, gateways + 1)]
    with (
        private_resources(settings) as bench,
        started(bench, workdir / "services", ["processor", "relay", "workers", *names]) as svc,
    ):
        fronts = [
            (HAProxy if k == 1 else SharingHAProxy)(
                bench.replace(state_dir=str(workdir / f"haproxy-{k}"))
            )
            for k in range(1, balancers + 1)
        ]
        try:
            for front in fronts:
                front.up()
            apis = ",".join(front.api.path for front in fronts)
            sync_env = {"PARLEY_BALANCER_API": apis, "PARLEY_REGISTRY_REPORT_S": "1"}
            with started(bench, workdir / "sync", ["balancer"], sync_env):
                _until_routed(fronts, gateways)
                yield Balanced(svc, names, fronts)
        finally:
            for front in fronts:
                front.down()


def _until_routed(fronts: list[HAProxy], gateways: int) -> None:
    """Every HAProxy process has every gateway in a slot and has seen it up."""
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while True:
        up = [_up(front.api) for front in fronts]
        if all(count >= gateways for count in up):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateways up per HAProxy process: {up}, wanted {gateways}")
        time.sleep(0.2)


def _up(api: RuntimeApi) -> int:
    return sum(
        1
        for row in servers_state(api).values()
        if row["srv_op_state"] == "2" and not int(row["srv_admin_state"]) & 0x1B
    )
