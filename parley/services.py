"""Parley's own services run in the background for `make up`: `parley up` / `parley down`.

Each is `parley serve NAME` as a detached process with its pid file and log under
`.state/services/`, started in dependency order and checked like the stack's services:
the HTTP ones answer `/healthz`, the others have logged that they are ready.

`PARLEY_GATEWAYS`, `PARLEY_PROCESSORS` and `PARLEY_WORKERS` ask for several of a kind:
they are then named `commands-1`, `commands-2`… (each its own log and pid file);
processors and workers share the partitions through their consumer group, and the
gateways (the commands service) listen on `gateway_base_port + i` behind HAProxy, which
takes the commands port (`infra/stack/haproxy.py`, docs/scaling.md) and learns of them
from the registry through `parley serve balancer` (`infra/balancer.py`), started after
it. The services without HTTP serve `/metrics` on a port of their own
(`PARLEY_PROCESSOR_METRICS_PORT`…, instance i on that port + i), which `parley stack
status` shows as their address.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.request
from pathlib import Path

from infra.metrics_http import metrics_port_of
from infra.settings import Settings
from infra.stack.haproxy import HAProxy, gateway_ports
from infra.stack.process import say
from infra.stack.service import LocalService, Status

# name -> what its log says once it is ready (None: an HTTP service with /healthz)
READY = {
    "processor": r"event=partitions_assigned partitions=\[",
    "relay": r"event=relay_(active|standby)",
    "workers": r"Worker ready",
    "commands": None,
    "queries": None,
    "notifier": r"event=notifier_(ready|standby)",
    "balancer": r"event=balancer_synced gateways=[1-9]",
}


class ParleyService(LocalService):
    """One of Parley's processes, supervised like a stack service."""

    port_variable = ""

    def __init__(self, settings: Settings, kind: str, index: int = 0, port: int = 0) -> None:
        """`kind` as in `parley serve KIND`; `index` from 1 when there are several of it
        (0: the only one, named as its kind); `port` a gateway's own behind the balancer."""
        self.kind = kind
        self.name = f"{kind}-{index}" if index else kind
        self.port = port
        super().__init__(settings)
        self.home = Path(settings.state_dir) / "services"
        self.log = self.home / f"{self.name}.log"
        self.pidfile = self.home / f"{self.name}.pid"
        self._log_start = 0
        self.index = index
        if port:
            self.port_variable = "PARLEY_GATEWAY_BASE_PORT"
        elif kind in ("commands", "queries"):
            self.port_variable = f"PARLEY_{kind.upper()}_PORT"
        else:
            self.port_variable = f"PARLEY_{kind.upper()}_METRICS_PORT"

    @property
    def metrics_port(self) -> int:
        """Where a service without HTTP serves `/metrics` (0: nowhere)."""
        base = metrics_port_of(self.settings, self.kind)
        return base + self.index if base else 0

    @property
    def managed(self) -> bool:
        return True

    @property
    def host_port(self) -> tuple[str, int]:
        if self.kind == "commands":
            return self.settings.commands_host, self.port or self.settings.commands_port
        if self.kind == "queries":
            return (
                getattr(self.settings, "queries_host", "127.0.0.1"),
                int(getattr(self.settings, "queries_port", 18081)),
            )
        if self.metrics_port:
            return self.settings.metrics_host, self.metrics_port
        return "background", 0

    @property
    def address(self) -> str:
        host, port = self.host_port
        return f"{host}:{port}" if port else "background"

    def install(self) -> None:
        return None

    def prepare(self) -> None:
        self._log_start = self.log.stat().st_size if self.log.exists() else 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "parley.cli", "serve", self.kind]

    def environment(self) -> dict[str, str] | None:
        if self.index and self.metrics_port:  # one of several: its own metrics port
            return {**os.environ, self.port_variable: str(self.metrics_port)}
        if not self.port:
            return None
        # A gateway behind the balancer: its own port; browsers still come from the
        # balancer's address (the commands port), so that is the origin it accepts.
        # Clients' addresses come in HAProxy's X-Forwarded-For: believed from it alone.
        return {
            **os.environ,
            "PARLEY_COMMANDS_PORT": str(self.port),
            "PARLEY_WS_ALLOWED_ORIGINS": ",".join(self.settings.allowed_origins),
            "PARLEY_TRUSTED_PROXIES": self.settings.trusted_proxies or self.settings.commands_host,
        }

    def healthy(self) -> bool:
        marker = READY[self.kind]
        if marker is None:
            host, port = self.host_port
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False
        try:
            with self.log.open("rb") as log:
                log.seek(self._log_start)
                return re.search(marker.encode(), log.read()) is not None
        except OSError:
            return False


def parley_services(settings: Settings) -> list[ParleyService]:
    """Every instance of every service, in start order."""
    counts = {"processor": settings.processors, "workers": settings.workers}
    instances: list[ParleyService] = []
    for kind in READY:
        if kind == "queries" and not _has_queries():
            continue
        if kind == "relay" and settings.events_publisher == "processor":
            continue  # the processor publishes what it stores (docs/log.md)
        if kind == "balancer":  # HAProxy's slots from the registry: after the gateways
            if settings.gateways > 1:
                instances.append(ParleyService(settings, kind))
            continue
        if kind == "commands" and settings.gateways > 1:
            for i, port in enumerate(gateway_ports(settings), 1):
                instances.append(ParleyService(settings, kind, i, port))
            continue
        count = counts.get(kind, 1)
        if count > 1:
            instances.extend(ParleyService(settings, kind, i) for i in range(1, count + 1))
        else:
            instances.append(ParleyService(settings, kind))
    return instances


def balancer(settings: Settings) -> HAProxy | None:
    """HAProxy in front of the gateways, when there is more than one."""
    return HAProxy(settings) if settings.gateways > 1 else None


def _strays(settings: Settings, wanted: list[ParleyService]) -> list[ParleyService]:
    """Instances still running from an earlier `parley up` with other counts."""
    names = {s.name for s in wanted}
    found: list[ParleyService] = []
    for pidfile in sorted((Path(settings.state_dir) / "services").glob("*.pid")):
        kind, _, index = pidfile.stem.partition("-")
        if pidfile.stem in names or kind not in READY or (index and not index.isdigit()):
            continue
        found.append(ParleyService(settings, kind, int(index or 0)))
    return found


def services_status(settings: Settings) -> list[Status]:
    """Every instance that should run or still runs, and the balancer if any."""
    wanted = parley_services(settings)
    shown: list[LocalService] = [*wanted, *_strays(settings, wanted)]
    front = balancer(settings) or HAProxy(settings)
    if front.pid() is not None or settings.gateways > 1:
        shown.append(front)
    return [service.status() for service in shown]


def _has_queries() -> bool:
    try:
        import queries.service  # noqa: F401
    except ImportError:
        return False
    return True


def services_up(settings: Settings) -> None:
    from infra.topics import ensure_topics
    from projections.schema import migrate

    for report in ensure_topics(settings):
        say(f"topic {report.name}: {report}")
    say("read model: migrating")
    migrate(settings)
    wanted = parley_services(settings)
    for stray in _strays(settings, wanted):
        say(f"{stray.name}: not in the counts asked for now")
        stray.down()
    front = balancer(settings)
    running = HAProxy(settings)
    if running.pid() is not None and (front is None or not front.configured_as_now()):
        running.down()  # no longer wanted, or configured otherwise
    for service in wanted:
        if service.kind == "balancer" and front is not None:
            front.up()  # HAProxy first, then what fills its slots
        service.up()


def services_down(settings: Settings) -> None:
    # The balancer last: a gateway drains (SIGTERM) quickly while it still checks them.
    wanted = parley_services(settings)
    for service in reversed([*wanted, *_strays(settings, wanted)]):
        service.down()
    front = HAProxy(settings)
    if front.pid() is not None:
        front.down()
