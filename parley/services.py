"""Parley's own services run in the background for `make up`: `parley up` / `parley down`.

Each is `parley serve NAME` as a detached process with its pid file and log under
`.state/services/`, started in dependency order and checked like the stack's services:
the HTTP ones answer `/healthz`, the others have logged that they are ready.
"""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

from infra.settings import Settings
from infra.stack.process import say
from infra.stack.service import LocalService

# name -> what its log says once it is ready (None: an HTTP service with /healthz)
READY = {
    "processor": r"event=partitions_assigned partitions=\[",
    "relay": r"event=relay_(active|standby)",
    "workers": r"Worker ready",
    "notifier": r"event=notifier_(ready|standby)",
    "commands": None,
    "queries": None,
}


class ParleyService(LocalService):
    """One of Parley's processes, supervised like a stack service."""

    port_variable = ""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        super().__init__(settings)
        self.home = Path(settings.state_dir) / "services"
        self.log = self.home / f"{name}.log"
        self.pidfile = self.home / f"{name}.pid"
        self._log_start = 0
        self.port_variable = f"PARLEY_{name.upper()}_PORT"

    @property
    def managed(self) -> bool:
        return True

    @property
    def host_port(self) -> tuple[str, int]:
        if self.name == "commands":
            return self.settings.commands_host, self.settings.commands_port
        if self.name == "queries":
            return (
                getattr(self.settings, "queries_host", "127.0.0.1"),
                int(getattr(self.settings, "queries_port", 18081)),
            )
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
        return [sys.executable, "-m", "parley.cli", "serve", self.name]

    def healthy(self) -> bool:
        marker = READY[self.name]
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
    names = [n for n in READY if n != "queries" or _has_queries()]
    return [ParleyService(settings, name) for name in names]


def _has_queries() -> bool:
    try:
        import queries.service  # noqa: F401
    except ImportError:
        return False
    return True


def services_up(settings: Settings) -> None:
    from infra.topics import ensure_topics
    from projections.schema import migrate

    for name, outcome in ensure_topics(settings):
        say(f"topic {name}: {outcome}")
    say("read model: migrating")
    migrate(settings)
    for service in parley_services(settings):
        service.up()


def services_down(settings: Settings) -> None:
    for service in reversed(parley_services(settings)):
        service.down()
